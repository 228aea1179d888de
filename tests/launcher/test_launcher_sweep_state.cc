// The sweep's SQLite state (launcher/sweep_state.h): everything survives a
// reopen by a new object, damaged and foreign files are one clear error,
// each change is all-or-nothing, a resumed sweep refuses another config,
// and the tables read plainly with SQL, as users' sqlite3 shell reads them.
#include <gmock/gmock.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <string>

#include "core/error.h"
#include "launcher/sweep_state.h"

namespace dptrain::launcher {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using Decision = TrialScheduler::Decision;

class LauncherSweepState : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("sweep_state_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    db_ = SweepState::path_in(dir_.string());
  }
  void TearDown() override { fs::remove_all(dir_); }

  static SweepSpec spec() {
    SweepSpec s;
    EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(
        R"pb(
          name: "toy"
          param { path: "solver.base_lr" kind: LOG_UNIFORM min: 1e-4 max: 0.1 }
          algorithm: TPE
          trials: 8
          seed: 42
          scheduler { type: ASHA }
        )pb",
        &s));
    return s;
  }

  // Runs SQL over the file as a user's sqlite3 shell would; the first
  // column of each row, joined by '|'... rows by ';'.
  std::string query(const std::string& sql) const {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open_v2(db_.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
    sqlite3_stmt* stmt = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK)
        << sqlite3_errmsg(db);
    std::string out;
    while (sqlite3_step(stmt) == SQLITE_ROW) {
      if (!out.empty()) out += ";";
      for (int c = 0; c < sqlite3_column_count(stmt); ++c) {
        const auto* t = sqlite3_column_text(stmt, c);
        out += (c ? "|" : "") + std::string(t ? reinterpret_cast<const char*>(t) : "NULL");
      }
    }
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return out;
  }

  fs::path dir_;
  std::string db_;
};

TEST_F(LauncherSweepState, EverythingSurvivesAReopen) {
  {
    SweepState state = SweepState::open(db_);
    EXPECT_FALSE(state.initialized());
    state.init(spec(), 2, 3);
    state.add_trial(0, {"solver.base_lr=0.01"}, "/sweep/trial-0");
    state.add_trial(1, {"solver.base_lr=0.001"}, "/sweep/trial-1");
    state.add_trial(2, {"solver.base_lr=1e-04"}, "/sweep/trial-2");
    state.set_state(0, TrialState::kRunning);
    EXPECT_EQ(state.record_rung(0, 1, 0.81), 0.81);
    state.record_decision(0, 1, Decision::kContinue);
    state.add_epochs(0, 4);
    state.set_epoch(0, 4);
    state.finish_trial(0, TrialState::kDone, 0.86, 0.85, "");
    state.set_state(1, TrialState::kRunning);
    state.record_rung(1, 1, 0.7);
    state.record_decision(1, 1, Decision::kStop);
    state.add_epochs(1, 1);
    state.finish_trial(1, TrialState::kStopped, 0.7, 0.69, "ASHA at epoch 1");
    state.finish_trial(2, TrialState::kFailed, std::nullopt, std::nullopt, "diverged: loss nan");
  }
  const SweepState state = SweepState::open(db_);
  ASSERT_TRUE(state.initialized());
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(state.spec(), spec()));
  EXPECT_EQ(state.seed(), 42u);
  EXPECT_EQ(state.threads_per_trial(), 2);
  EXPECT_EQ(state.concurrency(), 3);
  EXPECT_THAT(state.created(), ::testing::MatchesRegex("[0-9-]+T[0-9:]+Z"));

  const std::vector<TrialRow> rows = state.trials();
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].params, Assignment{"solver.base_lr=0.01"});
  EXPECT_EQ(rows[0].state, TrialState::kDone);
  EXPECT_EQ(rows[0].objective, 0.86);
  EXPECT_EQ(rows[0].test_accuracy, 0.85);
  EXPECT_EQ(rows[0].epoch, 4);
  EXPECT_EQ(rows[0].epochs_run, 4);
  EXPECT_EQ(rows[0].run_dir, "/sweep/trial-0");
  EXPECT_FALSE(rows[0].updated.empty());
  EXPECT_EQ(rows[1].state, TrialState::kStopped);
  EXPECT_EQ(rows[1].reason, "ASHA at epoch 1");
  EXPECT_EQ(rows[1].epoch, 1);
  EXPECT_EQ(rows[2].state, TrialState::kFailed);
  EXPECT_EQ(rows[2].objective, std::nullopt);
  EXPECT_EQ(rows[2].reason, "diverged: loss nan");

  const RungTable table = state.rung_table();
  EXPECT_EQ(table.value, (std::map<std::pair<int, int>, double>{{{0, 1}, 0.81}, {{1, 1}, 0.7}}));
  EXPECT_EQ(table.last_epoch, (std::map<int, int>{{0, 4}, {1, 1}, {2, 0}}));
  EXPECT_EQ(state.decision(0, 1), Decision::kContinue);
  EXPECT_EQ(state.decision(1, 1), Decision::kStop);
  EXPECT_EQ(state.decision(0, 3), std::nullopt);

  const std::vector<FinishedTrial> finished = state.finished();
  ASSERT_EQ(finished.size(), 3u);
  EXPECT_EQ(finished[0].index, 0);
  EXPECT_EQ(finished[0].objective, 0.86);
  EXPECT_EQ(finished[1].objective, 0.7);
  EXPECT_EQ(finished[2].params, Assignment{"solver.base_lr=1e-04"});
  EXPECT_EQ(finished[2].objective, std::nullopt);
}

TEST_F(LauncherSweepState, TablesArePlainForTheSqliteShell) {
  {
    SweepState state = SweepState::open(db_);
    state.init(spec(), 1, 2);
    state.add_trial(0, {"solver.base_lr=0.01", "data.batch_size=64"}, "/s/t0");
    state.record_rung(0, 1, 0.5);
  }
  EXPECT_EQ(query("SELECT trial, state, params FROM trials"),
            "0|paused|solver.base_lr=0.01\ndata.batch_size=64");
  EXPECT_EQ(query("SELECT trial, epoch, value, decision FROM rungs"), "0|1|0.5|NULL");
  EXPECT_EQ(query("SELECT value FROM sweep WHERE key IN ('seed', 'concurrency') ORDER BY key"),
            "2;42");
  // Only the database file: no -wal or -journal left beside it.
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir_)) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
}

TEST_F(LauncherSweepState, GarbageIsNotASweepDatabase) {
  std::ofstream(db_) << std::string(5000, 'x') << "this was never a database";
  try {
    (void)SweepState::open(db_);
    FAIL() << "opened garbage";
  } catch (const UserError& e) {
    EXPECT_THAT(e.what(), HasSubstr(db_ + ": not a dptrain sweep database"));
  }
}

TEST_F(LauncherSweepState, AnotherSqliteFileIsNotASweepDatabase) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(db_.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "CREATE TABLE trials (x); INSERT INTO trials VALUES (1)", nullptr,
                         nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  EXPECT_THROW(
      {
        try {
          (void)SweepState::open(db_);
        } catch (const UserError& e) {
          EXPECT_THAT(e.what(), HasSubstr(db_ + ": not a dptrain sweep database"));
          throw;
        }
      },
      UserError);
}

TEST_F(LauncherSweepState, ADamagedDatabaseIsAClearError) {
  {
    SweepState state = SweepState::open(db_);
    state.init(spec(), 1, 1);
    for (int t = 0; t < 200; ++t)
      state.add_trial(t, {"solver.base_lr=0.01", std::string(100, 'p')}, "/s/t");
  }
  // Scribble over the pages after the header, as a bad disk might.
  {
    std::fstream f(db_, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4096);
    const std::string junk(3 * 4096, '\x5a');
    f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  }
  try {
    SweepState state = SweepState::open(db_);
    (void)state.trials();
    FAIL() << "read a damaged database";
  } catch (const UserError& e) {
    EXPECT_THAT(e.what(), HasSubstr(db_ + ": not a dptrain sweep database"));
  }
}

TEST_F(LauncherSweepState, AnEmptyFileBecomesANewDatabase) {
  std::ofstream{db_};
  SweepState state = SweepState::open(db_);
  EXPECT_FALSE(state.initialized());
  state.init(spec(), 1, 1);
  EXPECT_TRUE(SweepState::open(db_).initialized());
}

TEST_F(LauncherSweepState, AChangeThatFailsHalfWayLeavesNothing) {
  SweepState state = SweepState::open(db_);
  state.init(spec(), 1, 1);
  state.add_trial(0, {"solver.base_lr=0.01"}, "/s/t0");
  state.record_rung(0, 1, 0.5);  // paused at rung 1

  // Setting the trial running goes first, the rung's decision second and
  // fails (no rung 3): the trial must still be paused.
  EXPECT_THROW(state.record_decision(0, 3, Decision::kContinue), std::logic_error);
  EXPECT_EQ(state.trial(0)->state, TrialState::kPaused);
  EXPECT_EQ(state.decision(0, 3), std::nullopt);

  state.record_decision(0, 1, Decision::kStop);
  // Deciding rung 1 otherwise now: refused, nothing changed.
  EXPECT_THROW(state.record_decision(0, 1, Decision::kContinue), std::logic_error);
  EXPECT_EQ(state.trial(0)->state, TrialState::kPaused);
  EXPECT_EQ(state.decision(0, 1), Decision::kStop);
  state.record_decision(0, 1, Decision::kStop);  // the same again: fine

  // A rung of an unknown trial, or of one that ended, is not recorded.
  EXPECT_THROW(state.record_rung(7, 1, 0.5), std::logic_error);
  state.finish_trial(0, TrialState::kStopped, 0.5, 0.4, "ASHA");
  EXPECT_THROW(state.record_rung(0, 3, 0.9), std::logic_error);
  EXPECT_EQ(query("SELECT trial, epoch FROM rungs"), "0|1");
  EXPECT_EQ(state.trial(0)->epoch, 1);

  EXPECT_THROW(state.add_trial(0, {"solver.base_lr=0.1"}, "/s/again"), std::logic_error);
  EXPECT_EQ(state.trials().size(), 1u);
  EXPECT_THROW(state.init(spec(), 4, 4), std::logic_error);
  EXPECT_EQ(state.threads_per_trial(), 1);
  EXPECT_THROW(state.finish_trial(0, TrialState::kRunning, 0.5, 0.4, ""), std::logic_error);
  EXPECT_THROW(state.set_state(9, TrialState::kRunning), std::logic_error);
}

TEST_F(LauncherSweepState, ARungReportedAgainKeepsItsFirstValue) {
  SweepState state = SweepState::open(db_);
  state.init(spec(), 1, 1);
  state.add_trial(0, {"solver.base_lr=0.01"}, "/s/t0");
  EXPECT_EQ(state.record_rung(0, 1, 0.5), 0.5);
  state.set_state(0, TrialState::kRunning);
  // A resumed trial redoes the rung: the value decisions rest on stays.
  EXPECT_EQ(state.record_rung(0, 1, 0.6), 0.5);
  EXPECT_EQ(state.trial(0)->state, TrialState::kPaused);
  // NaN is stored as NULL and read back as NaN.
  EXPECT_TRUE(std::isnan(state.record_rung(0, 3, std::numeric_limits<double>::quiet_NaN())));
  EXPECT_TRUE(std::isnan(state.rung_table().value.at({0, 3})));
}

TEST_F(LauncherSweepState, AResumeRefusesAnotherSweepConfig) {
  SweepState::open(db_).init(spec(), 1, 1);
  const SweepState state = SweepState::open(db_);
  state.check_same_spec(spec());
  SweepSpec supervision = spec();  // only how trials are kept alive
  supervision.set_max_restarts(9);
  supervision.set_stall_timeout_s(5);
  state.check_same_spec(supervision);
  SweepSpec defaults = spec();  // a default written out is the same config
  defaults.set_ranks_per_trial(1);
  defaults.mutable_objective()->set_metric("val_accuracy");
  state.check_same_spec(defaults);

  SweepSpec more = spec();
  more.set_trials(9);
  try {
    state.check_same_spec(more);
    FAIL() << "accepted another trial count";
  } catch (const UserError& e) {
    EXPECT_THAT(e.what(), HasSubstr("another sweep config"));
    EXPECT_THAT(e.what(), HasSubstr("trials"));
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
  }
  SweepSpec wider = spec();
  wider.mutable_param(0)->set_max(1);
  try {
    state.check_same_spec(wider);
    FAIL() << "accepted another search space";
  } catch (const UserError& e) {
    EXPECT_THAT(e.what(), HasSubstr("param[0].max"));
  }
}

TEST_F(LauncherSweepState, StateNames) {
  for (TrialState s : {TrialState::kPending, TrialState::kRunning, TrialState::kPaused,
                       TrialState::kStopped, TrialState::kDone, TrialState::kFailed}) {
    EXPECT_EQ(parse_trial_state(trial_state_name(s)), s);
  }
  EXPECT_EQ(parse_trial_state("lost"), std::nullopt);
  EXPECT_TRUE(has_ended(TrialState::kFailed));
  EXPECT_FALSE(has_ended(TrialState::kPaused));
}

}  // namespace
}  // namespace dptrain::launcher
