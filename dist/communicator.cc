#include "dist/communicator.h"

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>
#endif

#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstdio>
#include <cstring>

namespace dptrain {

void check_mpi(int status, const char* call) {
  if (status == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(status, text, &length);
  throw MpiError(std::string(call) + " failed: " + std::string(text, static_cast<size_t>(length)));
}

Communicator::Communicator(int* argc, char*** argv) {
  // The gradient buckets go through MPI_Iallreduce, which Open MPI 4.1
  // runs in libnbc; left to choose, it takes a binomial tree, at 40% of
  // the blocking allreduce's bandwidth on 1-16 MB (dptrain-bench
  // allreduce), where a ring reaches 80-93%. A user's own setting wins.
  setenv("OMPI_MCA_coll_libnbc_iallreduce_algorithm", "1", 0);
  int provided = 0;
  // Only the main thread calls MPI; the loader thread never does.
  MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  MPI_Comm node;
  check_mpi(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node),
            "MPI_Comm_split_type");
  MPI_Comm_rank(node, &local_rank_);
  MPI_Comm_size(node, &local_size_);
  MPI_Comm_free(&node);
}

namespace {

void finalize() {
#ifdef __SANITIZE_ADDRESS__
  // The sanitizer build checks for leaks here, not at exit: MPI_Finalize
  // drops what Open MPI allocated without freeing it, and unloads the
  // components whose frames would then have no name to suppress them by.
  __lsan_do_leak_check();
#endif
  MPI_Finalize();
}

}  // namespace

Communicator::~Communicator() { finalize(); }

namespace {
int count_of(size_t count, int rank) {
  if (count > static_cast<size_t>(INT_MAX)) {
    throw MpiError("message too large for one MPI call (rank " + std::to_string(rank) + ")");
  }
  return static_cast<int>(count);
}
}  // namespace

void Communicator::wait(MPI_Request& request, const char* what) const {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  int done = 0;
  while (true) {
    check_mpi(MPI_Test(&request, &done, MPI_STATUS_IGNORE), "MPI_Test");
    if (done) return;
    if (std::chrono::duration<double>(Clock::now() - t0).count() > stall_timeout_s_) {
      throw MpiError("waited " + std::to_string(static_cast<int>(stall_timeout_s_)) + " s in " +
                     what + "; another rank has stalled, died or is out of step");
    }
  }
}

void Communicator::allreduce(void* data, size_t count, MPI_Datatype type, MPI_Op op) const {
  if (size_ == 1) return;
  MPI_Request request;
  check_mpi(MPI_Iallreduce(MPI_IN_PLACE, data, count_of(count, rank_), type, op, comm(), &request),
            "MPI_Iallreduce");
  wait(request, "an allreduce");
}

void Communicator::allreduce_sum(float* data, size_t count) const {
  allreduce(data, count, MPI_FLOAT, MPI_SUM);
}

void Communicator::allreduce_sum(double* data, size_t count) const {
  allreduce(data, count, MPI_DOUBLE, MPI_SUM);
}

void Communicator::allreduce_sum(int64_t* data, size_t count) const {
  allreduce(data, count, MPI_INT64_T, MPI_SUM);
}

void Communicator::allreduce_max(double* data, size_t count) const {
  allreduce(data, count, MPI_DOUBLE, MPI_MAX);
}

void Communicator::allreduce_min_max(int64_t* min, int64_t* max) const {
  allreduce(min, 1, MPI_INT64_T, MPI_MIN);
  allreduce(max, 1, MPI_INT64_T, MPI_MAX);
}

void Communicator::broadcast(void* data, size_t bytes, int root) const {
  if (size_ == 1) return;
  MPI_Request request;
  check_mpi(MPI_Ibcast(data, count_of(bytes, rank_), MPI_BYTE, root, comm(), &request),
            "MPI_Ibcast");
  wait(request, "a broadcast");
}

void Communicator::allgather(const void* local, size_t bytes, void* all) const {
  if (size_ == 1) {
    std::memcpy(all, local, bytes);
    return;
  }
  MPI_Request request;
  const int count = count_of(bytes, rank_);
  check_mpi(MPI_Iallgather(local, count, MPI_BYTE, all, count, MPI_BYTE, comm(), &request),
            "MPI_Iallgather");
  wait(request, "an allgather");
}

template <typename T>
std::vector<T> Communicator::concat(const std::vector<T>& local) const {
  if (size_ == 1) return local;
  std::vector<int64_t> lengths(static_cast<size_t>(size_));
  const auto mine = static_cast<int64_t>(local.size());
  allgather(&mine, sizeof mine, lengths.data());
  std::vector<int> counts, offsets;
  int64_t total = 0;
  for (int64_t n : lengths) {
    offsets.push_back(count_of(static_cast<size_t>(total) * sizeof(T), rank_));
    counts.push_back(count_of(static_cast<size_t>(n) * sizeof(T), rank_));
    total += n;
  }
  std::vector<T> all(static_cast<size_t>(total));
  MPI_Request request;
  check_mpi(MPI_Iallgatherv(local.data(), counts[static_cast<size_t>(rank_)], MPI_BYTE, all.data(),
                            counts.data(), offsets.data(), MPI_BYTE, comm(), &request),
            "MPI_Iallgatherv");
  wait(request, "an allgather");
  return all;
}

std::vector<float> Communicator::allgather_concat(const std::vector<float>& local) const {
  return concat(local);
}

std::vector<int32_t> Communicator::allgather_concat(const std::vector<int32_t>& local) const {
  return concat(local);
}

MPI_Request Communicator::start_allreduce_or(unsigned* data) const {
  MPI_Request request = MPI_REQUEST_NULL;
  if (size_ == 1) return request;
  check_mpi(MPI_Iallreduce(MPI_IN_PLACE, data, 1, MPI_UNSIGNED, MPI_BOR, comm(), &request),
            "MPI_Iallreduce");
  return request;
}

void Communicator::barrier() const {
  if (size_ == 1) return;
  MPI_Request request;
  check_mpi(MPI_Ibarrier(comm(), &request), "MPI_Ibarrier");
  wait(request, "a barrier");
}

void Communicator::abort(const std::string& message, int code) const {
  std::fprintf(stderr, "%s\n", message.c_str());
  std::fflush(stderr);
  if (size_ > 1) MPI_Abort(MPI_COMM_WORLD, code);
  finalize();
  std::exit(code);
}

}  // namespace dptrain
