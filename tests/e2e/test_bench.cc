// dptrain-bench end to end: each subcommand prints its table naming the
// CPU and writes NAME.json (a BenchTable), NAME.csv and NAME.svg whose
// rows agree; measured figures are positive (their size is the machine's).
#include <gmock/gmock.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

#include "core/dptrain.pb.h"
#include "tests/e2e/run_command.h"

namespace dptrain::testing {
namespace {

using ::testing::HasSubstr;

#ifdef DPTRAIN_BENCH_BIN
const std::string kBench = DPTRAIN_BENCH_BIN;
#else
const std::string kBench;
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
    EXPECT_GT(std::stod(row.cell(3)), 0);
    EXPECT_GT(std::stod(row.cell(5)), 0);
  }
  // One table, from rank 0 only.
  EXPECT_EQ(r.output.find("allreduce on"), r.output.rfind("allreduce on"));
}

TEST(DptrainBench, BadFlagsAreOneLineErrors) {
  if (kBench.empty()) GTEST_SKIP() << "benchmarks not built (DPTRAIN_BUILD_BENCHMARKS=OFF)";
  auto r = run_command(kBench + " peak --seconds -1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("--seconds"));
  r = run_command(kBench + " nonsense");
  EXPECT_NE(r.exit_code, 0);
}

}  // namespace
}  // namespace dptrain::testing
