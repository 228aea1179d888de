#include "benchmarks/training_bench.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>

#include <google/protobuf/util/json_util.h>

#include "benchmarks/peak.h"
#include "benchmarks/report_table.h"
#include "benchmarks/training_runs.h"
#include "core/config.h"
#include "core/error.h"
#include "core/file_io.h"

namespace dptrain::bench {
namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

std::string scratch_dir(const std::string& out, const std::string& what) {
  return out + "/" + what + "-runs";
}

// The sets every timed run gets: `steps` steps, one train record for the
// first half (warm-up) and one for the second, which is the one read.
std::vector<std::string> timed_steps(int steps) {
  return {"solver.max_steps=" + std::to_string(steps),
          "runtime.log_every_steps=" + std::to_string(std::max(1, steps / 2)),
          "checkpoint.every_epochs=0", "checkpoint.every_steps=0"};
}

// The best peak of `precision` ("fp32", "bf16") over this CPU's kernels
// at `threads` threads, measured once per thread count.
double peak_gflops(const std::string& precision, int threads) {
  static std::map<std::pair<std::string, int>, double> cache;
  const auto key = std::make_pair(precision, threads);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  double best = 0;
  for (const PeakKernel& k : peak_kernels()) {
    if (k.precision == precision) best = std::max(best, measure_peak(k, threads, 0.3, 3));
  }
  return cache[key] = best;
}

}  // namespace

int throughput(const ThroughputOptions& o) {
  Table table("throughput",
              {"config", "precision", "convolutions", "ranks", "threads", "batch/rank",
               "train img/s", "infer img/s", "GFLOP/s", "of peak", "step ms", "framework share"},
              "train img/s",
              "each run: " + std::to_string(o.steps) +
                  " steps of dptrain train under mpirun, the second half timed (whole steps, "
                  "allreduce and update included); inference: the test pass after them; "
                  "GFLOP/s: 2 x multiply-adds of every convolution and inner product, forward, "
                  "backward-data and backward-weights, over the step (Winograd's too, so its "
                  "share of peak can pass 1); peak: dptrain-bench peak's best kernel of the "
                  "run's precision at ranks x threads threads; framework share: of the step, "
                  "the time outside oneDNN primitives, the optimizer update and the allreduce "
                  "wait; (over) = more threads than " +
                  std::to_string(cores()) + " cores");
  // The user's overrides, --bf16 first: every run gets them, and the
  // table's columns read the config they resolve to.
  std::vector<std::string> user_sets;
  if (o.bf16) user_sets.push_back("precision=BF16");
  user_sets.insert(user_sets.end(), o.sets.begin(), o.sets.end());
  for (const std::string& config : o.configs) {
    TrainSpec spec = load_train_spec(config);
    for (const std::string& set : user_sets) apply_override(&spec, set);
    const std::string precision = spec.precision() == BF16 ? "bf16" : "fp32";
    const std::string convolutions =
        spec.net().convolution_algorithm() == WINOGRAD ? "winograd" : "direct";
    const int batch = o.batch > 0 ? o.batch : static_cast<int>(spec.data().batch_size());
    for (int ranks : o.ranks) {
      for (int threads : o.threads) {
        Launch l{config, ranks, threads, false, timed_steps(o.steps)};
        l.sets.push_back("data.batch_size=" + std::to_string(batch * ranks));
        l.sets.push_back("data.test_limit=" + std::to_string(std::max(8 * batch * ranks, 512)));
        l.sets.push_back("runtime.eval_every_epochs=1");
        l.sets.insert(l.sets.end(), user_sets.begin(), user_sets.end());
        const Outcome run = run_one(l, scratch_dir(o.out, "throughput"));
        const MetricsRecord& train = last_record(run, "train");
        const MetricsRecord& eval = last_record(run, "eval");
        const StepTime& t = train.step_time();
        const double images = static_cast<double>(batch) * ranks;
        const double gflops = t.gflop() * ranks / (t.step_ms() / 1e3);
        const int used = ranks * threads;
        const double peak = peak_gflops(precision, std::min(used, cores()));
        // The test pass covers test_limit images, or fewer if the split
        // is smaller (a synthetic set's test_size).
        double test_images = static_cast<double>(std::max(8 * batch * ranks, 512));
        if (spec.data().format() == DataSpec::SYNTHETIC) {
          test_images =
              std::min(test_images, static_cast<double>(spec.data().synthetic().test_size()));
        }
        table.add(
            {std::filesystem::path(config).stem().string(), precision, convolutions,
             std::to_string(ranks), std::to_string(threads) + (used > cores() ? " (over)" : ""),
             std::to_string(batch), fixed(images / (t.step_ms() / 1e3), 1),
             fixed(test_images / eval.eval_seconds(), 1), fixed(gflops, 1),
             peak > 0 ? fixed(gflops / peak, 3) : "n/a", fixed(t.step_ms(), 2),
             fixed(1 - (t.primitives_ms() + t.optimizer_ms() + t.allreduce_wait_ms()) / t.step_ms(),
                   3)});
      }
    }
  }
  table.emit(o.out);
  return 0;
}

namespace {

// Allreduce time of `bytes` over p ranks in a ring: 2 (p - 1) latencies
// and 2 (p - 1) / p of the bytes at the link's bandwidth.
struct Link {
  std::string name;
  double alpha_s = 0;  // per message
  double bytes_per_s = 0;
  double allreduce(int p, double bytes) const {
    if (p < 2) return 0;
    return 2.0 * (p - 1) * alpha_s + 2.0 * (p - 1) / p * bytes / bytes_per_s;
  }
  // Milliseconds of a step's allreduce of `bytes` that backward (of
  // `backward_ms`) does not hide: at least the last bucket's (1 MB, the
  // default), which starts when backward ends.
  double exposed_ms(int p, double bytes, double backward_ms) const {
    return std::max(allreduce(p, std::min(bytes, 1048576.0)) * 1e3,
                    allreduce(p, bytes) * 1e3 - backward_ms);
  }
};

double size_bytes(const std::string& text) {  // "4 KB", "16 MB"
  const double n = std::stod(text);
  return text.find("MB") != std::string::npos ? n * (1 << 20) : n * (1 << 10);
}

// The reducer's latency and bandwidth between 2 ranks over shared memory
// or loopback TCP, fitted to dptrain-bench allreduce's figures: the
// bandwidth from the two largest sizes, the latency from the smallest.
Link measure_link(bool tcp, const std::string& dir) {
  std::filesystem::create_directories(dir);
  const std::string cmd = "mpirun -np 2 --oversubscribe --bind-to none" +
                          std::string(tcp ? " --mca btl tcp,self" : "") + " " +
                          shell_quoted(self_path("dptrain-bench")) +
                          " allreduce --max-mb 64 --seconds 0.2 --out " + shell_quoted(dir) + " >" +
                          shell_quoted(dir + "/allreduce.log") + " 2>&1";
  if (std::system(cmd.c_str()) != 0) {
    throw UserError("the allreduce measurement failed; its output is in " + dir + "/allreduce.log");
  }
  BenchTable t;
  if (!google::protobuf::util::JsonStringToMessage(read_file(dir + "/allreduce.json"), &t).ok() ||
      t.row_size() < 3) {
    throw UserError(dir + "/allreduce.json: not a table of the allreduce benchmark");
  }
  auto point = [&](int row) {  // bytes, seconds (the reducer's, as runs use it)
    return std::make_pair(size_bytes(t.row(row).cell(0)), std::stod(t.row(row).cell(4)) / 1e3);
  };
  const auto [b1, t1] = point(t.row_size() - 2);
  const auto [b2, t2] = point(t.row_size() - 1);
  const auto [b0, t0] = point(0);
  Link link{tcp ? "loopback TCP" : "shared memory", 0, (b2 - b1) / std::max(t2 - t1, 1e-12)};
  // T(2 ranks) = 2 alpha + bytes / bandwidth.
  link.alpha_s = std::max(0.0, (t0 - b0 / link.bytes_per_s) / 2);
  return link;
}

struct Setup {
  std::string name;
  int ranks = 1;
  bool tcp = false;
  int batch = 0;   // per rank
  int copies = 1;  // independent runs at the same moment
};

// Medians over rounds of a setup's step breakdown.
struct Measured {
  std::vector<std::vector<double>> fields;  // step, data, fwd, bwd, wait, opt
  std::vector<double> images_per_s;
  double gradient_floats = 0;
  double m(size_t f) const { return median(fields[f]); }
};

}  // namespace

int scaling(const ScalingOptions& o) {
  const int b = o.batch;
  std::vector<Setup> setups{{"1 rank", 1, false, b, 1},
                            {"2 independent 1-rank runs", 1, false, b, 2}};
  for (int p : o.ranks) {
    const std::string n = std::to_string(p) + " ranks";
    setups.push_back({"weak, " + n + ", shared memory", p, false, b, 1});
    setups.push_back({"weak, " + n + ", loopback TCP", p, true, b, 1});
    if (b % p == 0) setups.push_back({"strong, " + n + ", shared memory", p, false, b / p, 1});
  }
  std::vector<Measured> measured(setups.size());
  const std::string dir = scratch_dir(o.out, "scaling");
  for (int round = 0; round < o.rounds; ++round) {
    for (size_t i = 0; i < setups.size(); ++i) {
      const Setup& s = setups[i];
      Launch l{o.config, s.ranks, 1, s.tcp, timed_steps(o.steps)};
      l.sets.push_back("data.batch_size=" + std::to_string(s.batch * s.ranks));
      l.sets.push_back("data.test_limit=512");
      const std::vector<Outcome> runs = run_together(std::vector<Launch>(s.copies, l), dir);
      Measured& m = measured[i];
      m.fields.resize(6);
      double images = 0;
      for (const Outcome& run : runs) {
        const StepTime& t = last_record(run, "train").step_time();
        images += s.batch * s.ranks / (t.step_ms() / 1e3);
        if (&run == &runs.front()) {
          for (size_t f = 0; f < 6; ++f) {
            const double v[] = {t.step_ms(),     t.data_wait_ms(),      t.forward_ms(),
                                t.backward_ms(), t.allreduce_wait_ms(), t.optimizer_ms()};
            m.fields[f].push_back(v[f]);
          }
          m.gradient_floats = t.gradient_floats();
        }
      }
      m.images_per_s.push_back(images);
      std::fprintf(stderr, "round %d/%d: %s: %.0f img/s\n", round + 1, o.rounds, s.name.c_str(),
                   images);
    }
  }

  std::optional<Link> shm, tcp;
  if (o.predict) {
    shm = measure_link(false, dir + "/link-shm");
    tcp = measure_link(true, dir + "/link-tcp");
  }
  // The model: a step is its compute (everything but the allreduce wait,
  // measured with as many ranks sharing the host, without communication:
  // one rank alone, or the independent runs side by side), plus what of
  // the allreduce of all gradients backward does not hide (at least the
  // last bucket's, which starts when backward ends).
  const double bytes = measured[0].gradient_floats * 4;
  auto compute_ms = [&](const Setup& s) -> std::optional<double> {
    if (s.ranks > cores()) return std::nullopt;  // oversubscribed: no model
    const Measured& base = measured[s.ranks == 1 ? 0 : 1];
    const double alone = base.m(0) - base.m(4);
    return alone * static_cast<double>(s.batch) / b;  // linear in the batch (strong scaling)
  };
  auto predict_ms = [&](const Setup& s, const Link& link, double bwd_ms) -> std::optional<double> {
    const auto c = compute_ms(s);
    if (!c) return std::nullopt;
    return *c + link.exposed_ms(s.ranks, bytes, bwd_ms);
  };

  std::vector<std::string> columns{
      "setup",       "ranks",   "batch/rank", "img/s",       "speedup",
      "step ms",     "data ms", "forward ms", "backward ms", "allreduce wait ms",
      "optimizer ms"};
  if (o.predict) columns.insert(columns.end(), {"predicted ms", "model error"});
  Table table("scaling", columns, "img/s",
              o.config + ", 1 thread per rank, " + std::to_string(o.steps) +
                  " steps per run (the second half timed), medians of " + std::to_string(o.rounds) +
                  " interleaved rounds; speedup against 1 rank (the 2 independent runs: their "
                  "combined throughput, the ceiling this host's shared caches and memory allow "
                  "2 ranks)" +
                  (o.predict ? "; predicted: the scaling model (benchmarks/README.md)" : ""));
  const double one = median(measured[0].images_per_s);
  for (size_t i = 0; i < setups.size(); ++i) {
    const Setup& s = setups[i];
    const Measured& m = measured[i];
    const double rate = median(m.images_per_s);
    std::string speedup = fixed(rate / one, 3);
    if (s.copies == 1 && s.ranks == 2 && s.batch == b) {
      speedup += " (" + fixed(rate / median(measured[1].images_per_s), 3) + " of independent)";
    }
    std::vector<std::string> row{
        s.name,
        std::to_string(s.ranks * s.copies) + (s.ranks * s.copies > cores() ? " (over)" : ""),
        std::to_string(s.batch), fixed(rate, 1), speedup};
    for (size_t f = 0; f < 6; ++f) row.push_back(fixed(m.m(f), 3));
    if (o.predict) {
      const Link& link = s.tcp ? *tcp : *shm;
      const auto p = s.copies > 1 ? std::optional<double>(m.m(0)) : predict_ms(s, link, m.m(3));
      row.push_back(p ? fixed(*p, 3) : "n/a");
      row.push_back(p ? fixed(*p / m.m(0) - 1, 3) : "n/a");
    }
    table.add(row);
  }
  table.emit(o.out);

  if (o.predict) {
    // Projections: one rank per node, each node computing as one rank here
    // does alone, over the measured links and a 100 Gbit/s interconnect.
    const Link fast{"100 Gbit/s (5 us, 12.5 GB/s)", 5e-6, 12.5e9};
    Table model("scaling_model",
                {"link", "latency us", "GB/s", "nodes", "allreduce ms", "step ms", "img/s",
                 "efficiency", "hiding batch/rank"},
                "efficiency",
                o.config + ": " + fixed(bytes / 1e6, 1) +
                    " MB of gradients, ring allreduce (2 (p-1) latencies + 2 (p-1)/p of the bytes "
                    "at the bandwidth); compute per step " +
                    fixed(measured[0].m(0), 2) + " ms at batch " + std::to_string(b) +
                    " per rank, backward " + fixed(measured[0].m(3), 2) +
                    " ms; hiding batch/rank: below it the allreduce outlasts backward");
    const double bwd_per_sample = measured[0].m(3) / b;
    for (const Link* link : std::vector<const Link*>{&*shm, &*tcp, &fast}) {
      for (int nodes : {2, 8, 64, 512}) {
        const double all = link->allreduce(nodes, bytes) * 1e3;
        const double step = measured[0].m(0) + link->exposed_ms(nodes, bytes, measured[0].m(3));
        const double rate = nodes * b / (step / 1e3);
        model.add({link->name, fixed(link->alpha_s * 1e6, 2), fixed(link->bytes_per_s / 1e9, 2),
                   std::to_string(nodes), fixed(all, 3), fixed(step, 3), fixed(rate, 0),
                   fixed(rate / (nodes * one), 3),
                   std::to_string(static_cast<long>(std::ceil(all / bwd_per_sample)))});
      }
    }
    model.emit(o.out);
  }
  return 0;
}

int tta(const TtaOptions& o) {
  Table table("tta",
              {"config", "ranks", "threads", "target", "epoch reached", "seconds to target",
               "final accuracy", "run seconds"},
              "seconds to target",
              "wall_time of the first evaluation at or above the target test accuracy (seconds "
              "since training started, from metrics.jsonl), the config as given; median of " +
                  std::to_string(o.rounds) + " run(s)");
  std::vector<double> reach, total;
  double final_accuracy = 0;
  int epoch = 0;
  for (int round = 0; round < o.rounds; ++round) {
    Launch l{o.config, o.ranks, o.threads, false, o.sets};
    const Outcome run = run_one(l, scratch_dir(o.out, "tta"));
    std::optional<double> at;
    for (const MetricsRecord& r : run.records) {
      if (r.kind() == "eval" && r.test_accuracy() >= o.target && !at) {
        at = r.wall_time();
        epoch = r.epoch();
      }
    }
    final_accuracy = last_record(run, "eval").test_accuracy();
    if (at) reach.push_back(*at);
    total.push_back(run.wall_seconds);
  }
  const std::string name = std::filesystem::path(o.config).stem().string();
  table.add({name, std::to_string(o.ranks), std::to_string(o.threads), fixed(o.target, 3),
             reach.size() == total.size() ? std::to_string(epoch) : "not reached",
             reach.size() == total.size() ? fixed(median(reach), 2) : "n/a",
             fixed(final_accuracy, 4), fixed(median(total), 2)});
  table.emit(o.out);
  return reach.size() == total.size() ? 0 : 1;
}

}  // namespace dptrain::bench
