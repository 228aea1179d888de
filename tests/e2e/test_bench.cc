// dptrain-bench end to end: each subcommand prints its table naming the
// CPU and writes NAME.json (a BenchTable), NAME.csv and NAME.svg whose
// rows agree; measured figures are positive (their size is the machine's).
#include <gmock/gmock.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <optional>
#include <string>

#include "core/dptrain.pb.h"
#include "core/engine.h"
#include "tests/e2e/run_command.h"

namespace dptrain::testing {
namespace {

using ::testing::HasSubstr;

#ifdef DPTRAIN_BENCH_BIN
const std::string kBench = DPTRAIN_BENCH_BIN;
#else
const std::string kBench;
#endif
#ifdef DPTRAIN_BENCH_LAYERS_BIN
const std::string kBenchLayers = DPTRAIN_BENCH_LAYERS_BIN;
#else
const std::string kBenchLayers;
#endif
#ifdef DPTRAIN_BENCH_LOOPS_BIN
const std::string kBenchLoops = DPTRAIN_BENCH_LOOPS_BIN;
#else
const std::string kBenchLoops;
#endif

BenchTable read_table(const std::string& path) {
  BenchTable t;
  EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(slurp(path), &t).ok()) << path;
  return t;
}

TEST(DptrainBench, PeakWritesItsTableInThreeForms) {
  if (kBench.empty()) GTEST_SKIP() << "benchmarks not built (DPTRAIN_BUILD_BENCHMARKS=OFF)";
  TempDir dir;
  const auto r = run_command(kBench + " peak --seconds 0.02 --out " + (dir / "out"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("GFLOP/s"));
  const BenchTable t = read_table(dir / "out/peak.json");
  EXPECT_EQ(t.benchmark(), "peak");
  EXPECT_FALSE(t.cpu().empty());
  EXPECT_THAT(r.output, HasSubstr(t.cpu()));
  ASSERT_GE(t.row_size(), 1);  // every x86-64 CPU dptrain runs on has AVX2 or AVX-512
  bool fp32 = false;
  for (const BenchRow& row : t.row()) {
    ASSERT_EQ(row.cell_size(), t.columns_size());
    EXPECT_GT(std::stod(row.cell(3)), 0) << row.cell(0);
    fp32 = fp32 || row.cell(1) == "fp32";
  }
  EXPECT_TRUE(fp32);
  const std::string csv = slurp(dir.path() / "out/peak.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), t.row_size() + 1);
  EXPECT_THAT(csv, HasSubstr(t.row(0).cell(3)));
  const std::string svg = slurp(dir.path() / "out/peak.svg");
  EXPECT_THAT(svg, HasSubstr("<svg"));
  size_t bars = 0;
  for (size_t at = svg.find("<rect"); at != std::string::npos; at = svg.find("<rect", at + 1))
    ++bars;
  EXPECT_EQ(bars, static_cast<size_t>(t.row_size()));
}

TEST(DptrainBench, AllreduceComparesTheReducerWithRawMpi) {
  if (kBench.empty()) GTEST_SKIP() << "benchmarks not built (DPTRAIN_BUILD_BENCHMARKS=OFF)";
  TempDir dir;
  const auto r = run_command(mpiexec(2) + kBench + " allreduce --max-mb 1 --seconds 0.01 --out " +
                             (dir / "out"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const BenchTable t = read_table(dir / "out/allreduce.json");
  ASSERT_EQ(t.row_size(), 5);  // 4 KB, 16 KB, 64 KB, 256 KB, 1 MB
  EXPECT_EQ(t.row(0).cell(0), "4 KB");
  EXPECT_EQ(t.row(4).cell(0), "1 MB");
  for (const BenchRow& row : t.row()) {
    EXPECT_EQ(row.cell(1), "2");
    EXPECT_GT(std::stod(row.cell(2)), 0);  // raw ms
    EXPECT_GT(std::stod(row.cell(4)), 0);  // reducer ms
  }
  // One table, from rank 0 only.
  EXPECT_EQ(r.output.find("allreduce on"), r.output.rfind("allreduce on"));
}

// LeNet-5: runs of a few steps (seconds each).
const std::string kLenet = std::string(DPTRAIN_SOURCE_DIR) + "/configs/lenet5_fmnist.textproto";

double cell(const BenchTable& t, int row, const std::string& column) {
  for (int c = 0; c < t.columns_size(); ++c) {
    if (t.columns(c) == column) return std::stod(t.row(row).cell(c));
  }
  ADD_FAILURE() << "no column " << column;
  return 0;
}

TEST(DptrainBench, ThroughputTimesTrainingRunsPerRankCount) {
  if (kBench.empty()) GTEST_SKIP() << "benchmarks not built (DPTRAIN_BUILD_BENCHMARKS=OFF)";
  TempDir dir;
  const auto r =
      run_command(kMpiAsRoot + kBench + " throughput " + kLenet +
                  " --ranks 1,2 --threads 1 --steps 8 --batch 16 --out " + (dir / "out"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const BenchTable t = read_table(dir / "out/throughput.json");
  ASSERT_EQ(t.row_size(), 2);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(t.row(i).cell(0), "lenet5_fmnist");
    EXPECT_EQ(t.row(i).cell(2), "direct");
    EXPECT_EQ(t.row(i).cell(3), std::to_string(i + 1));
    EXPECT_GT(cell(t, i, "train img/s"), 0);
    EXPECT_GT(cell(t, i, "infer img/s"), 0);
    EXPECT_GT(cell(t, i, "of peak"), 0);
    EXPECT_LT(cell(t, i, "of peak"), 1);
    EXPECT_GT(cell(t, i, "framework share"), 0);
    EXPECT_LT(cell(t, i, "framework share"), 1);
  }
}

TEST(DptrainBench, ThroughputPassesEachSetOnToEveryRunAndRejectsABadOne) {
  if (kBench.empty()) GTEST_SKIP() << "benchmarks not built (DPTRAIN_BUILD_BENCHMARKS=OFF)";
  TempDir dir;
  const std::string base = kMpiAsRoot + kBench + " throughput " + kLenet +
                           " --ranks 1 --threads 1 --steps 4 --batch 16 --out " + (dir / "out");
  const auto r = run_command(base + " --set net.convolution_algorithm=WINOGRAD");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const BenchTable t = read_table(dir / "out/throughput.json");
  ASSERT_EQ(t.row_size(), 1);
  EXPECT_EQ(t.row(0).cell(1), "fp32");
  EXPECT_EQ(t.row(0).cell(2), "winograd");
  EXPECT_THAT(slurp(dir.path() / "out/throughput-runs/run0/config.textproto"),
              HasSubstr("convolution_algorithm: WINOGRAD"));

  const auto bad = run_command(base + " --set net.no_such_field=1");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.output, HasSubstr("net.no_such_field"));
}

// The precision column, and the peak a run is measured against, are the
// run's own: a --set reaches them as it reaches the run.
TEST(DptrainBench, ThroughputLabelsEachRunWithThePrecisionItRan) {
  if (kBench.empty()) GTEST_SKIP() << "benchmarks not built (DPTRAIN_BUILD_BENCHMARKS=OFF)";
  if (!has_bf16())
    GTEST_SKIP() << "no bf16 kernels on this CPU (oneDNN runs " << effective_isa_name() << ")";
  TempDir dir;
  const auto r = run_command(kMpiAsRoot + kBench + " throughput " + kLenet +
                             " --ranks 1 --threads 1 --steps 4 --batch 16 --set precision=BF16 "
                             "--out " +
                             (dir / "out"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const BenchTable t = read_table(dir / "out/throughput.json");
  ASSERT_EQ(t.row_size(), 1);
  EXPECT_EQ(t.row(0).cell(1), "bf16");
  EXPECT_GT(cell(t, 0, "of peak"), 0);
  EXPECT_THAT(slurp(dir.path() / "out/throughput-runs/run0/config.textproto"),
              HasSubstr("precision: BF16"));
}

TEST(DptrainBench, ScalingReportsEachSetupWithTheModelBesideIt) {
  if (kBench.empty()) GTEST_SKIP() << "benchmarks not built (DPTRAIN_BUILD_BENCHMARKS=OFF)";
  TempDir dir;
  const auto r =
      run_command(kMpiAsRoot + kBench + " scaling " + kLenet +
                  " --ranks 2 --batch 16 --steps 8 --rounds 1 --predict --out " + (dir / "out"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const BenchTable t = read_table(dir / "out/scaling.json");
  ASSERT_EQ(t.row_size(), 5);  // 1 rank, 2 independent, weak shm, weak tcp, strong shm
  EXPECT_EQ(t.row(0).cell(0), "1 rank");
  EXPECT_EQ(t.row(3).cell(0), "weak, 2 ranks, loopback TCP");
  for (int i = 0; i < t.row_size(); ++i) {
    EXPECT_GT(cell(t, i, "img/s"), 0) << t.row(i).cell(0);
    EXPECT_GT(cell(t, i, "predicted ms"), 0) << t.row(i).cell(0);
    // The breakdown's parts fit in the step.
    double parts = 0;
    for (const char* c :
         {"data ms", "forward ms", "backward ms", "allreduce wait ms", "optimizer ms"})
      parts += cell(t, i, c);
    EXPECT_LE(parts, cell(t, i, "step ms") * 1.001) << t.row(i).cell(0);
  }
  EXPECT_EQ(cell(t, 0, "allreduce wait ms"), 0);
  const BenchTable model = read_table(dir / "out/scaling_model.json");
  ASSERT_EQ(model.row_size(), 12);  // 3 links x 2, 8, 64, 512 nodes
  // More nodes: a longer allreduce over the same link.
  EXPECT_LT(cell(model, 8, "allreduce ms"), cell(model, 11, "allreduce ms"));
}

TEST(DptrainBench, TtaIsTheWallTimeOfTheFirstEvaluationAtTheTarget) {
  if (kBench.empty()) GTEST_SKIP() << "benchmarks not built (DPTRAIN_BUILD_BENCHMARKS=OFF)";
  TempDir dir;
  const std::string sets =
      " --set data.train_limit=2048 --set data.test_limit=500 --set solver.epochs=3";
  auto r = run_command(kMpiAsRoot + kBench + " tta " + kLenet + " --target 0.5 --ranks 2" + sets +
                       " --out " + (dir / "out"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const BenchTable t = read_table(dir / "out/tta.json");
  ASSERT_EQ(t.row_size(), 1);
  EXPECT_GT(cell(t, 0, "seconds to target"), 0);
  EXPECT_LE(cell(t, 0, "seconds to target"), cell(t, 0, "run seconds"));
  EXPECT_GE(cell(t, 0, "final accuracy"), 0.5);
  // A target the run cannot reach: said so, exit 1.
  r = run_command(kMpiAsRoot + kBench + " tta " + kLenet + " --target 1.0 --ranks 1" + sets +
                  " --set solver.epochs=1 --out " + (dir / "out"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("not reached"));
}

TEST(DptrainBench, AFailingRunNamesItsLog) {
  if (kBench.empty()) GTEST_SKIP() << "benchmarks not built (DPTRAIN_BUILD_BENCHMARKS=OFF)";
  TempDir dir;
  const auto r = run_command(kMpiAsRoot + kBench + " tta " + kLenet +
                             " --set solver.base_lr=-1 --out " + (dir / "out"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("failed"));
  EXPECT_THAT(r.output, HasSubstr(".log"));
}

TEST(DptrainBench, BadFlagsAreOneLineErrors) {
  if (kBench.empty()) GTEST_SKIP() << "benchmarks not built (DPTRAIN_BUILD_BENCHMARKS=OFF)";
  auto r = run_command(kBench + " peak --seconds -1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("--seconds"));
  r = run_command(kBench + " nonsense");
  EXPECT_NE(r.exit_code, 0);
}

// Google Benchmark's JSON entry of the benchmark `name`, up to its first
// '}', or "" where there is none.
std::string benchmark_entry(const std::string& json, const std::string& name) {
  const size_t at = json.find("\"name\": \"" + name + "\"");
  return at == std::string::npos ? "" : json.substr(at, json.find('}', at) - at);
}

// The value of an entry's counter `key`, if it has one.
std::optional<double> counter(const std::string& entry, const std::string& key) {
  const std::string field = "\"" + key + "\": ";
  const size_t at = entry.find(field);
  if (at == std::string::npos) return std::nullopt;
  return std::stod(entry.substr(at + field.size()));
}

// bench_layers: a forward and a backward benchmark for every layer of
// the net (the first convolution's backward computes weight gradients
// only; it still runs), with the GFLOP counter on the ones that count work.
TEST(BenchLayers, TimesEveryLayersForwardAndBackward) {
  if (kBenchLayers.empty()) GTEST_SKIP() << "benchmarks not built (DPTRAIN_BUILD_BENCHMARKS=OFF)";
  const auto r = run_command("OMP_NUM_THREADS=1 " + kBenchLayers + " " + DPTRAIN_SOURCE_DIR +
                             "/configs/lenet5_fmnist.textproto --batch 8 "
                             "--benchmark_min_time=0.001 --benchmark_format=json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // ReLUs are fused into the layers before them.
  const std::vector<std::pair<std::string, bool>> layers = {
      {"0_conv1_Convolution", true}, {"1_pool1_MaxPool", false},
      {"2_conv2_Convolution", true}, {"3_pool2_MaxPool", false},
      {"4_fc1_InnerProduct", true},  {"5_fc2_InnerProduct", true},
      {"6_fc3_InnerProduct", true},  {"7_loss_SoftmaxCrossEntropy", false}};
  for (const auto& [layer, counts_work] : layers) {
    for (const std::string pass : {"forward", "backward"}) {
      const std::string name = "layer/lenet5_fmnist/" + layer + "/" + pass + "/real_time";
      const std::string entry = benchmark_entry(r.output, name);
      ASSERT_FALSE(entry.empty()) << name << " missing in\n" << r.output;
      const auto gflop = counter(entry, "GFLOP");
      EXPECT_EQ(gflop.has_value(), counts_work) << entry;
      if (gflop) {
        EXPECT_GT(*gflop, 0) << entry;
      }
    }
  }
  EXPECT_EQ(r.output.find("8_"), std::string::npos) << "more layers than lenet5 has";
}

TEST(BenchLayers, AMissingConfigIsAClearError) {
  if (kBenchLayers.empty()) GTEST_SKIP() << "benchmarks not built (DPTRAIN_BUILD_BENCHMARKS=OFF)";
  const auto r = run_command(kBenchLayers + " /nonexistent/net.textproto");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("/nonexistent/net.textproto"));
}

// bench_loops: each BatchNorm pass at ResNet-50's 7x7 shapes, f32 and
// bf16, with the bytes it moves per second.
TEST(BenchLoops, TimesEachBatchNormPassInBothTypes) {
  if (kBenchLoops.empty()) GTEST_SKIP() << "benchmarks not built (DPTRAIN_BUILD_BENCHMARKS=OFF)";
  const auto r = run_command("OMP_NUM_THREADS=1 " + kBenchLoops +
                             " --benchmark_filter=size:7/ --benchmark_min_time=0.001"
                             " --benchmark_format=json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const std::string pass : {"Forward", "Backward", "FoldedAdd"}) {
    for (const std::string shape : {"channels:512/size:7", "channels:2048/size:7"}) {
      for (const std::string bf16 : {"0", "1"}) {
        const std::string name =
            "BM_BatchNorm" + pass + "/" + shape + "/bf16:" + bf16 + "/real_time";
        const std::string entry = benchmark_entry(r.output, name);
        ASSERT_FALSE(entry.empty()) << name << " missing in\n" << r.output;
        const auto rate = counter(entry, "bytes_per_second");
        ASSERT_TRUE(rate.has_value()) << entry;
        EXPECT_GT(*rate, 0) << entry;
      }
    }
  }
  EXPECT_EQ(r.output.find("size:56"), std::string::npos) << "the filter was not applied";
}

// --simd picks the copy of the loops that runs, which each entry's label
// names; one this CPU does not run is refused, naming those it does.
TEST(BenchLoops, RunsTheLoopsOfTheInstructionSetAskedFor) {
  if (kBenchLoops.empty()) GTEST_SKIP() << "benchmarks not built (DPTRAIN_BUILD_BENCHMARKS=OFF)";
  const auto r = run_command("OMP_NUM_THREADS=1 " + kBenchLoops +
                             " --simd=sse2 --benchmark_filter='Forward/channels:512/size:7/bf16:1'"
                             " --benchmark_min_time=0.001 --benchmark_format=json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string entry =
      benchmark_entry(r.output, "BM_BatchNormForward/channels:512/size:7/bf16:1/real_time");
  EXPECT_THAT(entry, HasSubstr("\"label\": \"bf16 sse2\"")) << r.output;
  const auto bad = run_command(kBenchLoops + " --simd=neon");
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_THAT(bad.output, HasSubstr("--simd=neon: this CPU runs only sse2"));
}

}  // namespace
}  // namespace dptrain::testing
