// dptrain-bench: the benchmarks as one tool, each subcommand printing a
// table and writing NAME.json, NAME.csv and NAME.svg into --out.
//
//   build/benchmarks/dptrain-bench peak [--seconds S] [--out DIR]
#include <thread>

#include <CLI/CLI.hpp>

#include "benchmarks/bench_table.h"
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
  CLI11_PARSE(app, argc, argv);
  try {
    if (*peak) return dptrain::bench::peak(seconds, out);
  } catch (const dptrain::UserError& e) {
    std::fprintf(stderr, "dptrain-bench: %s\n", e.what());
    return 2;
  }
  return 0;
}
