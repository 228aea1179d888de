// The command line and environment of an attempt (launcher/mpirun_command.h),
// where the control channel listens, and the launcher's files in a run
// folder (launcher/run_folder.h): what mpirun is told, in which order,
// which variables travel with -x, and that damaged files are clear errors.
#include <algorithm>
#include <filesystem>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/error.h"
#include "launcher/mpirun_command.h"
#include "launcher/run_folder.h"
#include "tests/e2e/run_command.h"

namespace dptrain::launcher {
namespace {

using dptrain::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

LaunchSpec spec(int np) {
  LaunchSpec s;
  s.set_config("/c/lenet.textproto");
  s.set_np(np);
  s.set_run_dir("/r/run");
  s.add_set("solver.max_steps=10");
  s.add_set("data.batch_size=48");
  s.add_mpirun_arg("--mca");
  s.add_mpirun_arg("btl");
  s.add_mpirun_arg("tcp,self");
  return s;
}

bool has_pair(const std::vector<std::string>& args, const std::string& a, const std::string& b) {
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == a && args[i + 1] == b) return true;
  }
  return false;
}

bool has(const std::vector<std::string>& args, const std::string& a) {
  return std::find(args.begin(), args.end(), a) != args.end();
}

TEST(LauncherMpirunCommand, RanksWorkerAndFlagsInOrder) {
  const EnvironmentList env = attempt_environment({"127.0.0.1:5000", "tok", "run.1", 60, 1}, false);
  const auto args = mpirun_args(spec(2), "/b/dptrain", env, {}, 2);
  EXPECT_TRUE(has_pair(args, "-np", "2"));
  EXPECT_TRUE(has_pair(args, "--bind-to", "none"));
  EXPECT_FALSE(has(args, "--oversubscribe"));
  const auto worker = std::find(args.begin(), args.end(), "/b/dptrain");
  ASSERT_NE(worker, args.end());
  const auto mca = std::find(args.begin(), args.end(), "--mca");
  EXPECT_LT(mca, worker) << "mpirun's own arguments come before the worker";
  EXPECT_THAT(
      std::vector<std::string>(worker, args.end()),
      ElementsAre("/b/dptrain", "train", "/c/lenet.textproto", "--run-dir", "/r/run", "--resume",
                  "--set", "solver.max_steps=10", "--set", "data.batch_size=48"));
}

TEST(LauncherMpirunCommand, OversubscribesOnlyBeyondTheCoresWithoutAHostfile) {
  EXPECT_TRUE(has(mpirun_args(spec(3), "w", {}, {}, 2), "--oversubscribe"));
  LaunchSpec s = spec(3);
  s.set_hostfile("/h/hosts");
  const auto args = mpirun_args(s, "w", {}, {}, 2);
  EXPECT_FALSE(has(args, "--oversubscribe"));
  EXPECT_TRUE(has_pair(args, "--hostfile", "/h/hosts"));
}

TEST(LauncherMpirunCommand, ForwardsTheContractsVariablesAndTheUsersDptrainOnes) {
  const EnvironmentList env = attempt_environment({"h:1", "tok", "run.3", 2.5, 3}, true);
  EXPECT_THAT(env,
              ::testing::Contains(std::pair<std::string, std::string>("DPTRAIN_ATTEMPT", "3")));
  EXPECT_THAT(env, ::testing::Contains(
                       std::pair<std::string, std::string>("DPTRAIN_CONTROL_TIMEOUT", "2.5")));
  EXPECT_THAT(
      env, ::testing::Contains(std::pair<std::string, std::string>("OMPI_ALLOW_RUN_AS_ROOT", "1")));
  const auto args = mpirun_args(spec(1), "w", env,
                                {"PATH=/bin", "OMP_NUM_THREADS=1", "DPTRAIN_FAULT=kill:1:5",
                                 "DPTRAIN_LAUNCH_WORKER=/x", "DPTRAIN_ATTEMPT=9"},
                                2);
  for (const char* name :
       {"DPTRAIN_CONTROL", "DPTRAIN_CONTROL_TOKEN", "DPTRAIN_JOB_ID", "DPTRAIN_CONTROL_TIMEOUT",
        "DPTRAIN_ATTEMPT", "OMP_NUM_THREADS", "DPTRAIN_FAULT"}) {
    EXPECT_TRUE(has_pair(args, "-x", name)) << name;
  }
  EXPECT_FALSE(has_pair(args, "-x", "PATH"));
  EXPECT_FALSE(has_pair(args, "-x", "DPTRAIN_LAUNCH_WORKER"));
  EXPECT_FALSE(has_pair(args, "-x", "OMPI_ALLOW_RUN_AS_ROOT")) << "mpirun reads it itself";
  EXPECT_EQ(std::count(args.begin(), args.end(), "DPTRAIN_ATTEMPT"), 1);
}

TEST(LauncherMpirunCommand, ListensOnLoopbackUnlessTheHostfileNamesOtherHosts) {
  TempDir dir;
  LaunchSpec s = spec(2);
  EXPECT_EQ(listen_address(s).bind, "127.0.0.1");
  std::ofstream(dir / "local") << "# comment\nlocalhost slots=2\n127.0.0.1 slots=2\n\n";
  s.set_hostfile(dir / "local");
  EXPECT_TRUE(hostfile_is_local(s.hostfile()));
  EXPECT_EQ(listen_address(s).bind, "127.0.0.1");
  std::ofstream(dir / "remote") << "localhost slots=2\nnode7 slots=4\n";
  s.set_hostfile(dir / "remote");
  EXPECT_EQ(listen_address(s).bind, "0.0.0.0");
  EXPECT_FALSE(listen_address(s).advertise.empty());
  EXPECT_NE(listen_address(s).advertise, "0.0.0.0");
  s.set_listen("10.1.2.3:7000");
  EXPECT_EQ(listen_address(s).bind, "10.1.2.3");
  EXPECT_EQ(listen_address(s).port, 7000);
  EXPECT_EQ(listen_address(s).advertise, "10.1.2.3");
  s.set_listen("node7");
  EXPECT_THROW(listen_address(s), UserError);
  s.set_listen("");
  s.set_hostfile(dir / "missing");
  EXPECT_THROW(listen_address(s), UserError);
}

TEST(LauncherMpirunCommand, ShellQuoteKeepsWordsApart) {
  EXPECT_EQ(shell_quote({"mpirun", "-np", "2", "--set", "a b", "it's"}),
            "mpirun -np 2 --set 'a b' 'it'\\''s'");
}

TEST(LauncherRunFolder, LaunchSpecRoundTripsAndDamageIsNamed) {
  TempDir dir;
  const LaunchSpec s = spec(4);
  save_launch_spec(dir.path().string(), s);
  EXPECT_EQ(load_launch_spec(dir.path().string()).DebugString(), s.DebugString());
  std::ofstream(launch_spec_path(dir.path().string())) << "np: 2\nbogus_field: 1\n";
  try {
    load_launch_spec(dir.path().string());
    FAIL() << "a damaged launch.textproto loaded";
  } catch (const UserError& e) {
    EXPECT_THAT(e.what(), HasSubstr("launch.textproto:2:"));
  }
  std::filesystem::remove(launch_spec_path(dir.path().string()));
  EXPECT_THROW(load_launch_spec(dir.path().string()), UserError);
}

TEST(LauncherRunFolder, SummaryIsJsonWithTheSchemasNames) {
  TempDir dir;
  LauncherSummary s;
  s.set_state("running");
  s.set_starts(2);
  s.set_restarts(0);
  s.add_causes("exit 1");
  s.set_seconds_lost(1.5);
  save_summary(dir.path().string(), s);
  const std::string json = dptrain::testing::slurp(summary_path(dir.path().string()));
  EXPECT_THAT(json, HasSubstr("\"seconds_lost\": 1.5"));
  EXPECT_THAT(json, HasSubstr("\"restarts\": 0"));
  LauncherSummary back;
  ASSERT_TRUE(load_summary(dir.path().string(), &back));
  EXPECT_EQ(back.DebugString(), s.DebugString());
  std::ofstream(summary_path(dir.path().string())) << "{ torn";
  EXPECT_FALSE(load_summary(dir.path().string(), &back));
}

}  // namespace
}  // namespace dptrain::launcher
