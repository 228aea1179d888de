// The supervisor on a fake job: fake_mpirun stands in for mpirun and the
// worker, following a plan per start (see fake_mpirun.cc), so each
// transition is driven for real through a process, its exit and the
// control channel, without MPI or training. Checked: restart counts and
// causes, no restart on exit 2, resume on 75, back-off, stall detection
// before and after the hello, stop and kill on request, the environment
// each start gets, and that no process of a job outlives it. No time is
// asserted except generous bounds against hanging.
#include <signal.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include "launcher/job_process.h"
#include "launcher/run_folder.h"
#include "launcher/supervisor.h"
#include "tests/e2e/run_command.h"

namespace dptrain::launcher {
namespace {

using dptrain::testing::slurp;
using dptrain::testing::TempDir;
using ::testing::HasSubstr;

bool alive(pid_t pid) {
  if (::kill(pid, 0) != 0) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  const auto close = line.rfind(')');
  return close != std::string::npos && line.size() > close + 2 && line[close + 2] != 'Z';
}

class LauncherSupervisor : public ::testing::Test {
 protected:
  ~LauncherSupervisor() override {
    // Whatever happened, nothing a test started lives on.
    for (pid_t sid : sessions_) kill_session(sid, 5);
    for (pid_t pid : children()) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, WNOHANG);
    }
    if (null_) std::fclose(null_);
  }

  Supervisor::Options options(const std::string& plan, int max_restarts = 3, double stall_s = 5) {
    Supervisor::Options o;
    o.launch.set_config(std::string(DPTRAIN_SOURCE_DIR) + "/configs/lenet5_fmnist.textproto");
    o.launch.set_np(2);
    o.launch.set_max_restarts(max_restarts);
    o.launch.set_stall_timeout_s(static_cast<float>(stall_s));
    o.launch.set_run_dir(dir_.path().string());
    o.launch.add_mpirun_arg("--plan");
    o.launch.add_mpirun_arg(plan);
    o.mpirun = FAKE_MPIRUN;
    o.worker = "/nonexistent/dptrain";  // fake_mpirun never runs it
    o.startup_allowance_s = 0.5;
    o.backoff_initial_s = 0.05;
    o.backoff_max_s = 0.2;
    o.kill_grace_s = 0.3;
    o.handle_signals = false;
    if (!null_) null_ = std::fopen("/dev/null", "w");
    o.out = o.err = null_;
    return o;
  }

  // Runs to the end, with a guard against hanging that stops, then kills.
  int run(Supervisor& s) {
    s.on_transition = [this, &s, user = s.on_transition](SupervisorState from, SupervisorState to,
                                                         const std::string& cause) {
      transitions_.push_back(std::string(state_name(from)) + "->" + state_name(to));
      if (s.job_session() != 0) sessions_.insert(s.job_session());
      if (user) user(from, to, cause);
    };
    boost::asio::steady_timer guard(s.io());
    guard.expires_after(std::chrono::seconds(60));
    guard.async_wait([&](const boost::system::error_code& ec) {
      if (ec) return;
      ADD_FAILURE() << "the supervisor hung";
      s.signal(SIGTERM);
      s.signal(SIGTERM);
    });
    // Sessions are recorded as soon as a start is logged, for the guard above.
    const int code = s.run();
    return code;
  }

  std::vector<pid_t> children() const {
    std::vector<pid_t> pids;
    for (const auto& e : std::filesystem::directory_iterator(dir_.path())) {
      if (e.path().filename().string().rfind("fake-child-", 0) == 0) {
        pid_t pid = 0;
        std::ifstream(e.path()) >> pid;
        if (pid > 0) pids.push_back(pid);
      }
    }
    return pids;
  }

  std::string launcher_log() const { return slurp(launcher_log_path(dir_.path().string())); }
  std::string file(const std::string& name) const { return slurp(dir_.path() / name); }

  TempDir dir_;
  std::FILE* null_ = nullptr;
  std::set<pid_t> sessions_;
  std::vector<std::string> transitions_;
};

TEST_F(LauncherSupervisor, FinishesOnExitZero) {
  Supervisor s(options("hello,step=5,exit=0"));
  EXPECT_EQ(run(s), 0);
  EXPECT_EQ(s.state(), SupervisorState::kDone);
  const LauncherSummary& sum = s.summary();
  EXPECT_EQ(sum.state(), "done");
  EXPECT_EQ(sum.starts(), 1);
  EXPECT_EQ(sum.restarts(), 0);
  EXPECT_EQ(sum.last_step(), 5);
  EXPECT_EQ(sum.exit_code(), 0);
  EXPECT_THAT(transitions_, ::testing::ElementsAre("starting->running", "running->done"));
  LauncherSummary on_disk;
  ASSERT_TRUE(load_summary(dir_.path().string(), &on_disk));
  EXPECT_EQ(on_disk.state(), "done");
  EXPECT_THAT(launcher_log(), HasSubstr("start 1: "));
  EXPECT_THAT(launcher_log(), HasSubstr("running -> done: finished (exit 0)"));
}

TEST_F(LauncherSupervisor, RestartsFailuresUpToTheBudgetWithBackoff) {
  Supervisor s(options("hello,step=1,exit=1", /*max_restarts=*/2));
  EXPECT_EQ(run(s), 1);
  const LauncherSummary& sum = s.summary();
  EXPECT_EQ(sum.state(), "failed");
  EXPECT_EQ(sum.starts(), 3);
  EXPECT_EQ(sum.restarts(), 2);
  ASSERT_EQ(sum.causes_size(), 2);
  EXPECT_THAT(sum.causes(0), HasSubstr("exit 1"));
  const std::string log = launcher_log();
  EXPECT_THAT(log, HasSubstr("restart 1 of 2 in 0.05 s after exit 1"));
  // Each attempt made progress, so the back-off starts over each time.
  EXPECT_THAT(log, HasSubstr("restart 2 of 2 in 0.05 s after exit 1"));
  EXPECT_THAT(log, HasSubstr("restarts exhausted"));
}

TEST_F(LauncherSupervisor, BackoffDoublesWhileNoProgressIsMade) {
  Supervisor s(options("exit=1", /*max_restarts=*/3));
  EXPECT_EQ(run(s), 1);
  EXPECT_EQ(s.summary().restarts(), 3);
  const std::string log = launcher_log();
  EXPECT_THAT(log, HasSubstr("restart 1 of 3 in 0.05 s"));
  EXPECT_THAT(log, HasSubstr("restart 2 of 3 in 0.1 s"));
  EXPECT_THAT(log, HasSubstr("restart 3 of 3 in 0.2 s"));
}

TEST_F(LauncherSupervisor, NeverRestartsAUserError) {
  Supervisor s(options("hello,exit=2", /*max_restarts=*/5));
  EXPECT_EQ(run(s), 2);
  EXPECT_EQ(s.summary().starts(), 1);
  EXPECT_EQ(s.summary().restarts(), 0);
  EXPECT_EQ(s.summary().state(), "failed");
  EXPECT_EQ(s.summary().exit_code(), 2);
}

TEST_F(LauncherSupervisor, ResumesAfterPreemptionWithoutCounting) {
  Supervisor s(options("hello,step=3,exit=75;hello=3,step=6,exit=75;hello=6,step=10,exit=0",
                       /*max_restarts=*/0));
  EXPECT_EQ(run(s), 0);
  const LauncherSummary& sum = s.summary();
  EXPECT_EQ(sum.starts(), 3);
  EXPECT_EQ(sum.restarts(), 0);
  EXPECT_EQ(sum.resumes(), 2);
  EXPECT_EQ(sum.last_step(), 10);
  ASSERT_EQ(sum.causes_size(), 2);
  EXPECT_THAT(sum.causes(0), HasSubstr("preempted"));
}

TEST_F(LauncherSupervisor, AnExit75WithoutProgressCounts) {
  Supervisor s(options("exit=75", /*max_restarts=*/1));
  EXPECT_EQ(run(s), 1);
  EXPECT_EQ(s.summary().starts(), 2);
  EXPECT_EQ(s.summary().restarts(), 1);
  EXPECT_EQ(s.summary().resumes(), 0);
}

TEST_F(LauncherSupervisor, RestartsAJobKilledByASignal) {
  Supervisor s(options("hello,step=1,signal=9;hello=1,step=2,exit=0"));
  EXPECT_EQ(run(s), 0);
  EXPECT_EQ(s.summary().restarts(), 1);
  ASSERT_EQ(s.summary().causes_size(), 1);
  EXPECT_THAT(s.summary().causes(0), HasSubstr("killed by signal 9"));
  // Lost from the failure to the first new step after the restart.
  EXPECT_GT(s.summary().seconds_lost(), 0);
}

TEST_F(LauncherSupervisor, AJobThatNeverSaysHelloHasStalled) {
  Supervisor s(options("hang;hello,step=1,exit=0", 3, /*stall_s=*/0.5));
  EXPECT_EQ(run(s), 0);
  EXPECT_EQ(s.summary().starts(), 2);
  EXPECT_EQ(s.summary().restarts(), 1);
  EXPECT_THAT(s.summary().causes(0), HasSubstr("stalled"));
  EXPECT_THAT(launcher_log(), HasSubstr("no hello from the worker in time"));
}

TEST_F(LauncherSupervisor, AWorkerThatFallsSilentHasStalled) {
  Supervisor s(options("hello,step=1,hang;hello=1,step=2,exit=0", 3, /*stall_s=*/0.5));
  EXPECT_EQ(run(s), 0);
  EXPECT_EQ(s.summary().restarts(), 1);
  EXPECT_THAT(launcher_log(), HasSubstr("no heartbeat in time"));
  EXPECT_GT(s.summary().seconds_lost(), 0);
}

TEST_F(LauncherSupervisor, KillsTheWholeSessionOfAStalledJob) {
  // Attempt 1: a "rank" in its own process group that ignores SIGTERM,
  // under an "mpirun" that ignores it too. Attempt 2 leaves such a rank
  // behind although it exits 0.
  Supervisor s(options("child,hello,step=1,hang-hard;child,hello=1,step=2,exit=0", 3, 0.5));
  EXPECT_EQ(run(s), 0);
  const auto kids = children();
  ASSERT_EQ(kids.size(), 2u);
  for (pid_t pid : kids) EXPECT_FALSE(alive(pid)) << "rank " << pid << " outlived its job";
  EXPECT_THAT(launcher_log(), HasSubstr("its session left behind"));
}

TEST_F(LauncherSupervisor, StopRequestReachesTheWorkerAndEndsWith75) {
  Supervisor s(options("hello,step=2,wait-stop"));
  s.on_transition = [&s](SupervisorState, SupervisorState to, const std::string&) {
    if (to == SupervisorState::kRunning) boost::asio::post(s.io(), [&s] { s.signal(SIGTERM); });
  };
  EXPECT_EQ(run(s), 75);
  EXPECT_EQ(s.summary().state(), "preempted");
  EXPECT_EQ(s.summary().exit_code(), 75);
  EXPECT_EQ(s.summary().restarts(), 0);
  EXPECT_EQ(s.summary().starts(), 1);
  EXPECT_THAT(launcher_log(), HasSubstr("asked the worker to stop"));
}

TEST_F(LauncherSupervisor, StopBeforeTheHelloTerminatesMpirun) {
  Supervisor s(options("hang"));
  boost::asio::steady_timer soon(s.io());
  soon.expires_after(std::chrono::milliseconds(300));
  soon.async_wait([&s](const boost::system::error_code&) { s.signal(SIGINT); });
  EXPECT_EQ(run(s), 75);
  EXPECT_THAT(launcher_log(), HasSubstr("SIGTERM to mpirun"));
  EXPECT_THAT(launcher_log(), HasSubstr("killed by signal 15"));
}

TEST_F(LauncherSupervisor, SecondSignalKillsAJobThatWillNotStop) {
  Supervisor s(options("hello,step=1,hang-hard"));
  s.on_transition = [&s](SupervisorState, SupervisorState to, const std::string&) {
    if (to == SupervisorState::kRunning) {
      boost::asio::post(s.io(), [&s] {
        s.signal(SIGTERM);
        s.signal(SIGTERM);
      });
    }
  };
  EXPECT_EQ(run(s), 75);
  EXPECT_THAT(launcher_log(), HasSubstr("second stop request, killing"));
}

TEST_F(LauncherSupervisor, StopDuringTheBackoffEndsAtOnce) {
  Supervisor::Options o = options("exit=1");
  o.backoff_initial_s = o.backoff_max_s = 30;
  Supervisor s(o);
  s.on_transition = [&s](SupervisorState, SupervisorState to, const std::string&) {
    if (to == SupervisorState::kRestarting) boost::asio::post(s.io(), [&s] { s.signal(SIGTERM); });
  };
  EXPECT_EQ(run(s), 75);
  EXPECT_EQ(s.summary().starts(), 1);
}

TEST_F(LauncherSupervisor, PingsReachTheWorker) {
  Supervisor s(options("hello,expect-ping,step=1,exit=0", /*max_restarts=*/0, /*stall_s=*/2));
  EXPECT_EQ(run(s), 0);
}

TEST_F(LauncherSupervisor, EachStartGetsTheContractsEnvironment) {
  {
    Supervisor s(options("record,hello,step=1,exit=1;record,hello=1,step=2,exit=0"));
    EXPECT_EQ(run(s), 0);
  }
  const std::string env1 = file("fake-env-1"), env2 = file("fake-env-2");
  EXPECT_THAT(env1, HasSubstr("DPTRAIN_ATTEMPT=1\n"));
  EXPECT_THAT(env2, HasSubstr("DPTRAIN_ATTEMPT=2\n"));
  EXPECT_THAT(env1, HasSubstr("DPTRAIN_CONTROL=127.0.0.1:"));
  EXPECT_THAT(env1, HasSubstr("DPTRAIN_CONTROL_TIMEOUT=5\n"));
  EXPECT_THAT(env1, ::testing::ContainsRegex("DPTRAIN_CONTROL_TOKEN=[0-9a-f]{32}\n"));
  EXPECT_THAT(env1, ::testing::ContainsRegex("DPTRAIN_JOB_ID=[^\n]+\\.1\n"));
  const auto token = [](const std::string& env) {
    const auto at = env.find("DPTRAIN_CONTROL_TOKEN=");
    return env.substr(at, env.find('\n', at) - at);
  };
  EXPECT_NE(token(env1), token(env2)) << "each start has its own token";
  const std::string args = file("fake-args-1");
  EXPECT_THAT(args, HasSubstr("\n-np\n2\n--bind-to\nnone\n"));
  EXPECT_THAT(args, HasSubstr("\n-x\nDPTRAIN_CONTROL_TOKEN\n"));
  EXPECT_THAT(args, HasSubstr("\n/nonexistent/dptrain\ntrain\n"));
  EXPECT_THAT(args, HasSubstr("\n--resume\n"));
  // The separator line per start in worker.log.
  EXPECT_THAT(file("worker.log"), HasSubstr("===== dptrain-launch: start 2"));

  // A second invocation on the same folder (run --resume) counts on.
  Supervisor again(options("record,hello=2,step=3,exit=0"));
  EXPECT_EQ(run(again), 0);
  EXPECT_THAT(file("fake-env-3"), HasSubstr("DPTRAIN_ATTEMPT=3\n"));
  EXPECT_EQ(again.summary().starts(), 3);
  EXPECT_EQ(again.summary().restarts(), 1);
}

TEST_F(LauncherSupervisor, LeavesNoDescriptorOpenBehindItsStarts) {
  const auto open_fds = [] {
    return std::distance(std::filesystem::directory_iterator("/proc/self/fd"),
                         std::filesystem::directory_iterator{});
  };
  null_ = std::fopen("/dev/null", "w");  // opened before counting, as options() would
  const auto before = open_fds();
  {
    Supervisor s(options("hello,step=1,exit=1", /*max_restarts=*/4));
    EXPECT_EQ(run(s), 1);
    EXPECT_EQ(s.summary().starts(), 5);
  }
  EXPECT_EQ(open_fds(), before);
}

TEST_F(LauncherSupervisor, AnMpirunThatCannotStartIsAUserError) {
  Supervisor::Options o = options("exit=0");
  o.mpirun = "/nonexistent/mpirun";
  Supervisor s(o);
  EXPECT_EQ(run(s), 2);
  EXPECT_EQ(s.summary().restarts(), 0);
}

}  // namespace
}  // namespace dptrain::launcher
