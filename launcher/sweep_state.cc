#include "launcher/sweep_state.h"

#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/message_differencer.h>
#include <sqlite3.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <limits>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "core/error.h"

namespace dptrain::launcher {
namespace {

namespace pb = google::protobuf;

// Written into the file's header (PRAGMA application_id, "DPSW"), so a
// sweep database is told from any other SQLite file, and the schema's
// version (PRAGMA user_version).
constexpr int kApplicationId = 0x44505357;
constexpr int kFormatVersion = 1;

constexpr const char* kSchema = R"sql(
CREATE TABLE sweep (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
CREATE TABLE trials (
  trial INTEGER PRIMARY KEY,
  params TEXT NOT NULL,
  state TEXT NOT NULL
    CHECK (state IN ('pending', 'running', 'paused', 'stopped', 'done', 'failed')),
  reason TEXT NOT NULL DEFAULT '',
  objective REAL,
  test_accuracy REAL,
  epoch INTEGER NOT NULL DEFAULT 0,
  epochs_run INTEGER NOT NULL DEFAULT 0,
  run_dir TEXT NOT NULL,
  updated TEXT NOT NULL
);
CREATE TABLE rungs (
  trial INTEGER NOT NULL REFERENCES trials (trial),
  epoch INTEGER NOT NULL,
  value REAL,
  decision TEXT CHECK (decision IN ('continue', 'stop')),
  PRIMARY KEY (trial, epoch)
);
)sql";

constexpr const char* kNow = "strftime('%Y-%m-%dT%H:%M:%SZ', 'now')";
constexpr const char* kEnded = "('stopped', 'done', 'failed')";

// A failure of SQLite, in the terms of the header: the file is not ours
// or is damaged (UserError), the caller broke a constraint (logic_error),
// or the database could not do its job (UserError).
[[noreturn]] void fail(sqlite3* db, const std::string& path, const std::string& doing) {
  const int code = sqlite3_errcode(db) & 0xff;
  const std::string msg = sqlite3_errmsg(db);
  if (code == SQLITE_NOTADB || code == SQLITE_CORRUPT)
    throw UserError(path + ": not a dptrain sweep database (" + msg + ")");
  if (code == SQLITE_CONSTRAINT) throw std::logic_error(path + ": " + doing + ": " + msg);
  throw UserError(path + ": " + doing + ": " + msg);
}

class Statement {
 public:
  Statement(sqlite3* db, const std::string& path, const std::string& sql) : db_(db), path_(path) {
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt_, nullptr) != SQLITE_OK)
      fail(db, path, "preparing \"" + sql + "\"");
  }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement() { sqlite3_finalize(stmt_); }

  Statement& bind(int i, long long v) {
    check(sqlite3_bind_int64(stmt_, i, v));
    return *this;
  }
  Statement& bind(int i, int v) { return bind(i, static_cast<long long>(v)); }
  Statement& bind(int i, const std::string& v) {
    check(sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
    return *this;
  }
  Statement& bind(int i, const char* v) { return bind(i, std::string(v)); }
  Statement& bind(int i, std::optional<double> v) {
    check(v ? sqlite3_bind_double(stmt_, i, *v) : sqlite3_bind_null(stmt_, i));
    return *this;
  }

  // True while there is a row to read.
  bool step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    fail(db_, path_, std::string("running \"") + sqlite3_sql(stmt_) + "\"");
  }
  void run() {
    while (step()) {
    }
  }

  bool is_null(int i) const { return sqlite3_column_type(stmt_, i) == SQLITE_NULL; }
  long long integer(int i) const { return sqlite3_column_int64(stmt_, i); }
  std::optional<double> real(int i) const {
    if (is_null(i)) return std::nullopt;
    return sqlite3_column_double(stmt_, i);
  }
  std::string text(int i) const {
    const auto* p = sqlite3_column_text(stmt_, i);
    return p == nullptr ? std::string()
                        : std::string(reinterpret_cast<const char*>(p),
                                      static_cast<std::size_t>(sqlite3_column_bytes(stmt_, i)));
  }

 private:
  void check(int rc) {
    if (rc != SQLITE_OK) fail(db_, path_, "binding a value");
  }

  sqlite3* db_;
  const std::string& path_;
  sqlite3_stmt* stmt_ = nullptr;
};

void exec(sqlite3* db, const std::string& path, const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    sqlite3_free(err);
    fail(db, path, "running \"" + sql + "\"");
  }
}

// One change: BEGIN IMMEDIATE takes the write lock up front, so a change
// never fails half-way for want of it; anything but commit() rolls back.
// A read-only one (kRead) only pins one snapshot for several queries.
class Transaction {
 public:
  enum Mode { kWrite, kRead };
  Transaction(sqlite3* db, const std::string& path, Mode mode = kWrite) : db_(db), path_(path) {
    exec(db, path, mode == kWrite ? "BEGIN IMMEDIATE" : "BEGIN DEFERRED");
  }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction() {
    if (!done_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  void commit() {
    exec(db_, path_, "COMMIT");
    done_ = true;
  }

 private:
  sqlite3* db_;
  const std::string& path_;
  bool done_ = false;
};

std::string join_lines(const Assignment& a) {
  std::string out;
  for (std::size_t i = 0; i < a.size(); ++i) out += (i ? "\n" : "") + a[i];
  return out;
}

Assignment split_lines(const std::string& s) {
  Assignment out;
  if (s.empty()) return out;
  std::size_t pos = 0;
  while (true) {
    const std::size_t nl = s.find('\n', pos);
    out.push_back(s.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos));
    if (nl == std::string::npos) return out;
    pos = nl + 1;
  }
}

const char* decision_text(TrialScheduler::Decision d) {
  if (d == TrialScheduler::Decision::kWait)
    throw std::logic_error("sweep state: kWait is not a decision to record");
  return decision_name(d);
}

}  // namespace

struct SweepState::Db {
  sqlite3* handle = nullptr;
  ~Db() { sqlite3_close(handle); }
};

const char* trial_state_name(TrialState state) {
  switch (state) {
    case TrialState::kPending:
      return "pending";
    case TrialState::kRunning:
      return "running";
    case TrialState::kPaused:
      return "paused";
    case TrialState::kStopped:
      return "stopped";
    case TrialState::kDone:
      return "done";
    case TrialState::kFailed:
      return "failed";
  }
  return "?";
}

std::optional<TrialState> parse_trial_state(const std::string& name) {
  for (TrialState s : {TrialState::kPending, TrialState::kRunning, TrialState::kPaused,
                       TrialState::kStopped, TrialState::kDone, TrialState::kFailed}) {
    if (name == trial_state_name(s)) return s;
  }
  return std::nullopt;
}

bool has_ended(TrialState state) {
  return state == TrialState::kStopped || state == TrialState::kDone ||
         state == TrialState::kFailed;
}

void rank_trials(std::vector<TrialRow>* rows, const Objective& objective) {
  const bool maximize = objective.goal() == Objective::MAXIMIZE;
  std::stable_sort(rows->begin(), rows->end(), [&](const TrialRow& a, const TrialRow& b) {
    if (a.objective.has_value() != b.objective.has_value()) return a.objective.has_value();
    if (!a.objective) return a.trial < b.trial;
    if (*a.objective != *b.objective)
      return maximize ? *a.objective > *b.objective : *a.objective < *b.objective;
    return a.trial < b.trial;
  });
}

std::string SweepState::path_in(const std::string& sweep_dir) {
  return (std::filesystem::path(sweep_dir) / "sweep.db").string();
}

SweepState SweepState::open(const std::string& path) {
  auto db = std::make_unique<Db>();
  // Even a failed open returns a handle to close, which Db does.
  if (sqlite3_open_v2(path.c_str(), &db->handle, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                      nullptr) != SQLITE_OK) {
    throw UserError(path + ": cannot open the sweep database: " +
                    (db->handle ? sqlite3_errmsg(db->handle) : "out of memory"));
  }
  sqlite3* h = db->handle;
  sqlite3_extended_result_codes(h, 1);
  // The sqlite3 shell of a user may hold a read lock for a moment.
  sqlite3_busy_timeout(h, 10000);
  // A rollback journal rather than WAL: the database stays one file (no
  // -wal beside it holding committed changes), and it works on the network
  // file systems sweep folders often live on. FULL syncs the journal and
  // the database at every commit, so a committed change survives a crash.
  exec(h, path, "PRAGMA journal_mode = DELETE");
  exec(h, path, "PRAGMA synchronous = FULL");
  exec(h, path, "PRAGMA foreign_keys = ON");

  // Reading the header is what tells garbage from a database.
  long long app_id = 0, version = 0, tables = 0;
  {
    Statement s(h, path, "PRAGMA application_id");
    if (s.step()) app_id = s.integer(0);
  }
  {
    Statement s(h, path, "PRAGMA user_version");
    if (s.step()) version = s.integer(0);
  }
  {
    Statement s(h, path, "SELECT count(*) FROM sqlite_master");
    if (s.step()) tables = s.integer(0);
  }
  if (tables == 0 && app_id == 0) {
    Transaction t(h, path);
    exec(h, path, kSchema);
    exec(h, path, "PRAGMA application_id = " + std::to_string(kApplicationId));
    exec(h, path, "PRAGMA user_version = " + std::to_string(kFormatVersion));
    t.commit();
  } else if (app_id != kApplicationId) {
    throw UserError(path + ": not a dptrain sweep database (an SQLite file of something else)");
  } else if (version != kFormatVersion) {
    throw UserError(path + ": not a dptrain sweep database of this version (format " +
                    std::to_string(version) + ", this dptrain reads " +
                    std::to_string(kFormatVersion) + ")");
  } else {
    Statement s(h, path, "PRAGMA quick_check");
    if (s.step() && s.text(0) != "ok")
      throw UserError(path + ": not a dptrain sweep database (damaged: " + s.text(0) + ")");
    Statement names(h, path,
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                    "name IN ('sweep', 'trials', 'rungs')");
    if (!names.step() || names.integer(0) != 3)
      throw UserError(path + ": not a dptrain sweep database (tables missing)");
  }
  return SweepState(path, std::move(db));
}

SweepState::SweepState(std::string path, std::unique_ptr<Db> db)
    : path_(std::move(path)), db_(std::move(db)) {}
SweepState::SweepState(SweepState&&) noexcept = default;
SweepState& SweepState::operator=(SweepState&&) noexcept = default;
SweepState::~SweepState() = default;

void SweepState::init(const SweepSpec& spec, int threads_per_trial, int concurrency) {
  sqlite3* h = db_->handle;
  std::string text;
  if (!pb::TextFormat::PrintToString(spec, &text))
    throw std::logic_error("sweep state: cannot print the sweep spec");
  Transaction t(h, path_);
  {
    Statement s(h, path_, "SELECT count(*) FROM sweep WHERE key = 'spec'");
    if (s.step() && s.integer(0) > 0)
      throw std::logic_error(path_ + ": the sweep is initialized already");
  }
  const std::pair<const char*, std::string> rows[] = {
      {"spec", text},
      {"seed", std::to_string(spec.seed())},
      {"threads_per_trial", std::to_string(threads_per_trial)},
      {"concurrency", std::to_string(concurrency)},
  };
  for (const auto& [key, value] : rows)
    Statement(h, path_, "INSERT INTO sweep (key, value) VALUES (?, ?)")
        .bind(1, key)
        .bind(2, value)
        .run();
  Statement(h, path_,
            std::string("INSERT INTO sweep (key, value) VALUES ('created', ") + kNow + ")")
      .run();
  t.commit();
}

namespace {

std::optional<std::string> sweep_value(sqlite3* h, const std::string& path, const char* key) {
  Statement s(h, path, "SELECT value FROM sweep WHERE key = ?");
  s.bind(1, key);
  if (!s.step()) return std::nullopt;
  return s.text(0);
}

std::string required(sqlite3* h, const std::string& path, const char* key) {
  std::optional<std::string> v = sweep_value(h, path, key);
  if (!v) {
    throw UserError(path + ": not a dptrain sweep database (no " + std::string(key) +
                    " in table sweep)");
  }
  return *v;
}

long long required_number(sqlite3* h, const std::string& path, const char* key) {
  const std::string v = required(h, path, key);
  long long out = 0;
  const auto r = std::from_chars(v.data(), v.data() + v.size(), out);
  if (r.ec != std::errc() || r.ptr != v.data() + v.size()) {
    throw UserError(path + ": not a dptrain sweep database (" + key + " is \"" + v +
                    "\", not a number)");
  }
  return out;
}

}  // namespace

bool SweepState::initialized() const { return sweep_value(db_->handle, path_, "spec").has_value(); }

SweepSpec SweepState::spec() const {
  SweepSpec spec;
  if (!pb::TextFormat::ParseFromString(required(db_->handle, path_, "spec"), &spec))
    throw UserError(path_ + ": not a dptrain sweep database (its sweep spec does not parse)");
  return spec;
}

uint64_t SweepState::seed() const {
  const std::string v = required(db_->handle, path_, "seed");
  uint64_t out = 0;
  const auto r = std::from_chars(v.data(), v.data() + v.size(), out);
  if (r.ec != std::errc() || r.ptr != v.data() + v.size())
    throw UserError(path_ + ": not a dptrain sweep database (seed is \"" + v + "\")");
  return out;
}

int SweepState::threads_per_trial() const {
  return static_cast<int>(required_number(db_->handle, path_, "threads_per_trial"));
}

int SweepState::concurrency() const {
  return static_cast<int>(required_number(db_->handle, path_, "concurrency"));
}

std::string SweepState::created() const { return required(db_->handle, path_, "created"); }

void SweepState::check_same_spec(const SweepSpec& spec) const {
  const SweepSpec stored = this->spec();
  pb::util::MessageDifferencer diff;
  // Unset and set to the default are the same config.
  diff.set_message_field_comparison(pb::util::MessageDifferencer::EQUIVALENT);
  // Supervision only: they change how a trial is kept alive, not its result.
  diff.IgnoreField(SweepSpec::descriptor()->FindFieldByName("max_restarts"));
  diff.IgnoreField(SweepSpec::descriptor()->FindFieldByName("stall_timeout_s"));
  std::string report;
  {
    pb::io::StringOutputStream out(&report);
    pb::util::MessageDifferencer::StreamReporter reporter(&out);
    diff.ReportDifferencesTo(&reporter);
    if (diff.Compare(stored, spec)) return;
  }
  const std::string first = report.substr(0, report.find('\n'));
  throw UserError(path_ + " was made by another sweep config: " + first +
                  " (stored -> given); resume with the config it was started with");
}

void SweepState::add_trial(int trial, const Assignment& params, const std::string& run_dir) {
  Transaction t(db_->handle, path_);
  Statement(db_->handle, path_,
            std::string("INSERT INTO trials (trial, params, state, run_dir, updated) "
                        "VALUES (?, ?, 'pending', ?, ") +
                kNow + ")")
      .bind(1, trial)
      .bind(2, join_lines(params))
      .bind(3, run_dir)
      .run();
  t.commit();
}

namespace {

// The statement changed a trial's row, or there is no such trial.
void expect_trial(sqlite3* h, const std::string& path, int trial, const char* doing) {
  if (sqlite3_changes(h) == 0) {
    throw std::logic_error(path + ": " + doing + ": no trial " + std::to_string(trial) +
                           " (or it has ended)");
  }
}

}  // namespace

void SweepState::set_state(int trial, TrialState state, const std::string& reason) {
  sqlite3* h = db_->handle;
  Transaction t(h, path_);
  Statement(h, path_,
            std::string("UPDATE trials SET state = ?, reason = ?, updated = ") + kNow +
                " WHERE trial = ?")
      .bind(1, trial_state_name(state))
      .bind(2, reason)
      .bind(3, trial)
      .run();
  expect_trial(h, path_, trial, "set_state");
  t.commit();
}

void SweepState::set_epoch(int trial, int epoch) {
  sqlite3* h = db_->handle;
  Transaction t(h, path_);
  Statement(h, path_,
            std::string("UPDATE trials SET epoch = max(epoch, ?), updated = ") + kNow +
                " WHERE trial = ?")
      .bind(1, epoch)
      .bind(2, trial)
      .run();
  expect_trial(h, path_, trial, "set_epoch");
  t.commit();
}

double SweepState::record_rung(int trial, int epoch, double value) {
  sqlite3* h = db_->handle;
  Transaction t(h, path_);
  Statement(h, path_,
            std::string("UPDATE trials SET state = 'paused', epoch = max(epoch, ?), updated = ") +
                kNow + " WHERE trial = ? AND state NOT IN " + kEnded)
      .bind(1, epoch)
      .bind(2, trial)
      .run();
  expect_trial(h, path_, trial, "record_rung");
  // The first report stands: a decision may already rest on it.
  Statement(h, path_,
            "INSERT INTO rungs (trial, epoch, value) VALUES (?, ?, ?) "
            "ON CONFLICT (trial, epoch) DO NOTHING")
      .bind(1, trial)
      .bind(2, epoch)
      .bind(3, std::optional<double>(value))
      .run();
  Statement s(h, path_, "SELECT value FROM rungs WHERE trial = ? AND epoch = ?");
  s.bind(1, trial).bind(2, epoch);
  s.step();
  const double stored = s.real(0).value_or(std::numeric_limits<double>::quiet_NaN());
  t.commit();
  return stored;
}

void SweepState::record_decision(int trial, int epoch, TrialScheduler::Decision decision) {
  sqlite3* h = db_->handle;
  const std::string text = decision_text(decision);
  Transaction t(h, path_);
  // The trial's state first, the rung's decision second: if the rung turns
  // out to be unknown or decided otherwise, the rollback takes back both.
  if (decision == TrialScheduler::Decision::kContinue) {
    Statement(h, path_,
              std::string("UPDATE trials SET state = 'running', updated = ") + kNow +
                  " WHERE trial = ? AND state NOT IN " + kEnded)
        .bind(1, trial)
        .run();
    expect_trial(h, path_, trial, "record_decision");
  }
  Statement(h, path_,
            "UPDATE rungs SET decision = ? WHERE trial = ? AND epoch = ? AND "
            "(decision IS NULL OR decision = ?)")
      .bind(1, text)
      .bind(2, trial)
      .bind(3, epoch)
      .bind(4, text)
      .run();
  if (sqlite3_changes(h) == 0) {
    const std::optional<TrialScheduler::Decision> before = this->decision(trial, epoch);
    throw std::logic_error(
        path_ + ": record_decision: trial " + std::to_string(trial) + " epoch " +
        std::to_string(epoch) +
        (before ? std::string(" was decided ") + decision_name(*before) + " already, not " + text
                : std::string(" has no rung recorded")));
  }
  t.commit();
}

void SweepState::finish_trial(int trial, TrialState state, std::optional<double> objective,
                              std::optional<double> test_accuracy, const std::string& reason) {
  if (!has_ended(state)) {
    throw std::logic_error(path_ + ": finish_trial with state " + trial_state_name(state) +
                           " (stopped, done or failed expected)");
  }
  sqlite3* h = db_->handle;
  Transaction t(h, path_);
  Statement(h, path_,
            std::string("UPDATE trials SET state = ?, objective = ?, test_accuracy = ?, "
                        "reason = ?, updated = ") +
                kNow + " WHERE trial = ?")
      .bind(1, trial_state_name(state))
      .bind(2, objective)
      .bind(3, test_accuracy)
      .bind(4, reason)
      .bind(5, trial)
      .run();
  expect_trial(h, path_, trial, "finish_trial");
  t.commit();
}

void SweepState::add_epochs(int trial, int epochs) {
  sqlite3* h = db_->handle;
  Transaction t(h, path_);
  Statement(h, path_,
            std::string("UPDATE trials SET epochs_run = epochs_run + ?, updated = ") + kNow +
                " WHERE trial = ?")
      .bind(1, epochs)
      .bind(2, trial)
      .run();
  expect_trial(h, path_, trial, "add_epochs");
  t.commit();
}

namespace {

constexpr const char* kTrialColumns =
    "SELECT trial, params, state, reason, objective, test_accuracy, epoch, epochs_run, run_dir, "
    "updated FROM trials";

TrialRow read_row(const Statement& s, const std::string& path) {
  TrialRow r;
  r.trial = static_cast<int>(s.integer(0));
  r.params = split_lines(s.text(1));
  const std::optional<TrialState> state = parse_trial_state(s.text(2));
  if (!state) {
    throw UserError(path + ": not a dptrain sweep database (trial " + std::to_string(r.trial) +
                    " has state \"" + s.text(2) + "\")");
  }
  r.state = *state;
  r.reason = s.text(3);
  r.objective = s.real(4);
  r.test_accuracy = s.real(5);
  r.epoch = static_cast<int>(s.integer(6));
  r.epochs_run = static_cast<int>(s.integer(7));
  r.run_dir = s.text(8);
  r.updated = s.text(9);
  return r;
}

}  // namespace

std::vector<TrialRow> SweepState::trials() const {
  Statement s(db_->handle, path_, std::string(kTrialColumns) + " ORDER BY trial");
  std::vector<TrialRow> out;
  while (s.step()) out.push_back(read_row(s, path_));
  return out;
}

std::optional<TrialRow> SweepState::trial(int trial) const {
  Statement s(db_->handle, path_, std::string(kTrialColumns) + " WHERE trial = ?");
  s.bind(1, trial);
  if (!s.step()) return std::nullopt;
  return read_row(s, path_);
}

RungTable SweepState::rung_table() const {
  RungTable table;
  // One read transaction, so the two queries see the same moment.
  Transaction t(db_->handle, path_, Transaction::kRead);
  {
    Statement s(db_->handle, path_, "SELECT trial, epoch, value FROM rungs");
    while (s.step()) {
      table.value[{static_cast<int>(s.integer(0)), static_cast<int>(s.integer(1))}] =
          s.real(2).value_or(std::numeric_limits<double>::quiet_NaN());
    }
  }
  {
    Statement s(db_->handle, path_,
                std::string("SELECT trial, epoch FROM trials WHERE state IN ") + kEnded);
    while (s.step())
      table.last_epoch[static_cast<int>(s.integer(0))] = static_cast<int>(s.integer(1));
  }
  t.commit();
  return table;
}

std::optional<TrialScheduler::Decision> SweepState::decision(int trial, int epoch) const {
  Statement s(db_->handle, path_, "SELECT decision FROM rungs WHERE trial = ? AND epoch = ?");
  s.bind(1, trial).bind(2, epoch);
  if (!s.step() || s.is_null(0)) return std::nullopt;
  const std::string d = s.text(0);
  if (d == "continue") return TrialScheduler::Decision::kContinue;
  if (d == "stop") return TrialScheduler::Decision::kStop;
  throw UserError(path_ + ": not a dptrain sweep database (decision \"" + d + "\")");
}

std::vector<FinishedTrial> SweepState::finished() const {
  Statement s(db_->handle, path_,
              std::string("SELECT trial, params, state, objective FROM trials WHERE state IN ") +
                  kEnded + " ORDER BY trial");
  std::vector<FinishedTrial> out;
  while (s.step()) {
    FinishedTrial f{static_cast<int>(s.integer(0)), split_lines(s.text(1)), std::nullopt};
    if (s.text(2) != "failed") f.objective = s.real(3);
    out.push_back(std::move(f));
  }
  return out;
}

}  // namespace dptrain::launcher
