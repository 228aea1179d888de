// dptrain-launch sweep end to end, with the real worker on small slices
// of Fashion-MNIST: a sweep with ASHA finishes and writes its leaderboard,
// best config and summary; a sweep killed (-9) and resumed reruns no
// finished trial and ends with the same leaderboard; trials that diverge,
// crash or stall are failed with their reason while the sweep goes on;
// never more trials at once than asked.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/e2e/run_command.h"

namespace dptrain::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const std::string kLaunch = DPTRAIN_LAUNCH_BIN;
const std::string kConfigs = std::string(DPTRAIN_SOURCE_DIR) + "/configs/";
const std::string& kEnv = kMpiAsRoot;

// Six trials of LeNet-5 on 960 images (240 of them held out), 9 epochs of
// 15 steps, ASHA with rungs after epochs 1 and 3.
std::string small_sweep(const std::string& extra = "") {
  return "name: 'small'\n"
         "base_config: '" +
         kConfigs +
         "lenet5_fmnist.textproto'\n"
         "set: 'data.train_limit=960' set: 'data.validation_size=240' set: 'data.test_limit=500'\n"
         "set: 'data.batch_size=48' set: 'runtime.log_every_steps=15'\n"
         "param { path: 'solver.base_lr' kind: LOG_UNIFORM min: 0.002 max: 0.2 }\n"
         "param { path: 'solver.momentum' kind: CHOICE values: '0.5' values: '0.9' }\n"
         "algorithm: RANDOM trials: 6 seed: 3 concurrent_trials: 2\n"
         "scheduler { type: ASHA reduction_factor: 3 min_epochs: 1 max_epochs: 9 }\n" +
         extra;
}

std::string write(const TempDir& dir, const std::string& name, const std::string& text) {
  const std::string path = dir / name;
  std::ofstream(path) << text;
  return path;
}

// leaderboard.csv without what depends on time.
std::string leaderboard(const std::string& dir) { return slurp(dir + "/leaderboard.csv"); }

int count_lines_with(const std::string& text, const std::string& what) {
  int n = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) n += line.find(what) != std::string::npos;
  return n;
}

class Sweep : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists("/usr/share/datasets/fashion-mnist"))
      GTEST_SKIP() << "dataset-fashion-mnist not installed";
  }
  CommandResult sweep(const std::string& config, const std::string& dir,
                      const std::string& env = "") {
    return run_command(kEnv + env + " timeout 600 " + kLaunch + " sweep " + config + " --run-dir " +
                       dir);
  }
  TempDir dir_;
};

TEST_F(Sweep, AshaSweepWritesLeaderboardBestConfigAndSummary) {
  const std::string config = write(dir_, "sweep.textproto", small_sweep());
  const std::string out = dir_ / "out";
  const auto r = sweep(config, out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("leaderboard"));
  const std::string csv = leaderboard(out);
  EXPECT_EQ(count_lines_with(csv, ",done,") + count_lines_with(csv, ",stopped,"), 6) << csv;
  EXPECT_GE(count_lines_with(csv, ",stopped,"), 1) << "ASHA stopped nobody\n" << csv;
  const std::string summary = slurp(out + "/sweep_summary.json");
  for (const char* key : {"\"trials\": 6", "\"best_objective\"", "\"best_test_accuracy\"",
                          "\"epochs_run\"", "\"epochs_full_budget\": 54"}) {
    EXPECT_THAT(summary, HasSubstr(key)) << summary;
  }
  // The best trial's config runs as it is.
  ASSERT_TRUE(fs::exists(out + "/best.textproto"));
  const auto best =
      run_command(std::string(DPTRAIN_BIN) + " train " + out + "/best.textproto --run-dir " +
                  (dir_ / "best") + " --set solver.max_steps=3 --set data.test_limit=100");
  EXPECT_EQ(best.exit_code, 0) << best.output;
  // The state is plain SQLite.
  const auto q = run_command("sqlite3 " + out + "/sweep.db \"select count(*) from trials\"");
  ASSERT_EQ(q.exit_code, 0) << q.output;
  EXPECT_EQ(q.output, "6\n");
}

TEST_F(Sweep, KilledAndResumedEqualsUninterrupted) {
  const std::string config = write(dir_, "sweep.textproto", small_sweep());
  const std::string plain = dir_ / "plain";
  ASSERT_EQ(sweep(config, plain).exit_code, 0);
  const std::string killed = dir_ / "killed";
  {
    Background job(kEnv + kLaunch + " sweep " + config + " --run-dir " + killed + " > " + killed +
                   ".log 2>&1");
    // Kill it once a trial has finished and others run.
    ASSERT_TRUE(
        wait_for([&] { return slurp(killed + ".log").find(" done") != std::string::npos; }, 120))
        << slurp(killed + ".log");
    kill(job.pid(), SIGKILL);
    job.wait(10);
  }
  // Its workers checkpoint and leave once their channel closes.
  std::this_thread::sleep_for(std::chrono::seconds(2));
  // A trial that finished is never trained again: its records and weights
  // stay as they were (the launcher may have died before noting it done;
  // resumed, the worker finds the finished run and leaves it).
  std::map<std::string, std::string> finished_before;
  for (const auto& e : fs::directory_iterator(killed)) {
    const std::string dir = e.path().string();
    if (fs::exists(dir + "/final_weights")) {
      finished_before[e.path().filename().string()] =
          slurp(dir + "/final_weights") + slurp(dir + "/metrics.jsonl");
    }
  }
  ASSERT_FALSE(finished_before.empty());
  const auto resumed = run_command(kEnv + " timeout 600 " + kLaunch + " sweep --resume " + killed);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  for (const auto& [trial, before] : finished_before) {
    const std::string dir = killed + "/" + trial;
    EXPECT_TRUE(slurp(dir + "/final_weights") + slurp(dir + "/metrics.jsonl") == before)
        << trial << " was trained again";
  }
  EXPECT_EQ(leaderboard(killed), leaderboard(plain));
}

TEST_F(Sweep, DivergedCrashedAndStalledTrialsFailWithTheirReason) {
  // One learning rate diverges; the others train.
  const std::string diverge =
      write(dir_, "diverge.textproto",
            "base_config: '" + kConfigs +
                "lenet5_fmnist.textproto'\n"
                "set: 'data.train_limit=960' set: 'data.test_limit=200' set: 'data.batch_size=48'\n"
                "param { path: 'solver.base_lr' kind: CHOICE values: '0.01' values: '5000' }\n"
                "algorithm: GRID objective { metric: 'test_accuracy' }\n"
                "scheduler { max_epochs: 2 }\n");
  const auto d = sweep(diverge, dir_ / "d");
  ASSERT_EQ(d.exit_code, 0) << d.output;
  EXPECT_THAT(leaderboard(dir_ / "d"), HasSubstr("failed"));
  EXPECT_THAT(leaderboard(dir_ / "d"), HasSubstr("diverged"));
  // Trials with 30 steps reach the fault at step 10 (no restarts); 5-step ones do not.
  const std::string faulty =
      "base_config: '" + kConfigs +
      "lenet5_fmnist.textproto'\n"
      "set: 'data.train_limit=960' set: 'data.test_limit=200' set: 'data.batch_size=48'\n"
      "param { path: 'solver.max_steps' kind: CHOICE values: '5' values: '30' }\n"
      "algorithm: GRID objective { metric: 'test_accuracy' } max_restarts: 0 stall_timeout_s: 3\n"
      "scheduler { max_epochs: 2 }\n";
  const std::string f = write(dir_, "faulty.textproto", faulty);
  const auto crash = sweep(f, dir_ / "crash", "DPTRAIN_FAULT=kill:0:10");
  ASSERT_EQ(crash.exit_code, 0) << crash.output;
  EXPECT_EQ(count_lines_with(leaderboard(dir_ / "crash"), ",done,"), 1)
      << leaderboard(dir_ / "crash");
  EXPECT_EQ(count_lines_with(leaderboard(dir_ / "crash"), ",failed,"), 1)
      << leaderboard(dir_ / "crash");
  const auto stall = sweep(f, dir_ / "stall", "DPTRAIN_FAULT=hang:0:10");
  ASSERT_EQ(stall.exit_code, 0) << stall.output;
  EXPECT_EQ(count_lines_with(leaderboard(dir_ / "stall"), ",failed,"), 1)
      << leaderboard(dir_ / "stall");
  EXPECT_THAT(leaderboard(dir_ / "stall"), HasSubstr("stall"));
}

TEST_F(Sweep, NeverMoreTrialsAtOnceThanAsked) {
  const std::string config = write(dir_, "sweep.textproto", small_sweep());
  const std::string out = dir_ / "out";
  ASSERT_EQ(sweep(config, out).exit_code, 0);
  // Each trial's life from its launcher.log: the first line to the last.
  const std::regex stamp("^\\d{4}-\\d\\d-\\d\\d (\\d\\d):(\\d\\d):(\\d\\d\\.\\d+)");
  std::vector<std::pair<double, int>> edges;
  for (const auto& e : fs::directory_iterator(out)) {
    if (e.path().filename().string().rfind("trial-", 0) != 0) continue;
    std::ifstream in(e.path() / "launcher.log");
    std::string line, first, last;
    while (std::getline(in, line)) {
      if (first.empty()) first = line;
      last = line;
    }
    auto seconds = [&](const std::string& l) {
      std::smatch m;
      EXPECT_TRUE(std::regex_search(l, m, stamp)) << l;
      return std::stod(m[1]) * 3600 + std::stod(m[2]) * 60 + std::stod(m[3]);
    };
    edges.emplace_back(seconds(first), +1);
    edges.emplace_back(seconds(last), -1);
  }
  ASSERT_EQ(edges.size(), 12u);
  std::sort(edges.begin(), edges.end());  // an end before a start at the same instant
  int at_once = 0, most = 0;
  for (const auto& [t, delta] : edges) most = std::max(most, at_once += delta);
  EXPECT_LE(most, 2);
  EXPECT_GE(most, 1);
}

// What a person sees on a terminal, under tmux: the table of trials kept
// below the event lines while the sweep runs, gone before the leaderboard.
TEST_F(Sweep, OnATerminalATableOfTrialsIsKeptBelowTheEvents) {
  const std::string config = write(dir_, "sweep.textproto", small_sweep());
  const std::string out = dir_ / "out";
  const std::string tmux = "tmux -L dptrain-sweep-" + std::to_string(::getpid()) + " ";
  struct KillServer {
    std::string tmux;
    ~KillServer() { run_command(tmux + "kill-server"); }
  } kill_server{tmux};
  const std::string command =
      kEnv + kLaunch + " sweep " + config + " --run-dir " + out + "; sleep 60";
  ASSERT_EQ(run_command(tmux + "new-session -d -x 150 -y 40 '" + command + "'").exit_code, 0);
  auto pane = [&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    return run_command(tmux + "capture-pane -p").output;
  };
  const std::string header =
      "trial  state    epoch   val_accuracy  solver.base_lr  solver.momentum";
  const std::regex running_row("\\n[0-9]+ +running +[0-9]+/9 ");
  std::string seen;
  EXPECT_TRUE(wait_for(
      [&] {
        seen = pane();
        return seen.find(header) != std::string::npos && std::regex_search(seen, running_row);
      },
      120))
      << seen;
  // The table is the last thing on the screen: the event lines are above it.
  const size_t table = seen.find(header);
  EXPECT_NE(seen.rfind("started:"), std::string::npos) << seen;
  EXPECT_LT(seen.rfind("started:"), table) << seen;
  ASSERT_TRUE(wait_for(
      [&] {
        seen = pane();
        return seen.find("sweep: done") != std::string::npos;
      },
      300))
      << seen;
  EXPECT_EQ(seen.find(header), std::string::npos) << "the table outlived the sweep\n" << seen;
  EXPECT_THAT(seen, HasSubstr("leaderboard (val_accuracy"));
}

}  // namespace
}  // namespace dptrain::testing
