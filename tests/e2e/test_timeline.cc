// dptrain train --timeline on two ranks: the file is trace-event JSON (it
// parses as the TraceFile schema), holds a process per rank with named
// tracks, every step of the window and only those (an evaluation after
// the last step is not that step's), spans of each kind,
// and with overlap on, allreduce spans that run while backward does. And
// the flags' mistakes.
#include <filesystem>
#include <map>
#include <set>

#include <gmock/gmock.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include "core/dptrain.pb.h"
#include "tests/e2e/run_command.h"

namespace dptrain::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const std::string kBin = DPTRAIN_BIN;
const std::string kConvBn = std::string(DPTRAIN_SOURCE_DIR) + "/configs/convbn_fmnist.textproto";

TEST(Timeline, TwoRanksTracksOfTheWindowWithAllreduceBesideBackward) {
  if (!fs::exists("/usr/share/datasets/fashion-mnist"))
    GTEST_SKIP() << "dataset-fashion-mnist not installed";
  TempDir dir;
  const std::string trace = dir / "trace.json";
  // Small buckets: several allreduces per step, started during backward.
  const auto r =
      run_command(mpiexec(2) + kBin + " train " + kConvBn + " --run-dir " + (dir / "run") +
                  " --set data.train_limit=2000 --set data.test_limit=500"
                  " --set solver.epochs=1 --set runtime.bucket_mb=0.05"
                  " --timeline " +
                  trace + " --timeline-steps 2:30 --timeline-every 14");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  TraceFile file;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(slurp(trace), &file).ok());
  EXPECT_THAT(slurp(trace), HasSubstr("\"traceEvents\""));

  std::map<int, std::string> processes;
  std::map<int, std::set<std::string>> categories;
  std::set<int> steps;
  std::map<std::pair<int, int>, int> forward;  // (rank, step) -> forward spans
  struct Interval {
    double from, to;
  };
  std::map<int, std::vector<Interval>> backward, allreduce;
  for (const TraceEvent& e : file.trace_events()) {
    if (e.ph() == "M") {
      if (e.name() == "process_name") processes[e.pid()] = e.args().name();
      continue;
    }
    ASSERT_EQ(e.ph(), "X");
    EXPECT_GE(e.dur(), 0);
    categories[e.pid()].insert(e.cat());
    if (e.cat() != "eval" && e.cat() != "checkpoint") steps.insert(e.args().step());
    const Interval span{e.ts(), e.ts() + e.dur()};
    if (e.cat() == "backward") backward[e.pid()].push_back(span);
    if (e.cat() == "forward") ++forward[{e.pid(), e.args().step()}];
    if (e.cat() == "allreduce" && e.tid() > 0) allreduce[e.pid()].push_back(span);
  }
  EXPECT_EQ(processes, (std::map<int, std::string>{{0, "rank 0"}, {1, "rank 1"}}));
  // Step 30 is the last (31 steps): the evaluation after it is not its.
  EXPECT_EQ(steps, (std::set<int>{2, 16, 30}));
  for (int rank : {0, 1}) {
    EXPECT_EQ(forward[std::make_pair(rank, 2)], forward[std::make_pair(rank, 16)]);
    EXPECT_EQ(forward[std::make_pair(rank, 30)], forward[std::make_pair(rank, 2)])
        << "evaluation spans counted as step 30's";
    EXPECT_GT(forward[std::make_pair(rank, 2)], 0);
  }
  for (int rank : {0, 1}) {
    for (const char* cat : {"data", "forward", "backward", "allreduce", "optimizer", "eval"})
      EXPECT_EQ(categories[rank].count(cat), 1u) << "rank " << rank << " has no " << cat;
    int overlapping = 0;
    for (const Interval& a : allreduce[rank]) {
      for (const Interval& b : backward[rank]) {
        if (a.from < b.to && b.from < a.to) {
          ++overlapping;
          break;
        }
      }
    }
    EXPECT_GT(overlapping, 0) << "rank " << rank << ": no allreduce ran beside backward";
  }
}

TEST(Timeline, WindowFlagsWithoutATimelineOrMalformedAreUsageErrors) {
  for (const std::string& flags :
       {std::string("--timeline-steps 0:9"), std::string("--timeline-every 2"),
        std::string("--timeline t.json --timeline-steps 9:2"),
        std::string("--timeline t.json --timeline-steps 5"),
        std::string("--timeline t.json --timeline-every 0")}) {
    const auto r = run_command(kBin + " train " + kConvBn + " " + flags + " 2>&1");
    EXPECT_EQ(r.exit_code, 2) << flags << "\n" << r.output;
    EXPECT_THAT(r.output, HasSubstr("timeline")) << flags;
  }
}

}  // namespace
}  // namespace dptrain::testing
