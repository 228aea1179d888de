#include "benchmarks/allreduce_bench.h"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <vector>

#include "benchmarks/report_table.h"
#include "dist/gradient_reducer.h"

namespace dptrain::bench {
namespace {

using Clock = std::chrono::steady_clock;

// Median seconds of `op` over rounds taking about `seconds` in all; every
// rank runs the same number of rounds (rank 0's count).
template <typename Op>
double median_seconds(const Communicator& comm, double seconds, Op op) {
  op();  // warm-up: connections, registration, first-touch pages
  comm.barrier();
  const auto t0 = Clock::now();
  op();
  double once = std::chrono::duration<double>(Clock::now() - t0).count();
  comm.allreduce_max(&once, 1);
  int rounds = std::clamp(static_cast<int>(seconds / std::max(once, 1e-9)), 3, 1000);
  std::vector<double> times;
  for (int r = 0; r < rounds; ++r) {
    comm.barrier();
    const auto start = Clock::now();
    op();
    double t = std::chrono::duration<double>(Clock::now() - start).count();
    comm.allreduce_max(&t, 1);  // a reduction ends when its slowest rank has it
    times.push_back(t);
  }
  std::nth_element(times.begin(), times.begin() + static_cast<long>(times.size() / 2), times.end());
  return times[times.size() / 2];
}

std::string size_text(int64_t bytes) {
  if (bytes >= (int64_t{1} << 20)) return std::to_string(bytes >> 20) + " MB";
  return std::to_string(bytes >> 10) + " KB";
}

}  // namespace

int allreduce(const Communicator& comm, double seconds, int64_t max_bytes, double bucket_mb,
              const std::string& out) {
  const int p = comm.size();
  const char* forced = std::getenv("OMPI_MCA_coll_tuned_allreduce_algorithm");
  const std::string algorithm =
      forced ? std::string("tuned, algorithm ") + forced : std::string("Open MPI's default");
  Table table("allreduce",
              {"bytes", "ranks", "raw ms", "raw bus GB/s", "reducer ms", "reducer bus GB/s",
               "reducer / raw"},
              "reducer bus GB/s",
              "float32 sums over MPI_COMM_WORLD (" + algorithm +
                  "); the reducer, in overlapped buckets of " + fixed(bucket_mb, 1) +
                  " MB started as one backward would (all at once here); medians of rounds "
                  "timed to the slowest rank; bus bandwidth = bytes / time x 2 (p - 1) / p");
  const double bus = p > 1 ? 2.0 * (p - 1) / p : 1.0;
  for (int64_t bytes = 4096; bytes <= max_bytes; bytes *= 4) {
    const auto n = static_cast<size_t>(bytes / 4);
    std::vector<float> raw(n, 1.f), grads(n, 1.f);
    const double raw_s = median_seconds(comm, seconds, [&] {
      MPI_Allreduce(MPI_IN_PLACE, raw.data(), static_cast<int>(n), MPI_FLOAT, MPI_SUM, comm.comm());
    });
    // Parameters of 64 K floats each, as a net's store is cut.
    std::vector<size_t> offsets;
    for (size_t o = 0; o < n; o += 65536) offsets.push_back(o);
    GradientReducer reducer(comm, grads.data(), n, offsets, bucket_mb, true, 1);
    const double reducer_s = median_seconds(comm, seconds, [&] {
      reducer.grads_final(0);
      reducer.finish();
    });
    auto gbps = [&](double s) { return static_cast<double>(bytes) / s * bus / 1e9; };
    table.add({size_text(bytes), std::to_string(p), fixed(raw_s * 1e3, 3), fixed(gbps(raw_s), 3),
               fixed(reducer_s * 1e3, 3), fixed(gbps(reducer_s), 3), fixed(raw_s / reducer_s, 3)});
  }
  if (comm.rank() == 0) table.emit(out);
  return 0;
}

}  // namespace dptrain::bench
