// The memory of a sweep (Optuna's `Storage`): one SQLite file,
// DIR/sweep.db, that a resumed launcher reads back and that users query
// with the sqlite3 shell. Every method that changes something is one
// transaction, committed with synchronous=FULL before it returns, so a
// kill at any instant leaves either all of a change or none of it.
//
// Tables (plain, so `sqlite3 DIR/sweep.db 'select * from trials'` reads):
//   sweep   key TEXT PRIMARY KEY, value TEXT: format, spec (the SweepSpec
//           in text format), seed, threads_per_trial, concurrency, created
//   trials  trial INTEGER PRIMARY KEY, params TEXT (the assignments, one
//           per line), state TEXT (pending, running, paused, stopped,
//           done, failed), reason TEXT, objective REAL, test_accuracy
//           REAL, epoch INTEGER (the last epoch completed), epochs_run
//           INTEGER (epochs trained, redone ones included), run_dir TEXT,
//           updated TEXT (UTC, ISO 8601)
//   rungs   trial, epoch, value REAL, decision TEXT (NULL until decided;
//           continue or stop), PRIMARY KEY (trial, epoch)
// SQLite stores a NaN as NULL: a rung value of NULL reads back as NaN.
//
// Errors: a file that is not a SQLite database, or one that is but not a
// dptrain sweep's, or a damaged one, throws UserError naming the file
// ("...: not a dptrain sweep database"); so does any failure of the
// database later (disk full, I/O). Misuse by the caller (a rung of an
// unknown trial, a second init) throws std::logic_error and changes
// nothing.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/dptrain.pb.h"
#include "launcher/search_algorithm.h"
#include "launcher/trial_scheduler.h"

struct sqlite3;

namespace dptrain::launcher {

enum class TrialState { kPending, kRunning, kPaused, kStopped, kDone, kFailed };

const char* trial_state_name(TrialState state);  // "pending", "running", ...
// The state named `name`; std::nullopt for anything else.
std::optional<TrialState> parse_trial_state(const std::string& name);
// stopped, done, failed: the trial will not train again.
bool has_ended(TrialState state);

struct TrialRow {
  int trial = 0;
  Assignment params;
  TrialState state = TrialState::kPending;
  std::string reason;
  std::optional<double> objective;
  std::optional<double> test_accuracy;
  int epoch = 0;       // the last epoch completed
  int epochs_run = 0;  // epochs trained, redone ones included
  std::string run_dir;
  std::string updated;
};

// The leaderboard's order: trials with an objective first, best first by
// the objective's goal, ties and the rest by trial number.
void rank_trials(std::vector<TrialRow>* rows, const Objective& objective);

class SweepState {
 public:
  // DIR/sweep.db.
  static std::string path_in(const std::string& sweep_dir);
  // Opens the database file at `path`, creating it (and its tables) if it
  // does not exist or is empty.
  static SweepState open(const std::string& path);

  SweepState(SweepState&&) noexcept;
  SweepState& operator=(SweepState&&) noexcept;
  ~SweepState();

  const std::string& path() const { return path_; }

  // Records the sweep once; a second init throws std::logic_error.
  // `spec` is stored as it is (with its resolved base, if the caller put
  // it there).
  void init(const SweepSpec& spec, int threads_per_trial, int concurrency);
  bool initialized() const;
  // What init stored (initialized() must hold).
  SweepSpec spec() const;
  uint64_t seed() const;
  int threads_per_trial() const;
  int concurrency() const;
  std::string created() const;
  // On resume: UserError "sweep.db was made by another sweep config:
  // FIELD differs (...)" unless `spec` equals the stored one in every
  // field that changes the result (max_restarts and stall_timeout_s may
  // change, as a run's checkpoint fields may).
  void check_same_spec(const SweepSpec& spec) const;

  // A new trial, pending. Its number must be new (std::logic_error).
  void add_trial(int trial, const Assignment& params, const std::string& run_dir);
  void set_state(int trial, TrialState state, const std::string& reason = "");
  // The trial completed `epoch` (kept as the maximum seen).
  void set_epoch(int trial, int epoch);
  // The trial reached rung `epoch` with `value`: the value is stored, the
  // trial's epoch advanced to it, and the trial paused, all at once. A
  // second report of the same rung (a resumed trial redoing it) keeps the
  // first value; the value the sweep goes by is returned.
  double record_rung(int trial, int epoch, double value);
  // The scheduler's answer at a recorded rung (continue or stop; kWait is
  // not a decision). With continue the trial is running again; with stop
  // it stays paused until finish_trial records its end and objective (so
  // a crash in between never shows a stopped trial without one). Deciding
  // a rung never recorded, or deciding it differently a second time,
  // throws std::logic_error and changes nothing; the same decision again
  // is a no-op.
  void record_decision(int trial, int epoch, TrialScheduler::Decision decision);
  // The trial ended: state stopped, done or failed (std::logic_error
  // otherwise), its objective and test accuracy (nullopt: none), why.
  void finish_trial(int trial, TrialState state, std::optional<double> objective,
                    std::optional<double> test_accuracy, const std::string& reason);
  // Epochs trained by an attempt, counted again when a restart redoes them.
  void add_epochs(int trial, int epochs);

  std::vector<TrialRow> trials() const;  // by trial number
  std::optional<TrialRow> trial(int trial) const;
  // Every rung value; last_epoch for each trial that has ended.
  RungTable rung_table() const;
  // The decision recorded at a rung, if any (what a resumed driver
  // applies instead of asking the scheduler again).
  std::optional<TrialScheduler::Decision> decision(int trial, int epoch) const;
  // Ended trials by number, as the search algorithm takes them: failed
  // ones with no objective.
  std::vector<FinishedTrial> finished() const;

 private:
  struct Db;
  SweepState(std::string path, std::unique_ptr<Db> db);

  std::string path_;
  std::unique_ptr<Db> db_;
};

}  // namespace dptrain::launcher
