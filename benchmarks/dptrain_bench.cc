// dptrain-bench: the benchmarks as one tool, each subcommand printing a
// table and writing NAME.json, NAME.csv and NAME.svg into --out.
//
//   build/benchmarks/dptrain-bench peak [--seconds S] [--out DIR]
//   mpirun -np 2 build/benchmarks/dptrain-bench allreduce [--max-mb M] [--out DIR]
//   build/benchmarks/dptrain-bench throughput CONFIG... [--ranks 1,2] [--threads 1,2] [--bf16]
//   build/benchmarks/dptrain-bench scaling CONFIG [--batch B] [--rounds R] [--predict]
//   build/benchmarks/dptrain-bench tta CONFIG [--target 0.91] [--ranks 2]
// (the last three start dptrain train under mpirun themselves)
#include <thread>

#include <CLI/CLI.hpp>

#include "benchmarks/allreduce_bench.h"
#include "benchmarks/peak.h"
#include "benchmarks/report_table.h"
#include "benchmarks/training_bench.h"
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

  dptrain::bench::ThroughputOptions tp;
  CLI::App* throughput = app.add_subcommand(
      "throughput",
      "training and inference images/s, GFLOP/s and its share of peak, per config, "
      "rank count and threads per rank");
  throughput->add_option("configs", tp.configs, "model configs")
      ->required()
      ->check(CLI::ExistingFile);
  throughput->add_option("--ranks", tp.ranks, "rank counts (default 1 2)")
      ->delimiter(',')
      ->check(CLI::Range(1, 64));
  throughput->add_option("--threads", tp.threads, "threads per rank (default 1 2)")
      ->delimiter(',')
      ->check(CLI::Range(1, 256));
  throughput->add_option("--steps", tp.steps, "steps per run, the second half timed (100)")
      ->check(CLI::Range(4, 100000));
  throughput->add_option("--batch", tp.batch, "batch per rank (default: the config's)")
      ->check(CLI::Range(1, 65536));
  throughput->add_flag("--bf16", tp.bf16, "precision: BF16 (refused on a CPU without bf16)");
  throughput->add_option("--set", tp.sets,
                         "PATH=VALUE config override for every run, as dptrain train's (repeat "
                         "for more), e.g. net.convolution_algorithm=DIRECT");
  throughput->add_option("--out", tp.out, "folder for throughput.{json,csv,svg} (bench-results)");

  dptrain::bench::ScalingOptions sc;
  CLI::App* scaling = app.add_subcommand(
      "scaling",
      "weak and strong scaling over rank counts, shared memory and loopback TCP, with "
      "each step's breakdown; --predict: the scaling model beside it");
  scaling->add_option("config", sc.config, "model config")->required()->check(CLI::ExistingFile);
  scaling->add_option("--batch", sc.batch, "batch per rank of the weak runs (64)")
      ->check(CLI::Range(1, 65536));
  scaling->add_option("--steps", sc.steps, "steps per run, the second half timed (300)")
      ->check(CLI::Range(4, 100000));
  scaling->add_option("--rounds", sc.rounds, "interleaved rounds, medians reported (5)")
      ->check(CLI::Range(1, 100));
  scaling->add_option("--ranks", sc.ranks, "rank counts above 1 (default 2 4)")
      ->delimiter(',')
      ->check(CLI::Range(2, 64));
  scaling->add_flag("--predict", sc.predict,
                    "measure the links' latency and bandwidth and print the model's step time "
                    "beside each measured one, and its projection to 8, 64 and 512 nodes");
  scaling->add_option("--out", sc.out, "folder for scaling.{json,csv,svg} (bench-results)");

  dptrain::bench::TtaOptions tt;
  CLI::App* tta = app.add_subcommand(
      "tta", "wall time to a target test accuracy, from the run's metrics.jsonl");
  tta->add_option("config", tt.config, "config")->required()->check(CLI::ExistingFile);
  tta->add_option("--target", tt.target, "test accuracy (0.91)")->check(CLI::Range(0.0, 1.0));
  tta->add_option("--ranks", tt.ranks, "ranks (2)")->check(CLI::Range(1, 64));
  tta->add_option("--threads", tt.threads, "threads per rank (1)")->check(CLI::Range(1, 256));
  tta->add_option("--rounds", tt.rounds, "runs, the median reported (1)")
      ->check(CLI::Range(1, 100));
  tta->add_option("--set", tt.sets, "override a config field: PATH=VALUE (repeatable)");
  tta->add_option("--out", tt.out, "folder for tta.{json,csv,svg} (bench-results)");

  CLI11_PARSE(app, argc, argv);
  tp.out = tp.out.empty() ? out : tp.out;
  sc.out = sc.out.empty() ? out : sc.out;
  tt.out = tt.out.empty() ? out : tt.out;
  try {
    if (*peak) return dptrain::bench::peak(seconds, out);
    if (*throughput) return dptrain::bench::throughput(tp);
    if (*scaling) return dptrain::bench::scaling(sc);
    if (*tta) return dptrain::bench::tta(tt);
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
