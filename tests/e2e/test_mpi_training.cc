// dptrain under mpiexec: N ranks at global batch B train exactly what one
// rank at batch B does, runs repeat bitwise, the overlapped reducer equals
// the fused one, and a failing rank ends the job with a message naming it.
#include <filesystem>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/e2e/run_command.h"

namespace dptrain::testing {
namespace {

using ::testing::AnyOf;
using ::testing::HasSubstr;

const std::string kBin = DPTRAIN_BIN;
const std::string kConfigs = std::string(DPTRAIN_SOURCE_DIR) + "/configs/";

// K = 10 steps of LeNet-5 at global batch 48 (divisible by 1..4 ranks).
std::string lenet(const std::string& run_dir, const std::string& extra = "") {
  return kBin + " train " + kConfigs + "lenet5_fmnist.textproto --run-dir " + run_dir +
         " --set data.train_limit=960 --set data.batch_size=48 --set solver.max_steps=10 " + extra +
         " > " + run_dir + ".log 2>&1";
}

// Of two run folders' final weights.
double max_rel_diff(const std::string& a, const std::string& b) {
  return dptrain::testing::max_rel_diff(kBin, a + "/final_weights", b + "/final_weights");
}

class MpiTraining : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists("/usr/share/datasets/fashion-mnist")) {
      GTEST_SKIP() << "dataset-fashion-mnist not installed";
    }
  }
  TempDir dir_;
  void train(int ranks, const std::string& name, const std::string& extra = "",
             const std::string& mca = "") {
    const auto r = run_command(mpiexec(ranks, mca) + lenet(dir_ / name, extra));
    ASSERT_EQ(r.exit_code, 0) << r.output << slurp(dir_ / (name + ".log"));
  }
};

TEST_F(MpiTraining, RanksMatchOneProcessAtTheSameGlobalBatch) {
  train(1, "one");
  for (int n : {2, 3, 4}) {
    const std::string name = "n" + std::to_string(n);
    train(n, name);
    EXPECT_LE(max_rel_diff(dir_ / "one", dir_ / name), 1e-5) << n << " ranks";
  }
}

TEST_F(MpiTraining, RanksMatchOneProcessOverLoopbackTcp) {
  train(1, "one");
  train(2, "tcp", "", "--mca btl tcp,self");
  EXPECT_LE(max_rel_diff(dir_ / "one", dir_ / "tcp"), 1e-5);
}

TEST_F(MpiTraining, SynchronizedBatchNormMatchesOneProcess) {
  // Three steps at a learning rate at which they are stable. Rounding
  // differences (the weight gradients are summed in another order) move
  // activations by an ulp or so; once one of them crosses a ReLU or
  // max-pooling tie, a single element's gradient changes and the runs part
  // by about 1e-4 (seen from the fourth step here with AVX-512 kernels, and
  // at the config's 0.05, whose loss spikes, from the third).
  auto convbn = [&](int ranks, const std::string& name, const std::string& sync) {
    const std::string run = dir_ / name;
    const auto r = run_command(
        mpiexec(ranks) + kBin + " train " + kConfigs + "convbn_fmnist.textproto --run-dir " + run +
        " --set data.train_limit=960 --set data.test_limit=500 --set data.batch_size=48"
        " --set solver.max_steps=3 --set solver.base_lr=0.005"
        " --set net.layer[bn1].batch_norm.sync=" +
        sync + " --set net.layer[bn2].batch_norm.sync=" + sync + " > " + run + ".log 2>&1");
    ASSERT_EQ(r.exit_code, 0) << slurp(run + ".log");
  };
  convbn(1, "one", "true");
  convbn(2, "two", "true");
  EXPECT_LE(max_rel_diff(dir_ / "one", dir_ / "two"), 1e-5);
  // Without synchronization each rank normalises by its own half batch.
  convbn(2, "local", "false");
  EXPECT_GT(max_rel_diff(dir_ / "one", dir_ / "local"), 1e-3);
}

TEST_F(MpiTraining, RepeatsBitwise) {
  train(2, "a");
  train(2, "b");
  EXPECT_EQ(slurp(dir_ / "a/final_weights"), slurp(dir_ / "b/final_weights"));
}

TEST_F(MpiTraining, OverlappedBucketsEqualFusedBaseline) {
  train(2, "fused", "--set runtime.overlap_allreduce=false");
  // Buckets smaller than one layer, and one bucket larger than the model.
  train(2, "tiny", "--set runtime.bucket_mb=0.0001");
  train(2, "huge", "--set runtime.bucket_mb=100");
  const std::string fused = slurp(dir_ / "fused/final_weights");
  EXPECT_EQ(fused, slurp(dir_ / "tiny/final_weights"));
  EXPECT_EQ(fused, slurp(dir_ / "huge/final_weights"));
}

TEST_F(MpiTraining, AccumulationMatchesOneBigBatch) {
  train(1, "one");
  train(2, "accum", "--set solver.accumulate_steps=3");
  EXPECT_LE(max_rel_diff(dir_ / "one", dir_ / "accum"), 1e-5);
}

TEST_F(MpiTraining, FailingRankEndsTheJobNamingIt) {
  for (const char* fault : {"throw:1:3", "kill:1:3"}) {
    const auto r = run_command("DPTRAIN_FAULT=" + std::string(fault) + " " + mpiexec(3) +
                               lenet(dir_ / "fault"));
    EXPECT_NE(r.exit_code, 0) << fault;
    EXPECT_NE(r.exit_code, 124) << fault << ": the job hung until the timeout";
    const std::string log = r.output + slurp(dir_ / "fault.log");
    EXPECT_THAT(log, AnyOf(HasSubstr("rank 1: internal error: injected fault"),
                           HasSubstr("process rank 1")))
        << log;
    EXPECT_FALSE(std::filesystem::exists(dir_ / "fault/final_weights"));
    std::filesystem::remove_all(dir_ / "fault");
  }
}

TEST_F(MpiTraining, StalledRankEndsTheJobAfterTheTimeout) {
  const auto r = run_command("DPTRAIN_FAULT=hang:1:3 " + mpiexec(2) +
                             lenet(dir_ / "stall", "--set runtime.stall_timeout_s=3"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.exit_code, 124) << "the job hung until the timeout";
  EXPECT_THAT(slurp(dir_ / "stall.log"),
              HasSubstr("rank 0: waited 3 s in the gradient allreduce; another rank has stalled"));
}

TEST_F(MpiTraining, DefaultThreadsShareTheCoresAmongRanks) {
  const auto r = run_command(
      "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 300 mpiexec -np 2 "
      "--oversubscribe --bind-to none --mca mpi_yield_when_idle 1 -x OMP_NUM_THREADS= " +
      lenet(dir_ / "threads", "--set solver.max_steps=1"));
  ASSERT_EQ(r.exit_code, 0) << slurp(dir_ / "threads.log");
  const unsigned per_rank = std::max(1u, std::thread::hardware_concurrency() / 2);
  EXPECT_THAT(slurp(dir_ / "threads.log"),
              HasSubstr("2 rank(s) x " + std::to_string(per_rank) + " thread(s)"));
}

TEST_F(MpiTraining, BadDataOnOneRankEndsTheJobNamingIt) {
  // Rank 1 reads a truncated copy of the labels (MPMD launch).
  const std::string bad = dir_ / "bad";
  std::filesystem::create_directories(bad);
  for (const char* f :
       {"train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}) {
    std::filesystem::create_symlink(std::string("/usr/share/datasets/fashion-mnist/") + f,
                                    bad + "/" + f);
  }
  run_command("head -c 1000 /usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz > " + bad +
              "/train-labels-idx1-ubyte.gz");
  const std::string cfg = kConfigs + "lenet5_fmnist.textproto --set solver.max_steps=2";
  const auto r = run_command(
      "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 timeout 120 "
      "mpiexec --oversubscribe --bind-to none --mca mpi_yield_when_idle 1 -np 1 " +
      kBin + " train " + cfg + " --run-dir " + (dir_ / "run") + " : -np 1 " + kBin + " train " +
      cfg + " --run-dir " + (dir_ / "run") + " --set data.path=" + bad);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.exit_code, 124) << "the job hung until the timeout";
  EXPECT_THAT(r.output, HasSubstr("rank 1: "));
  EXPECT_THAT(r.output, HasSubstr("train-labels-idx1-ubyte.gz"));
}

// The event log: one line per event with time, rank and level; rank 0 only
// unless every rank is asked for; --log-level keeps what is at least as
// severe; a level that is none is a usage error.
TEST_F(MpiTraining, EventLogLinesCarryTimeRankAndLevel) {
  const std::regex line(
      R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z rank ([0-9]+) (error|warn|info|debug): )");
  auto ranks_and_levels = [&](const std::string& log) {
    std::set<std::string> seen;
    std::istringstream in(log);
    for (std::string l; std::getline(in, l);) {
      std::smatch m;
      if (std::regex_search(l, m, line)) seen.insert(m[1].str() + " " + m[2].str());
    }
    return seen;
  };
  train(2, "default");
  const std::string plain = slurp(dir_ / "default.log");
  EXPECT_THAT(plain, ::testing::HasSubstr("rank 0 info: training lenet5_fmnist: 2 rank(s)"));
  EXPECT_EQ(ranks_and_levels(plain), (std::set<std::string>{"0 info"})) << plain;

  train(2, "all", "--log-all-ranks --log-level debug");
  EXPECT_EQ(ranks_and_levels(slurp(dir_ / "all.log")),
            (std::set<std::string>{"0 info", "1 info", "0 debug", "1 debug"}));

  train(2, "quiet", "--log-level warn");
  EXPECT_TRUE(ranks_and_levels(slurp(dir_ / "quiet.log")).empty());

  const auto bad =
      run_command(kBin + " train " + kConfigs + "lenet5_fmnist.textproto --log-level loud 2>&1");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.output, ::testing::HasSubstr("--log-level"));
}

}  // namespace
}  // namespace dptrain::testing
