#include "dist/communicator.h"

#include <climits>
#include <cstdio>

namespace dptrain {

void check_mpi(int status, const char* call, int rank) {
  if (status == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(status, text, &length);
  throw MpiError("rank " + std::to_string(rank) + ": " + call + " failed: " +
                 std::string(text, static_cast<size_t>(length)));
}

Communicator::Communicator(int* argc, char*** argv) {
  int provided = 0;
  // Only the main thread calls MPI; the loader thread never does.
  MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  MPI_Comm node;
  check_mpi(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node),
            "MPI_Comm_split_type", rank_);
  MPI_Comm_rank(node, &local_rank_);
  MPI_Comm_size(node, &local_size_);
  MPI_Comm_free(&node);
}

Communicator::~Communicator() { MPI_Finalize(); }

namespace {
int count_of(size_t count, int rank) {
  if (count > static_cast<size_t>(INT_MAX)) throw MpiError("rank " + std::to_string(rank) + ": message too large");
  return static_cast<int>(count);
}
}  // namespace

void Communicator::allreduce_sum(float* data, size_t count) const {
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, data, count_of(count, rank_), MPI_FLOAT, MPI_SUM, comm()),
            "MPI_Allreduce", rank_);
}

void Communicator::allreduce_sum(double* data, size_t count) const {
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, data, count_of(count, rank_), MPI_DOUBLE, MPI_SUM, comm()),
            "MPI_Allreduce", rank_);
}

void Communicator::allreduce_sum(int64_t* data, size_t count) const {
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, data, count_of(count, rank_), MPI_INT64_T, MPI_SUM, comm()),
            "MPI_Allreduce", rank_);
}

void Communicator::allreduce_max(double* data, size_t count) const {
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, data, count_of(count, rank_), MPI_DOUBLE, MPI_MAX, comm()),
            "MPI_Allreduce", rank_);
}

void Communicator::broadcast(void* data, size_t bytes, int root) const {
  check_mpi(MPI_Bcast(data, count_of(bytes, rank_), MPI_BYTE, root, comm()), "MPI_Bcast", rank_);
}

void Communicator::barrier() const { check_mpi(MPI_Barrier(comm()), "MPI_Barrier", rank_); }

void Communicator::abort(const std::string& message, int code) const {
  std::fprintf(stderr, "%s\n", message.c_str());
  std::fflush(stderr);
  if (size_ > 1) MPI_Abort(MPI_COMM_WORLD, code);
  MPI_Finalize();
  std::exit(code);
}

}  // namespace dptrain
