// dptrain-launch end to end: its command line (help, and every user error
// as one line and exit 2 before anything starts), signals and resume with
// a fake mpirun (tests/launcher/fake_mpirun.cc, through
// DPTRAIN_LAUNCH_MPIRUN), and with the real worker under mpirun: a config
// error only the worker can see is not restarted; a run finishes; a killed
// rank and a hung one are restarted from the last checkpoint (the hung
// job's whole session killed), and a run stopped by SIGTERM and resumed
// ends with the same weights as one never interrupted; a launcher killed
// outright leaves no worker behind (its session guard kills a stopped
// one), and its run resumes.
//
// Every launcher started here is killed, with its jobs' sessions, when
// the test ends, whatever the outcome; no time is asserted beyond
// generous bounds against hanging.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <regex>
#include <sstream>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "launcher/job_process.h"
#include "launcher/run_folder.h"
#include "tests/e2e/run_command.h"

namespace dptrain::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using Clock = std::chrono::steady_clock;

const std::string kLaunch = DPTRAIN_LAUNCH_BIN;
const std::string kWorker = DPTRAIN_BIN;
const std::string kConfig = std::string(DPTRAIN_SOURCE_DIR) + "/configs/lenet5_fmnist.textproto";
const std::vector<std::string> kSmall = {
    "--set", "data.train_limit=960", "--set", "data.batch_size=48", "--set", "solver.max_steps=10"};
// Ranks that yield when idle, as the MPI tests run them on two busy cores.
const std::vector<std::string> kYield = {"--mpirun-arg=--mca", "--mpirun-arg=mpi_yield_when_idle",
                                         "--mpirun-arg=1"};

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

// One dptrain-launch process, its stdout and stderr in files. Killed, with
// every job session its launcher.log names, when the object goes.
class LauncherProcess {
 public:
  LauncherProcess(const std::vector<std::string>& args, const std::filesystem::path& scratch,
                  const std::vector<std::string>& env = {}, std::string run_dir = "")
      : out_(scratch / ("out-" + std::to_string(++count_))),
        err_(scratch / ("err-" + std::to_string(count_))),
        run_dir_(std::move(run_dir)) {
    std::vector<std::string> argv = {kLaunch};
    argv.insert(argv.end(), args.begin(), args.end());
    pid_ = ::fork();
    if (pid_ == 0) {
      const int out = ::open(out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int err = ::open(err_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(out, 1);
      ::dup2(err, 2);
      for (const std::string& e : env) ::putenv(const_cast<char*>(e.c_str()));
      std::vector<char*> cargv;
      for (std::string& a : argv) cargv.push_back(a.data());
      cargv.push_back(nullptr);
      ::execv(cargv[0], cargv.data());
      ::_exit(127);
    }
  }
  ~LauncherProcess() {
    if (pid_ > 0 && code_ < 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (run_dir_.empty()) return;
    // The launcher kills its jobs itself; this is for when it could not.
    const std::regex started("mpirun pid ([0-9]+)");
    const std::string log = slurp(launcher::launcher_log_path(run_dir_));
    for (std::sregex_iterator m(log.begin(), log.end(), started), end; m != end; ++m) {
      launcher::kill_session(static_cast<pid_t>(std::stoi((*m)[1])), 5);
    }
  }
  LauncherProcess(const LauncherProcess&) = delete;
  LauncherProcess& operator=(const LauncherProcess&) = delete;

  void signal(int signo) const { ::kill(pid_, signo); }
  // The exit code, or -1 (and the process killed) if it outlasts `bound`.
  int wait(std::chrono::seconds bound = std::chrono::seconds(240)) {
    const auto deadline = Clock::now() + bound;
    while (code_ < 0) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        break;
      }
      if (Clock::now() > deadline) {
        ADD_FAILURE() << "dptrain-launch did not end within " << bound.count() << " s";
        signal(SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        code_ = -1;
        return code_;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return code_;
  }
  std::string out() const { return slurp(out_); }
  std::string err() const { return slurp(err_); }

 private:
  static inline int count_ = 0;
  std::filesystem::path out_, err_;
  std::string run_dir_;
  pid_t pid_ = -1;
  int code_ = -1;
};

bool eventually(const std::function<bool()>& p,
                std::chrono::seconds bound = std::chrono::seconds(60)) {
  const auto deadline = Clock::now() + bound;
  while (Clock::now() < deadline) {
    if (p()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return p();
}

LauncherSummary summary(const std::string& dir) {
  LauncherSummary s;
  EXPECT_TRUE(launcher::load_summary(dir, &s)) << "no summary in " << dir;
  return s;
}

std::vector<std::string> operator+(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

class LauncherCli : public ::testing::Test {
 protected:
  // Runs to the end; asserts nothing about the outcome.
  std::unique_ptr<LauncherProcess> launch(const std::vector<std::string>& args,
                                          const std::vector<std::string>& env = {},
                                          const std::string& run_dir = "") {
    auto p = std::make_unique<LauncherProcess>(args, dir_.path(), env, run_dir);
    p->wait();
    return p;
  }
  void expect_user_error(const std::vector<std::string>& args, const std::string& what,
                         const std::vector<std::string>& env = {}) {
    auto p = launch(args, env);
    const std::string joined = ::testing::PrintToString(args);
    EXPECT_EQ(p->wait(), 2) << joined << "\n" << p->err();
    EXPECT_EQ(p->out(), "") << joined;
    const auto err = lines(p->err());
    ASSERT_EQ(err.size(), 1u) << joined << "\n" << p->err();
    EXPECT_THAT(err[0], StartsWith("dptrain-launch: ")) << joined;
    EXPECT_THAT(err[0], HasSubstr(what)) << joined;
  }
  TempDir dir_;
};

TEST_F(LauncherCli, HelpExitsZero) {
  auto top = launch({"--help"});
  EXPECT_EQ(top->wait(), 0);
  EXPECT_THAT(top->out(), HasSubstr("run"));
  auto run = launch({"run", "--help"});
  EXPECT_EQ(run->wait(), 0);
  for (const char* flag : {"--np", "--hostfile", "--max-restarts", "--stall-timeout", "--run-dir",
                           "--listen", "--mpirun-arg", "--set", "--resume", "Exit codes"}) {
    EXPECT_THAT(run->out(), HasSubstr(flag));
  }
}

TEST_F(LauncherCli, UserErrorsAreOneLineAndExitTwoBeforeAnythingStarts) {
  const std::string run_dir = dir_ / "never";
  const auto with = [&](std::vector<std::string> extra) {
    return std::vector<std::string>{"run", "--run-dir", run_dir} + extra;
  };
  expect_user_error({}, "subcommand");
  expect_user_error({"run"}, "CONFIG");
  expect_user_error(with({"--bogus", kConfig, "--np", "2"}), "--bogus");
  expect_user_error(with({kConfig}), "--np");
  expect_user_error(with({"--np", "two", kConfig}), "--np");
  expect_user_error(with({"--np", "0", kConfig}), "--np");
  expect_user_error(with({"--np", "2", "--max-restarts", "-1", kConfig}), "--max-restarts");
  expect_user_error(with({"--np", "2", "--stall-timeout", "0", kConfig}), "--stall-timeout");
  expect_user_error(with({"--np", "2", dir_ / "missing.textproto"}), "missing.textproto");
  expect_user_error(with({"--np", "2", kConfig, "--set", "solver.nope=1"}), "nope");
  expect_user_error(with({"--np", "2", kConfig, "--set", "solver.base_lr=-1"}), "solver.base_lr");
  expect_user_error(with({"--np", "2", "--hostfile", dir_ / "no-hosts", kConfig}), "no-hosts");
  expect_user_error(with({"--np", "2", "--listen", "somewhere", kConfig}), "somewhere");
  expect_user_error({"run", "--resume", dir_ / "nothing-here"}, "nothing-here");
  EXPECT_FALSE(std::filesystem::exists(run_dir)) << "a user error started something";
}

TEST_F(LauncherCli, ResumeNeedsAnIntactLaunchSpecAndNothingElse) {
  const std::string run_dir = dir_ / "run";
  std::filesystem::create_directories(run_dir);
  expect_user_error({"run", "--resume", run_dir}, "launch.textproto is missing");
  std::ofstream(run_dir + "/launch.textproto") << "np: 2\nconfig: \"x\"\nnot_a_field: 3\n";
  expect_user_error({"run", "--resume", run_dir}, "launch.textproto:3:");
  expect_user_error({"run", "--resume", run_dir, "--np", "2"}, "--np");
  expect_user_error({"run", "--resume", run_dir, kConfig}, "CONFIG");
}

TEST_F(LauncherCli, RefusesAFolderThatHoldsALauncherRun) {
  const std::string run_dir = dir_ / "run";
  std::filesystem::create_directories(run_dir);
  std::ofstream(run_dir + "/launch.textproto") << "np: 1\n";
  expect_user_error({"run", "--np", "1", "--run-dir", run_dir, kConfig}, "--resume " + run_dir);
}

// With fake_mpirun standing in for mpirun and the worker.
class LauncherSignals : public LauncherCli {
 protected:
  std::vector<std::string> env() const {
    // The worker named is never run (the fake mpirun plays it), nor need
    // it be built (the ThreadSanitizer build has none).
    return {"DPTRAIN_LAUNCH_MPIRUN=" + std::string(FAKE_MPIRUN),
            "DPTRAIN_LAUNCH_WORKER=" + std::string(FAKE_MPIRUN)};
  }
  std::vector<std::string> args(const std::string& plan) const {
    return {"run",
            "--np",
            "2",
            "--run-dir",
            run_dir_,
            "--stall-timeout",
            "5",
            kConfig,
            "--mpirun-arg=--plan",
            "--mpirun-arg=" + plan};
  }
  bool logged(const std::string& what) const {
    return slurp(launcher::launcher_log_path(run_dir_)).find(what) != std::string::npos;
  }
  const std::string run_dir_ = dir_ / "run";
};

TEST_F(LauncherSignals, SigtermStopsTheRunAndResumeFinishesIt) {
  {
    LauncherProcess p(args("hello,step=2,wait-stop;hello=2,step=5,exit=0"), dir_.path(), env(),
                      run_dir_);
    ASSERT_TRUE(eventually([&] { return logged("starting -> running"); }));
    p.signal(SIGTERM);
    EXPECT_EQ(p.wait(), 75) << p.err();
    EXPECT_THAT(lines(p.err()).back(), HasSubstr("dptrain-launch run --resume " + run_dir_));
    EXPECT_EQ(summary(run_dir_).state(), "preempted");
  }
  LauncherProcess again({"run", "--resume", run_dir_}, dir_.path(), env(), run_dir_);
  EXPECT_EQ(again.wait(), 0) << again.err();
  EXPECT_THAT(again.out(), HasSubstr("dptrain-launch: done"));
  const LauncherSummary s = summary(run_dir_);
  EXPECT_EQ(s.state(), "done");
  EXPECT_EQ(s.starts(), 2);
  EXPECT_EQ(s.restarts(), 0);
  EXPECT_EQ(s.last_step(), 5);
  // Finished: a further resume has nothing to do.
  LauncherProcess third({"run", "--resume", run_dir_}, dir_.path(), env(), run_dir_);
  EXPECT_EQ(third.wait(), 0);
  EXPECT_THAT(third.out(), HasSubstr("already finished"));
}

TEST_F(LauncherSignals, OneLauncherPerRunFolder) {
  LauncherProcess p(args("hello,step=1,wait-stop"), dir_.path(), env(), run_dir_);
  ASSERT_TRUE(eventually([&] { return logged("starting -> running"); }));
  expect_user_error({"run", "--resume", run_dir_},
                    "another dptrain-launch is running in " + run_dir_, env());
  p.signal(SIGTERM);
  EXPECT_EQ(p.wait(), 75) << p.err();
}

TEST_F(LauncherSignals, SecondSigintKillsAJobThatWillNotStop) {
  LauncherProcess p(args("child,hello,step=1,hang-hard"), dir_.path(), env(), run_dir_);
  ASSERT_TRUE(eventually([&] { return logged("starting -> running"); }));
  p.signal(SIGINT);
  ASSERT_TRUE(eventually([&] { return logged("asked the worker to stop"); }));
  p.signal(SIGINT);
  EXPECT_EQ(p.wait(), 75) << p.err();
  pid_t child = 0;
  std::ifstream(run_dir_ + "/fake-child-1") >> child;
  ASSERT_GT(child, 0);
  EXPECT_TRUE(eventually([&] { return ::kill(child, 0) != 0; }, std::chrono::seconds(10)))
      << "a rank outlived the killed job";
}

// The real worker under mpirun.
class LauncherE2e : public LauncherCli {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists("/usr/share/datasets/fashion-mnist")) {
      GTEST_SKIP() << "dataset-fashion-mnist not installed";
    }
  }
  static std::vector<std::string> env() {
    return {"OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1", "OMP_NUM_THREADS=1"};
  }
  // 2 ranks, the small run, --stall-timeout 60 unless `extra` says otherwise.
  std::unique_ptr<LauncherProcess> train(const std::string& run_dir,
                                         const std::vector<std::string>& extra,
                                         const std::vector<std::string>& more_env = {}) {
    std::vector<std::string> args = {"run", "--np", "2", "--run-dir", run_dir, kConfig};
    if (std::find(extra.begin(), extra.end(), "--stall-timeout") == extra.end()) {
      args = args + std::vector<std::string>{"--stall-timeout", "60"};
    }
    return launch(args + kSmall + kYield + extra, env() + more_env, run_dir);
  }
  // The job in `run_dir`, once it runs: its mpirun's pid (0 if it never ran).
  static pid_t running_job(const std::string& run_dir) {
    std::smatch m;
    const std::regex started("mpirun pid ([0-9]+)");
    std::string log;
    const bool ran = eventually([&] {
      log = slurp(launcher::launcher_log_path(run_dir));
      return log.find("starting -> running") != std::string::npos &&
             std::regex_search(log, m, started);
    });
    return ran ? static_cast<pid_t>(std::stoi(m[1])) : 0;
  }
  // The longer run (below) in `run_dir`, started in the background;
  // `extra` flags go before the small run's.
  std::unique_ptr<LauncherProcess> start_longer(const std::string& run_dir,
                                                const std::vector<std::string>& extra = {}) {
    return std::make_unique<LauncherProcess>(
        std::vector<std::string>{"run", "--np", "2", "--run-dir", run_dir, kConfig} + extra +
            kSmall + kYield + longer_,
        dir_.path(), env(), run_dir);
  }
  // 600 steps without evaluations: a few seconds, long enough to stop mid-run.
  const std::vector<std::string> longer_ = {"--set", "solver.epochs=30",
                                            "--set", "solver.max_steps=600",
                                            "--set", "runtime.eval_every_epochs=0"};
};

TEST_F(LauncherE2e, AConfigErrorOnlyTheWorkerSeesIsNotRestarted) {
  // Valid as a config; the net builder finds the kernel larger than the image.
  const std::string run_dir = dir_ / "bad";
  auto p = train(run_dir, {"--set", "net.layer[conv1].convolution.kernel_size=40"});
  EXPECT_EQ(p->wait(), 2) << p->err();
  const auto err = lines(p->err());
  ASSERT_GE(err.size(), 2u) << p->err();
  EXPECT_THAT(err[err.size() - 2], StartsWith("dptrain: "));
  EXPECT_THAT(err[err.size() - 2], HasSubstr("kernel"));
  EXPECT_THAT(err.back(), StartsWith("dptrain-launch: failed: the worker reported a user error"));
  const LauncherSummary s = summary(run_dir);
  EXPECT_EQ(s.starts(), 1);
  EXPECT_EQ(s.restarts(), 0);
  EXPECT_EQ(s.state(), "failed");
  EXPECT_EQ(s.exit_code(), 2);
}

TEST_F(LauncherE2e, TrainsToTheEnd) {
  const std::string run_dir = dir_ / "plain";
  auto p = train(run_dir, {});
  ASSERT_EQ(p->wait(), 0) << p->err() << slurp(run_dir + "/worker.log");
  // It ends with the run's report.
  const auto out = lines(p->out());
  ASSERT_GE(out.size(), 2u);
  EXPECT_THAT(out[out.size() - 2], HasSubstr("dptrain-launch: done"));
  EXPECT_EQ(out.back(), "report: " + run_dir + "/report.html");
  EXPECT_THAT(slurp(run_dir + "/report.html"), HasSubstr("\"launcher\""));
  const LauncherSummary s = summary(run_dir);
  EXPECT_EQ(s.state(), "done");
  EXPECT_EQ(s.starts(), 1);
  EXPECT_EQ(s.last_step(), 10);
  EXPECT_TRUE(std::filesystem::exists(run_dir + "/final_weights"));
  EXPECT_THAT(slurp(launcher::launcher_log_path(run_dir)), HasSubstr("worker connected"));
}

TEST_F(LauncherE2e, AKilledRankIsRestartedFromItsCheckpointWithTheSameResult) {
  const std::vector<std::string> every2 = {"--set", "checkpoint.every_steps=2"};
  const std::string plain = dir_ / "plain", faulty = dir_ / "faulty";
  auto a = train(plain, every2);
  ASSERT_EQ(a->wait(), 0) << a->err();
  auto b = train(faulty, every2, {"DPTRAIN_FAULT=kill:1:5"});
  ASSERT_EQ(b->wait(), 0) << b->err() << slurp(faulty + "/worker.log");
  const LauncherSummary s = summary(faulty);
  EXPECT_EQ(s.starts(), 2);
  EXPECT_EQ(s.restarts(), 1);
  ASSERT_EQ(s.causes_size(), 1);
  EXPECT_EQ(s.last_step(), 10);
  const auto diff = run_command(kWorker + " diff-weights " + plain + "/final_weights " + faulty +
                                "/final_weights --tolerance 0");
  EXPECT_EQ(diff.exit_code, 0) << diff.output;
}

TEST_F(LauncherE2e, AHungRankIsAStallItsWholeJobIsKilledAndRestarted) {
  const std::string run_dir = dir_ / "hung";
  // Rank 1 hangs at step 5; rank 0 then waits in the allreduce and falls silent.
  auto p = train(run_dir, {"--stall-timeout", "3", "--set", "checkpoint.every_steps=2"},
                 {"DPTRAIN_FAULT=hang:1:5"});
  ASSERT_EQ(p->wait(), 0) << p->err() << slurp(run_dir + "/worker.log");
  const LauncherSummary s = summary(run_dir);
  EXPECT_GE(s.restarts(), 1);
  ASSERT_GE(s.causes_size(), 1);
  EXPECT_THAT(s.causes(0), HasSubstr("stalled"));
  EXPECT_EQ(s.last_step(), 10);
  // No process of any of its jobs is left.
  const std::string log = slurp(launcher::launcher_log_path(run_dir));
  const std::regex started("mpirun pid ([0-9]+)");
  int jobs = 0;
  for (std::sregex_iterator m(log.begin(), log.end(), started), end; m != end; ++m, ++jobs) {
    EXPECT_THAT(launcher::session_processes(static_cast<pid_t>(std::stoi((*m)[1]))),
                ::testing::IsEmpty());
  }
  EXPECT_GE(jobs, 2);
}

TEST_F(LauncherE2e, SigtermCheckpointsAndTheResumedRunEndsWithTheSameWeights) {
  // The launcher signals as soon as the worker has said hello.
  const std::string plain = dir_ / "plain", stopped = dir_ / "stopped";
  auto a = train(plain, longer_);
  ASSERT_EQ(a->wait(), 0) << a->err();
  {
    auto p = start_longer(stopped);
    ASSERT_GT(running_job(stopped), 0) << "the job never ran";
    p->signal(SIGTERM);
    ASSERT_EQ(p->wait(), 75) << p->err() << slurp(stopped + "/worker.log");
    EXPECT_EQ(summary(stopped).state(), "preempted");
    EXPECT_LT(summary(stopped).last_step(), 600);
  }
  LauncherProcess resumed({"run", "--resume", stopped}, dir_.path(), env(), stopped);
  ASSERT_EQ(resumed.wait(), 0) << resumed.err() << slurp(stopped + "/worker.log");
  const LauncherSummary s = summary(stopped);
  EXPECT_EQ(s.starts(), 2);
  EXPECT_EQ(s.restarts(), 0);
  EXPECT_EQ(s.last_step(), 600);
  const auto diff = run_command(kWorker + " diff-weights " + plain + "/final_weights " + stopped +
                                "/final_weights --tolerance 0");
  EXPECT_EQ(diff.exit_code, 0) << diff.output;
}

TEST_F(LauncherE2e, AKilledLauncherLeavesNoWorkerAndItsRunResumes) {
  const std::string plain = dir_ / "plain", orphaned = dir_ / "orphaned";
  auto a = train(plain, longer_);
  ASSERT_EQ(a->wait(), 0) << a->err();
  pid_t mpirun = 0;
  {
    auto p = start_longer(orphaned);
    mpirun = running_job(orphaned);
    ASSERT_GT(mpirun, 0) << "the job never ran";
    p->signal(SIGKILL);
    EXPECT_EQ(p->wait(), 128 + SIGKILL);
    // The workers see the channel close, checkpoint and exit.
    EXPECT_TRUE(eventually([&] { return launcher::session_processes(mpirun).empty(); },
                           std::chrono::seconds(20)))
        << "workers outlived their launcher\n"
        << slurp(orphaned + "/worker.log");
  }
  EXPECT_THAT(slurp(orphaned + "/worker.log"), HasSubstr("closed the control channel"));
  EXPECT_TRUE(std::filesystem::exists(orphaned + "/LATEST"));
  LauncherProcess resumed({"run", "--resume", orphaned}, dir_.path(), env(), orphaned);
  ASSERT_EQ(resumed.wait(), 0) << resumed.err() << slurp(orphaned + "/worker.log");
  const auto diff = run_command(kWorker + " diff-weights " + plain + "/final_weights " + orphaned +
                                "/final_weights --tolerance 0");
  EXPECT_EQ(diff.exit_code, 0) << diff.output;
}

TEST_F(LauncherE2e, AStoppedRankOfAKilledLauncherIsKilledByItsSessionGuard) {
  // The stopped rank never sees the channel close, and mpirun waits for
  // it; the guard ends the job once the grace (the stall timeout) is over.
  const std::string run_dir = dir_ / "stopped";
  pid_t mpirun = 0;
  {
    auto p = start_longer(run_dir, {"--stall-timeout", "2"});
    mpirun = running_job(run_dir);
    ASSERT_GT(mpirun, 0) << "the job never ran";
    pid_t rank = 0;
    for (pid_t pid : launcher::session_processes(mpirun)) {
      if (slurp("/proc/" + std::to_string(pid) + "/comm") == "dptrain\n") rank = pid;
    }
    ASSERT_GT(rank, 0) << "no rank in job session " << mpirun;
    ::kill(rank, SIGSTOP);
    p->signal(SIGKILL);
    EXPECT_EQ(p->wait(), 128 + SIGKILL);
    EXPECT_TRUE(eventually([&] { return launcher::session_processes(mpirun).empty(); },
                           std::chrono::seconds(30)))
        << "a stopped rank outlived its launcher\n"
        << slurp(run_dir + "/worker.log");
  }
  EXPECT_THAT(slurp(launcher::launcher_log_path(run_dir)),
              HasSubstr("session guard: the launcher is gone and job session " +
                        std::to_string(mpirun) + " had not ended 2 s later; killing it"));
  // The guard released the folder: the run resumes and finishes.
  LauncherProcess resumed({"run", "--resume", run_dir}, dir_.path(), env(), run_dir);
  ASSERT_EQ(resumed.wait(), 0) << resumed.err() << slurp(run_dir + "/worker.log");
  EXPECT_EQ(summary(run_dir).last_step(), 600);
}

// What a person sees on a terminal: one status line rewritten in place
// (epoch, step, loss, accuracy, images/s, ETA, restarts), under tmux.
TEST_F(LauncherE2e, OnATerminalTheStatusLineIsRewrittenInPlace) {
  const std::string socket = "dptrain-test-" + std::to_string(::getpid());
  const std::string tmux = "tmux -L " + socket + " ";
  struct KillServer {
    std::string tmux;
    ~KillServer() { run_command(tmux + "kill-server"); }
  } kill_server{tmux};
  const std::string run_dir = dir_ / "tty";
  std::string command =
      "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 " + kLaunch +
      " run --np 2 --run-dir " + run_dir + " " + kConfig;
  for (const auto& a : kSmall + kYield) command += " " + a;
  command +=
      " --set solver.epochs=200 --set solver.max_steps=3000 --set runtime.eval_every_epochs=0; "
      "sleep 60";
  ASSERT_EQ(run_command(tmux + "new-session -d -x 150 -y 30 '" + command + "'").exit_code, 0);
  auto pane = [&] { return run_command(tmux + "capture-pane -p").output; };
  const std::regex status(
      "epoch [0-9]+  step [0-9]+/3000  loss [0-9.]+  acc [0-9.]+%  [0-9]+ img/s  ETA [-0-9:]+  "
      "restarts 0");
  std::string seen;
  EXPECT_TRUE(eventually([&] {
    seen = pane();
    return std::regex_search(seen, status);
  })) << seen;
  // 3000 steps: long on a loaded machine, so a generous bound.
  ASSERT_TRUE(eventually(
      [&] {
        seen = pane();
        return seen.find("dptrain-launch: done") != std::string::npos;
      },
      std::chrono::seconds(240)))
      << seen;
  // The live line was rewritten, not repeated: no step line is left behind.
  EXPECT_FALSE(std::regex_search(seen, status)) << seen;
  EXPECT_THAT(seen, HasSubstr("run folder " + run_dir));
}

}  // namespace
}  // namespace dptrain::testing
