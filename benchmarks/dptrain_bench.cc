// dptrain-bench: the benchmarks as one tool, each subcommand printing a
// table and writing NAME.json, NAME.csv and NAME.svg into --out.
//
//   build/benchmarks/dptrain-bench peak [--seconds S] [--out DIR]
//   mpirun -np 2 build/benchmarks/dptrain-bench allreduce [--max-mb M] [--out DIR]
#include <thread>

#include <CLI/CLI.hpp>

#include "benchmarks/allreduce_bench.h"
#include "benchmarks/report_table.h"
#include "benchmarks/peak.h"
#include "core/error.h"

namespace dptrain::bench {
namespace {

int peak(double seconds, const std::string& out) {
  const int cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  Table table("peak", {"kernel", "precision", "threads", "GFLOP/s", "per thread"}, "GFLOP/s",
              "flops: 2 per multiply-add, in a loop of independent FMA (or dot-product, or tile) "
              "chains on registers; threads pinned to distinct CPUs; best of 3 runs of " +
                  fixed(seconds, 1) + " s");
  for (const PeakKernel& k : peak_kernels()) {
    for (int threads : {1, cores}) {
      if (threads == cores && cores == 1) continue;
      const double g = measure_peak(k, threads, seconds, 3);
      table.add({k.name, k.precision, std::to_string(threads), fixed(g, 1), fixed(g / threads, 1)});
    }
  }
  table.emit(out);
  return 0;
}

}  // namespace
}  // namespace dptrain::bench

int main(int argc, char** argv) {
  CLI::App app{"dptrain-bench: the throughput and scaling benchmarks", "dptrain-bench"};
  app.require_subcommand(1);
  std::string out = "bench-results";
  double seconds = 0.5;
  CLI::App* peak = app.add_subcommand(
      "peak", "fp32 and bf16 multiply-add throughput of one core and of all cores");
  peak->add_option("--seconds", seconds, "length of each timed run (default 0.5)")
      ->check(CLI::Range(0.01, 60.0));
  peak->add_option("--out", out, "folder for peak.json, peak.csv and peak.svg (bench-results)");
  CLI::App* allreduce = app.add_subcommand(
      "allreduce", "the gradient reducer against raw MPI_Allreduce, 4 KB to 256 MB (under mpirun)");
  int64_t max_mb = 256;
  double bucket_mb = 1;
  allreduce->add_option("--max-mb", max_mb, "largest size, in MB (default 256)")
      ->check(CLI::Range(int64_t{1}, int64_t{4096}));
  allreduce->add_option("--bucket-mb", bucket_mb, "the reducer's bucket size (default 1, as runs)")
      ->check(CLI::Range(0.001, 4096.0));
  allreduce->add_option("--seconds", seconds, "time spent on each size (default 0.5)")
      ->check(CLI::Range(0.01, 60.0));
  allreduce->add_option("--out", out, "folder for allreduce.{json,csv,svg} (bench-results)");
  CLI11_PARSE(app, argc, argv);
  try {
    if (*peak) return dptrain::bench::peak(seconds, out);
    if (*allreduce) {
      dptrain::Communicator comm(&argc, &argv);
      return dptrain::bench::allreduce(comm, seconds, max_mb << 20, bucket_mb, out);
    }
  } catch (const dptrain::UserError& e) {
    std::fprintf(stderr, "dptrain-bench: %s\n", e.what());
    return 2;
  }
  return 0;
}
