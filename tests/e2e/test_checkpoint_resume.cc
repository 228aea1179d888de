// Checkpoints and resume, end to end: a run stopped anywhere and resumed
// ends bitwise where the uninterrupted run ends (same rank count), follows
// the same trajectory on another rank count, survives damaged checkpoints
// and a kill in the middle of writing one, refuses a config that would
// change the result, and stops cleanly on SIGUSR1 and SIGTERM. Also
// fine-tuning from trained weights.
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/e2e/run_command.h"

namespace dptrain::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

const std::string kBin = DPTRAIN_BIN;
const std::string kSource = DPTRAIN_SOURCE_DIR;
const std::string kBnDropout = kSource + "/tests/e2e/configs/resume_bn_dropout.textproto";
const std::string kDropout = kSource + "/tests/e2e/configs/resume_dropout.textproto";

// Command prefixes: one process, or `ranks` under mpiexec; one thread each.
// Without run_command.h's `timeout`, so that a signal sent to the job
// reaches mpiexec itself (train() puts the time limit outside).
const std::string kOne = "env OMP_NUM_THREADS=1 ";
std::string mpiexec_signalable(int ranks) {
  return "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 "
         "mpiexec -np " +
         std::to_string(ranks) + " --oversubscribe --bind-to none --mca mpi_yield_when_idle 1 ";
}

std::string train(const std::string& config, const std::string& dir, const std::string& extra = "",
                  const std::string& prefix = kOne) {
  return "timeout 300 " + prefix + kBin + " train " + config + " --run-dir " + dir + " " + extra;
}

double max_rel_diff(const std::string& a, const std::string& b) {
  return dptrain::testing::max_rel_diff(kBin, a, b);
}

// Whole files compared, without printing megabytes of bytes on failure.
bool same_bytes(const std::string& a, const std::string& b) {
  return fs::exists(a) && slurp(a) == slurp(b);
}

// Each record's kind and step, in order: what "reads as one run" compares.
std::vector<std::string> record_steps(const std::string& path) {
  std::vector<std::string> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    const auto kind = line.substr(9, 5);
    const auto at = line.find("\"step\":");
    out.push_back(kind + line.substr(at + 7, line.find(',', at) - at - 7));
  }
  return out;
}

class Resume : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists("/usr/share/datasets/fashion-mnist"))
      GTEST_SKIP() << "dataset-fashion-mnist not installed";
  }
  // The uninterrupted run, once per config and options.
  std::string reference(const std::string& config, const std::string& extra = "") {
    const std::string dir = dir_ / "reference";
    const auto r = run_command(train(config, dir, extra));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return dir;
  }
  TempDir dir_;
};

TEST_F(Resume, MidEpochResumeIsBitwiseWithMomentumDropoutAugmentationAndBatchNorm) {
  const std::string ref = reference(kBnDropout);
  const std::string run = dir_ / "run";
  auto stopped = run_command(train(kBnDropout, run, "--stop-at-step 27"));
  ASSERT_EQ(stopped.exit_code, 75) << stopped.output;
  EXPECT_TRUE(fs::exists(run + "/ckpt-000000027"));
  EXPECT_EQ(slurp(run + "/LATEST"), "ckpt-000000027\n");
  EXPECT_FALSE(fs::exists(run + "/final_weights"));
  const auto resumed = run_command(train(kBnDropout, run, "--resume"));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_THAT(resumed.output, HasSubstr("resuming at step 27"));
  EXPECT_TRUE(same_bytes(run + "/final_weights", ref + "/final_weights"));
  // The records read as one run: the same kinds at the same steps, and the
  // wall time carries on.
  EXPECT_EQ(record_steps(run + "/metrics.jsonl"), record_steps(ref + "/metrics.jsonl"));
  double last = 0;
  std::ifstream in(run + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const double t = std::stod(line.substr(line.find("\"wall_time\":") + 12));
    EXPECT_GE(t, last) << line;
    last = t;
  }
}

TEST_F(Resume, AdamWResumesBitwiseOnTwoRanks) {
  const std::string adamw = "--set solver.type=ADAMW --set solver.base_lr=0.002";
  const std::string ref = dir_ / "reference";
  ASSERT_EQ(run_command(train(kBnDropout, ref, adamw, mpiexec_signalable(2))).exit_code, 0);
  const std::string run = dir_ / "run";
  ASSERT_EQ(run_command(train(kBnDropout, run, adamw + " --stop-at-step 13", mpiexec_signalable(2)))
                .exit_code,
            75);
  const auto resumed =
      run_command(train(kBnDropout, run, adamw + " --resume", mpiexec_signalable(2)));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_TRUE(same_bytes(run + "/final_weights", ref + "/final_weights"));
}

TEST_F(Resume, AnotherRankCountFollowsTheSameTrajectory) {
  // Stopped at step 10 on 2 ranks; 10 more steps on 1 and on 4 ranks match
  // 20 uninterrupted steps on 1 within what N ranks match one by.
  const std::string limit = "--set solver.max_steps=20";
  const std::string ref = reference(kDropout, limit);
  const std::string stopped = dir_ / "stopped";
  ASSERT_EQ(
      run_command(train(kDropout, stopped, limit + " --stop-at-step 10", mpiexec_signalable(2)))
          .exit_code,
      75);
  for (int ranks : {1, 4}) {
    const std::string run = dir_ / ("on" + std::to_string(ranks));
    fs::create_directories(run);
    fs::copy_file(stopped + "/ckpt-000000010", run + "/ckpt-000000010");
    const auto r =
        run_command(train(kDropout, run, limit + " --resume", mpiexec_signalable(ranks)));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_LE(max_rel_diff(run + "/final_weights", ref + "/final_weights"), 1e-5)
        << ranks << " ranks";
  }
}

class DamagedCheckpoints : public Resume {
 protected:
  // Checkpoints at steps 5, 10 and 15; the run stops at 15.
  void SetUp() override {
    Resume::SetUp();
    if (IsSkipped()) return;
    ref_ = reference(kBnDropout, kEvery5);
    ASSERT_EQ(run_command(train(kBnDropout, run_, kEvery5 + " --stop-at-step 15")).exit_code, 75);
    ASSERT_TRUE(fs::exists(run_ + "/ckpt-000000005"));
  }
  // Resumes, expects the damaged newest one named with `why`, and the run
  // to end where the reference ends (it went on from step 10).
  void expect_resume_skips_newest(const std::string& why) {
    const auto r = run_command(train(kBnDropout, run_, kEvery5 + " --resume"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_THAT(r.output, HasSubstr("skipping ckpt-000000015: checkpoint " + why));
    EXPECT_THAT(r.output, HasSubstr("resuming at step 10"));
    EXPECT_TRUE(same_bytes(run_ + "/final_weights", ref_ + "/final_weights"));
  }
  void rewrite_newest(const std::function<void(std::string&)>& damage) {
    std::string bytes = slurp(run_ + "/ckpt-000000015");
    damage(bytes);
    std::ofstream(run_ + "/ckpt-000000015", std::ios::binary | std::ios::trunc) << bytes;
  }
  const std::string kEvery5 = "--set checkpoint.every_steps=5";
  std::string ref_;
  std::string run_ = dir_ / "run";
};

TEST_F(DamagedCheckpoints, TruncatedIsNamedAndThePreviousUsed) {
  rewrite_newest([](std::string& b) { b.resize(b.size() / 2); });
  expect_resume_skips_newest("truncated");
}

TEST_F(DamagedCheckpoints, FlippedByteIsNamedAndThePreviousUsed) {
  rewrite_newest([](std::string& b) { b[b.size() / 2] ^= 0x10; });
  expect_resume_skips_newest("checksum mismatch");
}

TEST_F(DamagedCheckpoints, UnknownVersionIsNamedAndThePreviousUsed) {
  rewrite_newest([](std::string& b) { b[8] = 9; });
  expect_resume_skips_newest("format version 9 is unknown");
}

TEST_F(DamagedCheckpoints, NoGoodCheckpointIsAClearError) {
  for (const char* name : {"ckpt-000000005", "ckpt-000000010", "ckpt-000000015"}) {
    std::ofstream(run_ + "/" + name, std::ios::binary | std::ios::trunc) << "DPTRCKPT";
  }
  const auto r = run_command(train(kBnDropout, run_, kEvery5 + " --resume"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("no good checkpoint in " + run_));
}

TEST_F(DamagedCheckpoints, AConfigThatChangesTheResultIsRefusedNamingTheField) {
  const auto r =
      run_command(train(kBnDropout, run_, kEvery5 + " --resume --set solver.base_lr=0.05"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("base_lr"));
  // Logging and checkpoint cadence do not change the result.
  const auto ok = run_command(
      train(kBnDropout, run_, "--resume --set runtime.log_every_steps=7 --set checkpoint.keep=2"));
  ASSERT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_TRUE(same_bytes(run_ + "/final_weights", ref_ + "/final_weights"));
  int kept = 0;
  for (const auto& e : fs::directory_iterator(run_))
    kept += e.path().filename().string().rfind("ckpt-", 0) == 0;
  EXPECT_EQ(kept, 2);
}

TEST_F(Resume, KillBetweenWritingAndRenamingLeavesNoTornCheckpoint) {
  const std::string every5 = "--set checkpoint.every_steps=5";
  const std::string ref = reference(kBnDropout, every5);
  const std::string run = dir_ / "run";
  const auto killed = run_command(
      train(kBnDropout, run, every5, "env DPTRAIN_FAULT=ckpt_kill:0:10 OMP_NUM_THREADS=1 "));
  ASSERT_EQ(killed.exit_code, 128 + SIGKILL) << killed.output;
  EXPECT_TRUE(fs::exists(run + "/ckpt-000000010.tmp"));
  EXPECT_FALSE(fs::exists(run + "/ckpt-000000010"));
  EXPECT_EQ(slurp(run + "/LATEST"), "ckpt-000000005\n");
  // Every file named as a checkpoint is whole.
  for (const auto& e : fs::directory_iterator(run)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("ckpt-", 0) == 0 && e.path().extension() != ".tmp") {
      EXPECT_EQ(run_command(kBin + " diff-weights " + e.path().string() + " " + e.path().string())
                    .exit_code,
                0)
          << name;
    }
  }
  const auto resumed = run_command(train(kBnDropout, run, every5 + " --resume"));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_THAT(resumed.output, HasSubstr("resuming at step 5"));
  EXPECT_FALSE(fs::exists(run + "/ckpt-000000010.tmp"));
  EXPECT_TRUE(same_bytes(run + "/final_weights", ref + "/final_weights"));
}

TEST_F(Resume, ResumeWithoutCheckpointStartsFreshAndAFinishedRunIsLeftAlone) {
  const std::string ref = reference(kBnDropout);
  const std::string run = dir_ / "run";
  const auto fresh = run_command(train(kBnDropout, run, "--resume"));
  ASSERT_EQ(fresh.exit_code, 0) << fresh.output;
  EXPECT_TRUE(same_bytes(run + "/final_weights", ref + "/final_weights"));
  const auto again = run_command(train(kBnDropout, run, "--resume"));
  EXPECT_EQ(again.exit_code, 0) << again.output;
  EXPECT_THAT(again.output, HasSubstr("finished run"));
}

TEST_F(Resume, WallTimeTriggerIsAgreedByEveryRank) {
  const std::string ref = dir_ / "reference";
  ASSERT_EQ(run_command(train(kBnDropout, ref, "", mpiexec_signalable(2))).exit_code, 0);
  const std::string run = dir_ / "run";
  const auto r = run_command(
      train(kBnDropout, run, "--set checkpoint.every_epochs=0 --set checkpoint.every_seconds=0.01",
            mpiexec_signalable(2)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(fs::exists(run + "/LATEST"));
  EXPECT_TRUE(same_bytes(run + "/final_weights", ref + "/final_weights"));
}

// Signals: the job checkpoints at the next step and exits 75; resumed, it
// ends bitwise where the uninterrupted run ends.
void expect_signal_stops_and_resumes(const std::string& prefix, int sig, TempDir& dir) {
  const std::string long_run = "--set solver.epochs=30";
  const std::string ref = dir / "reference";
  ASSERT_EQ(run_command(train(kBnDropout, ref, long_run, prefix)).exit_code, 0);
  const std::string run = dir / "run";
  Background job(prefix + kBin + " train " + kBnDropout + " --run-dir " + run + " " + long_run +
                 " > " + run + ".log 2>&1");
  ASSERT_TRUE(wait_for(
      [&] { return slurp(run + "/metrics.jsonl").find("\"train\"") != std::string::npos; }, 60))
      << slurp(run + ".log");
  job.signal(sig);
  ASSERT_EQ(job.wait(60), 75) << slurp(run + ".log");
  EXPECT_THAT(slurp(run + ".log"), HasSubstr("stopped at step"));
  ASSERT_EQ(run_command(train(kBnDropout, run, long_run + " --resume", prefix)).exit_code, 0);
  EXPECT_TRUE(same_bytes(run + "/final_weights", ref + "/final_weights"));
}

TEST_F(Resume, SigtermStopsWithACheckpoint) {
  expect_signal_stops_and_resumes(kOne, SIGTERM, dir_);
}

TEST_F(Resume, Sigusr1ToMpirunStopsEveryRankWithACheckpoint) {
  expect_signal_stops_and_resumes(mpiexec_signalable(2), SIGUSR1, dir_);
}

TEST_F(Resume, FineTuningStartsFromTrainedWeights) {
  const std::string lenet = kSource + "/configs/lenet5_fmnist.textproto";
  const std::string base =
      "--set data.train_limit=6000 --set data.test_limit=2000 --set solver.epochs=1";
  const std::string trained = dir_ / "trained";
  ASSERT_EQ(run_command(train(lenet, trained, base)).exit_code, 0);
  auto accuracy = [](const std::string& dir) {
    const std::string m = slurp(dir + "/metrics.jsonl");
    const auto at = m.rfind("\"test_accuracy\":");
    return at == std::string::npos ? 0.0 : std::stod(m.substr(at + 16));
  };
  const double before = accuracy(trained);
  ASSERT_GT(before, 0.6);
  // A few steps at a low rate keep it near where it was...
  const std::string tune = base + " --set solver.max_steps=5 --set solver.base_lr=0.001";
  const std::string tuned = dir_ / "tuned";
  const auto r =
      run_command(train(lenet, tuned, tune + " --init-weights " + trained + "/final_weights"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NEAR(accuracy(tuned), before, 0.03);
  // ...from a checkpoint too, with a new last layer for a changed head.
  const std::string fresh_head = dir_ / "fresh_head";
  const auto head = run_command(train(
      lenet, fresh_head, tune + " --init-weights " + trained + "/final_weights --reinit fc3"));
  ASSERT_EQ(head.exit_code, 0) << head.output;
  EXPECT_GT(max_rel_diff(fresh_head + "/final_weights", tuned + "/final_weights"), 0.1);
  // A renamed layer is a missing tensor, named, unless it is reinitialised.
  const std::string renamed = "--set net.layer[fc3].name=out";
  const auto missing =
      run_command(train(lenet, dir_ / "missing",
                        tune + " " + renamed + " --init-weights " + trained + "/final_weights"));
  EXPECT_EQ(missing.exit_code, 2) << missing.output;
  EXPECT_THAT(missing.output, HasSubstr("no tensor 'out.weight'"));
  EXPECT_THAT(missing.output, HasSubstr("--reinit out"));
  const auto reinit = run_command(
      train(lenet, dir_ / "reinit",
            tune + " " + renamed + " --init-weights " + trained + "/final_weights --reinit out"));
  EXPECT_EQ(reinit.exit_code, 0) << reinit.output;
}

// A run folder on a full disk: the checkpoint that does not fit fails
// with the reason, leaves no temporary behind, and the previous ones and
// LATEST stay as they were; the run goes on, and the end says why
// final_weights could not be written. A 1.2 MB tmpfs holds two LeNet-5
// checkpoints (0.5 MB each) and not a third.
TEST_F(Resume, AFullDiskFailsTheCheckpointCleanlyAndKeepsThePreviousOnes) {
  const std::string mount = dir_ / "full";
  fs::create_directories(mount);
  if (run_command("mount -t tmpfs -o size=1200k tmpfs " + mount + " 2>&1").exit_code != 0)
    GTEST_SKIP() << "cannot mount a small tmpfs here (needs root)";
  struct Unmount {
    std::string at;
    ~Unmount() { run_command("umount " + at); }
  } unmount{mount};
  const std::string run = mount + "/run";
  const auto r = run_command(train(kSource + "/configs/lenet5_fmnist.textproto", run,
                                   "--set data.train_limit=2000 --set data.test_limit=500 "
                                   "--set solver.epochs=1 --set checkpoint.every_steps=10") +
                             " 2>&1");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("checkpoint not written: cannot write " + run +
                                  "/ckpt-000000030.tmp: No space left on device (the previous "
                                  "ones are kept)"));
  EXPECT_THAT(r.output, HasSubstr("dptrain: cannot write " + run + "/final_weights.tmp: No space"));
  EXPECT_EQ(slurp(run + "/LATEST"), "ckpt-000000020\n");
  for (const auto& e : fs::directory_iterator(run))
    EXPECT_NE(e.path().extension(), ".tmp") << e.path();
  // The kept checkpoints are whole: a resume elsewhere starts from step 20.
  const std::string copy = dir_ / "copy";
  fs::create_directories(copy);
  for (const char* f : {"ckpt-000000010", "ckpt-000000020", "LATEST"})
    fs::copy_file(run + "/" + f, copy + "/" + f);
  const auto resumed = run_command(train(kSource + "/configs/lenet5_fmnist.textproto", copy,
                                         "--set data.train_limit=2000 --set data.test_limit=500 "
                                         "--set solver.epochs=1 --resume") +
                                   " 2>&1");
  EXPECT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_THAT(resumed.output, HasSubstr("resumed at step 20"));
}

}  // namespace
}  // namespace dptrain::testing
