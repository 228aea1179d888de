// MPI for the rest of dptrain: initialised and finalised by one RAII
// object, every call checked. A failed call throws MpiError naming the
// call (main adds the rank); main() turns any uncaught error on any rank into
// MPI_Abort, so the whole job ends with that message instead of hanging.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace dptrain {

class MpiError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Communicator {
 public:
  Communicator(int* argc, char*** argv);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  // Rank among the processes on this node, and how many there are.
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  MPI_Comm comm() const { return MPI_COMM_WORLD; }

  // Collectives in place. Each polls its request, so a rank whose peers
  // never arrive throws MpiError after the stall timeout instead of hanging.
  void allreduce_sum(float* data, size_t count) const;
  void allreduce_sum(double* data, size_t count) const;
  void allreduce_sum(int64_t* data, size_t count) const;
  void allreduce_max(double* data, size_t count) const;
  void allreduce_min_max(int64_t* min, int64_t* max) const;
  void broadcast(void* data, size_t bytes, int root = 0) const;
  // Every rank's `bytes` (the same on all ranks) into `all`, in rank order.
  void allgather(const void* local, size_t bytes, void* all) const;
  // Every rank's array, concatenated in rank order (lengths may differ).
  std::vector<float> allgather_concat(const std::vector<float>& local) const;
  std::vector<int32_t> allgather_concat(const std::vector<int32_t>& local) const;
  // Starts a bitwise OR of *data over all ranks; finish it with wait().
  // Lets a step carry a small agreement alongside its compute.
  MPI_Request start_allreduce_or(unsigned* data) const;
  void barrier() const;
  // Waits for a request, polling; `what` names it in the stall message.
  void wait(MPI_Request& request, const char* what) const;
  void set_stall_timeout(double seconds) { stall_timeout_s_ = seconds; }

  // Ends every rank of the job with `code` after printing `message`.
  [[noreturn]] void abort(const std::string& message, int code) const;

 private:
  void allreduce(void* data, size_t count, MPI_Datatype type, MPI_Op op) const;
  template <typename T>
  std::vector<T> concat(const std::vector<T>& local) const;

  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  double stall_timeout_s_ = 120;
};

// Throws MpiError for a failed MPI call, naming it.
void check_mpi(int status, const char* call);

}  // namespace dptrain
