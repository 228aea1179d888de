#include "launcher/sweep_runner.h"

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include <google/protobuf/util/json_util.h>

#include "core/config.h"
#include "core/error.h"
#include "core/file_io.h"
#include "core/metrics_record.h"
#include "launcher/launch_spec.h"
#include "launcher/run_folder.h"
#include "launcher/search_algorithm.h"
#include "launcher/supervisor.h"
#include "launcher/sweep_spec.h"
#include "launcher/sweep_state.h"
#include "launcher/sweep_table.h"
#include "launcher/trial_scheduler.h"

namespace dptrain::launcher {
namespace {

namespace fs = std::filesystem;

volatile sig_atomic_t g_stop_signals = 0;
extern "C" void on_sweep_signal(int) { g_stop_signals = g_stop_signals + 1; }

std::string trial_dir_name(int trial) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "trial-%04d", trial);
  return buf;
}

// The objective's metric of an eval record, if it has one.
std::optional<double> metric_of(const MetricsRecord& r, const std::string& metric) {
  const auto* field = r.GetDescriptor()->FindFieldByName(metric);
  if (!field || !r.GetReflection()->HasField(r, field)) return std::nullopt;
  return r.GetReflection()->GetDouble(r, field);
}

std::vector<std::string> param_paths(const SweepSpec& spec) {
  std::vector<std::string> paths;
  for (const SearchParam& p : spec.param()) paths.push_back(p.path());
  return paths;
}

struct Outcome {
  std::optional<double> objective, test_accuracy;
  int epochs = 0;  // the last epoch evaluated
};

// A trial's objective from its metrics.jsonl (best or last over its
// evaluations, as the spec says), with the test accuracy of that
// evaluation beside it.
Outcome outcome_of(const std::string& run_dir, const Objective& objective) {
  Outcome out;
  const bool maximize = objective.goal() == Objective::MAXIMIZE;
  for (const MetricsRecord& r : read_metrics(run_dir + "/metrics.jsonl")) {
    if (r.kind() != "eval") continue;
    out.epochs = std::max(out.epochs, r.epoch());
    const auto v = metric_of(r, objective.metric());
    if (!v) continue;
    const bool better = !out.objective || objective.mode() == Objective::LAST ||
                        (maximize ? *v > *out.objective : *v < *out.objective);
    if (better) {
      out.objective = v;
      out.test_accuracy = r.test_accuracy();
    }
  }
  return out;
}

// Why a trial failed: the worker's own error line (a bad config,
// divergence) if it left one, else the supervisor's last cause (a crash
// beyond the restarts, a stall).
std::string failure_reason(const std::string& run_dir, int code) {
  std::ifstream in(run_dir + "/launcher.err");
  std::string line, worker, launcher;
  const std::string failed = "dptrain-launch: failed: ";
  while (std::getline(in, line)) {
    if (line.rfind("dptrain: ", 0) == 0) worker = line.substr(9);
    if (line.rfind(failed, 0) == 0)
      launcher = line.substr(failed.size(), line.find("; see ") - failed.size());
  }
  if (!worker.empty()) return worker;
  if (!launcher.empty()) return launcher;
  return "exit " + std::to_string(code);
}

class SweepRunner {
 public:
  explicit SweepRunner(const SweepOptions& o)
      : o_(o),
        state_(SweepState::open(SweepState::path_in(o.dir))),
        table_(stdout, o.live, o.spec.objective().metric(), param_paths(o.spec),
               max_epochs(o.spec, o.base)) {}

  int run();

 private:
  struct Event {
    enum Kind { kRung, kExit } kind;
    int trial;
    RungReached rung;
    int exit_code = 0;
  };
  struct Running {
    std::unique_ptr<Supervisor> supervisor;
    std::thread thread;
    std::FILE* out = nullptr;
    std::FILE* err = nullptr;
    bool stopped_at_rung = false;
    std::string stop_reason;
  };

  void start_trial(int trial, const Assignment& params);
  void on_exit(int trial, int code);
  void decide_pending();
  void finish();
  void post(Event e) {
    std::lock_guard lock(mutex_);
    events_.push_back(std::move(e));
    changed_.notify_all();
  }
  void say(const std::string& line) { table_.print(line); }
  void show_table();

  const SweepOptions& o_;
  SweepState state_;
  std::unique_ptr<SearchAlgorithm> search_;
  std::unique_ptr<TrialScheduler> scheduler_;
  std::vector<int> rungs_;
  int concurrency_ = 1, threads_ = 1, max_epochs_ = 1;
  std::string base_path_;
  std::map<int, Running> running_;
  std::vector<std::pair<int, int>> undecided_;  // (trial, epoch) waiting for others
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Event> events_;
  bool stopping_ = false;
  // What running trials reported last (their supervisors' threads write).
  struct Progress {
    int epoch = 0;
    std::optional<double> objective;
  };
  std::map<int, Progress> progress_;  // guarded by mutex_
  SweepTable table_;
};

void SweepRunner::start_trial(int trial, const Assignment& params) {
  const std::string dir = o_.dir + "/" + trial_dir_name(trial);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw UserError("cannot create trial folder " + dir + ": " + ec.message());
  LaunchSpec launch;
  launch.set_config(base_path_);
  for (const std::string& p : params) launch.add_set(p);
  launch.add_set("solver.epochs=" + std::to_string(max_epochs_));
  launch.add_set("runtime.threads=" + std::to_string(threads_));
  launch.set_np(o_.spec.ranks_per_trial());
  launch.set_max_restarts(o_.spec.max_restarts());
  launch.set_stall_timeout_s(o_.spec.stall_timeout_s());
  // Ranks sharing cores with other trials' ranks must not spin.
  for (const char* a : {"--mca", "mpi_yield_when_idle", "1"}) launch.add_mpirun_arg(a);
  if (!rungs_.empty()) {
    std::string epochs;
    for (int e : rungs_) epochs += (epochs.empty() ? "" : ",") + std::to_string(e);
    launch.add_worker_arg("--rung-epochs");
    launch.add_worker_arg(epochs);
  }
  launch.set_run_dir(dir);
  check_launch_spec(&launch);
  save_launch_spec(dir, launch);

  Running& r = running_[trial];
  Supervisor::Options so;
  so.launch = launch;
  so.worker = o_.worker;
  so.mpirun = o_.mpirun;
  so.handle_signals = false;
  r.out = std::fopen((dir + "/launcher.out").c_str(), "a");
  r.err = std::fopen((dir + "/launcher.err").c_str(), "a");
  if (!r.out || !r.err) throw UserError("cannot write in trial folder " + dir);
  so.out = r.out;
  so.err = r.err;
  r.supervisor = std::make_unique<Supervisor>(std::move(so));
  r.supervisor->on_rung = [this, trial](const RungReached& rung) {
    post({Event::kRung, trial, rung, 0});
  };
  if (o_.live) {
    r.supervisor->on_metrics = [this, trial](const MetricsRecord& record) {
      const auto v = metric_of(record, o_.spec.objective().metric());
      std::lock_guard lock(mutex_);
      Progress& p = progress_[trial];
      p.epoch = std::max(p.epoch, record.epoch());
      if (v && (!p.objective || o_.spec.objective().mode() == Objective::LAST ||
                (o_.spec.objective().goal() == Objective::MAXIMIZE ? *v > *p.objective
                                                                   : *v < *p.objective)))
        p.objective = v;
    };
  }
  Supervisor* sup = r.supervisor.get();
  r.thread = std::thread([this, trial, sup] {
    int code = 1;
    try {
      code = sup->run();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "dptrain-launch: trial %d: %s\n", trial, e.what());
    }
    post({Event::kExit, trial, {}, code});
  });
  state_.set_state(trial, TrialState::kRunning);
  std::string shown;
  for (const std::string& p : params) shown += " " + p;
  say("trial " + std::to_string(trial) + " started:" + shown);
}

void SweepRunner::on_exit(int trial, int code) {
  auto it = running_.find(trial);
  Running& r = it->second;
  r.thread.join();
  std::fclose(r.out);
  std::fclose(r.err);
  const std::string dir = o_.dir + "/" + trial_dir_name(trial);
  const Outcome out = outcome_of(dir, o_.spec.objective());
  // Epochs trained, redone ones included: the trial's supervisor counts
  // the steps of every start (a trial interrupted and resumed is counted
  // in parts, so only what is new since the last count is added).
  LauncherSummary launched;
  int trained = out.epochs;
  if (load_summary(dir, &launched) && launched.steps_per_epoch() > 0) {
    // A supervisor killed with the sweep never counted its last start:
    // at least the epochs the trial reached were trained.
    trained = std::max(out.epochs,
                       static_cast<int>((launched.steps_run() + launched.steps_per_epoch() / 2) /
                                        launched.steps_per_epoch()));
  }
  const auto row = state_.trial(trial);
  if (row && trained > row->epochs_run) state_.add_epochs(trial, trained - row->epochs_run);
  state_.set_epoch(trial, out.epochs);
  std::string verdict;
  if (code == 0) {
    state_.finish_trial(trial, TrialState::kDone, out.objective, out.test_accuracy, "");
    verdict = "done";
  } else if (code == 75 && r.stopped_at_rung) {
    state_.finish_trial(trial, TrialState::kStopped, out.objective, out.test_accuracy,
                        r.stop_reason);
    verdict = "stopped: " + r.stop_reason;
  } else if (code == 75 && stopping_) {
    state_.set_state(trial, TrialState::kPaused, "the sweep was stopped; --resume continues it");
    verdict = "interrupted";
  } else {
    const std::string why = failure_reason(dir, code);
    state_.finish_trial(trial, TrialState::kFailed, std::nullopt, std::nullopt, why);
    verdict = "failed: " + why;
  }
  std::string result;
  if (out.objective && verdict.rfind("failed", 0) != 0) {
    char buf[64];
    std::snprintf(buf, sizeof buf, " (%s %.4f)", o_.spec.objective().metric().c_str(),
                  *out.objective);
    result = buf;
  }
  say("trial " + std::to_string(trial) + " " + verdict + result);
  running_.erase(it);
}

void SweepRunner::decide_pending() {
  const RungTable table = state_.rung_table();
  for (auto it = undecided_.begin(); it != undecided_.end();) {
    const auto [trial, epoch] = *it;
    const TrialScheduler::Decision d = scheduler_->decide(trial, epoch, table);
    if (d == TrialScheduler::Decision::kWait) {
      ++it;
      continue;
    }
    const bool go_on = d == TrialScheduler::Decision::kContinue;
    // A resumed sweep re-hears rungs already decided: the same decision.
    if (!state_.decision(trial, epoch)) state_.record_decision(trial, epoch, d);
    const std::string why =
        std::string(o_.spec.scheduler().type() == SchedulerSpec::ASHA ? "ASHA" : "median") +
        " at epoch " + std::to_string(epoch);
    auto running = running_.find(trial);
    if (running != running_.end()) {
      if (!go_on) {
        running->second.stopped_at_rung = true;
        running->second.stop_reason = why;
      }
      running->second.supervisor->answer_rung(go_on, why);
    }
    it = undecided_.erase(it);
  }
}

int SweepRunner::run() {
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const int ranks = o_.spec.ranks_per_trial();
  concurrency_ = o_.spec.concurrent_trials() > 0 ? o_.spec.concurrent_trials()
                                                 : std::max(1, static_cast<int>(cores) / ranks);
  threads_ = std::max(1, static_cast<int>(cores) / (concurrency_ * ranks));
  if (!state_.initialized()) {
    state_.init(o_.spec, threads_, concurrency_);
  } else {
    state_.check_same_spec(o_.spec);
    threads_ = state_.threads_per_trial();
    concurrency_ = state_.concurrency();
  }
  search_ = SearchAlgorithm::create(o_.spec);
  max_epochs_ = max_epochs(o_.spec, o_.base);
  scheduler_ = TrialScheduler::create(o_.spec.scheduler(), max_epochs_, o_.spec.objective());
  rungs_ = scheduler_->rung_epochs();
  base_path_ = o_.dir + "/base.textproto";
  write_file_atomically(base_path_, to_text(o_.base));

  struct sigaction action = {};
  action.sa_handler = on_sweep_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);

  const int total = search_->total_trials();
  say("sweep: " + std::to_string(total) + " trials, " + std::to_string(concurrency_) +
      " at once, " + std::to_string(ranks) + " rank(s) x " + std::to_string(threads_) +
      " thread(s) each, up to " + std::to_string(max_epochs_) + " epochs; folder " + o_.dir);
  int next = 0;
  int signals_acted_on = 0;
  for (;;) {
    if (g_stop_signals > signals_acted_on) {
      signals_acted_on = g_stop_signals;
      if (!stopping_) say("sweep: stopping; trials checkpoint and pause (resume with --resume)");
      stopping_ = true;
      for (auto& [trial, r] : running_) r.supervisor->request_stop("the sweep was stopped");
    }
    // Start trials in index order while there is room and their
    // suggestion's inputs are final.
    while (!stopping_ && static_cast<int>(running_.size()) < concurrency_ && next < total) {
      const auto rows = state_.trials();
      const auto known = std::find_if(rows.begin(), rows.end(),
                                      [&](const TrialRow& t) { return t.trial == next; });
      if (known != rows.end()) {
        if (has_ended(known->state)) {
          ++next;
          continue;
        }
        start_trial(next, known->params);
        ++next;
        continue;
      }
      const int needed = search_->needs_finished(next, concurrency_);
      const std::vector<FinishedTrial> finished = state_.finished();
      std::vector<FinishedTrial> shown;
      for (const FinishedTrial& f : finished) {
        if (f.index < needed) shown.push_back(f);
      }
      if (static_cast<int>(shown.size()) < needed) break;  // wait for them
      const Assignment params = search_->suggest(next, shown);
      state_.add_trial(next, params, o_.dir + "/" + trial_dir_name(next));
      start_trial(next, params);
      ++next;
    }
    if (running_.empty() && (next >= total || stopping_)) break;
    std::deque<Event> events;
    {
      std::unique_lock lock(mutex_);
      changed_.wait_for(lock, std::chrono::milliseconds(200), [&] { return !events_.empty(); });
      events.swap(events_);
    }
    for (const Event& e : events) {
      if (e.kind == Event::kRung) {
        const auto v = metric_of(e.rung.eval(), o_.spec.objective().metric());
        if (!v) {
          if (auto r = running_.find(e.trial); r != running_.end()) {
            r->second.supervisor->answer_rung(
                false, "no " + o_.spec.objective().metric() + " at the rung");
          }
          continue;
        }
        state_.record_rung(e.trial, e.rung.epoch(), *v);
        undecided_.emplace_back(e.trial, e.rung.epoch());
      } else {
        undecided_.erase(std::remove_if(undecided_.begin(), undecided_.end(),
                                        [&](const auto& u) { return u.first == e.trial; }),
                         undecided_.end());
        on_exit(e.trial, e.exit_code);
      }
    }
    decide_pending();
    if (o_.live) show_table();
  }
  table_.clear();
  if (stopping_) return 75;
  finish();
  return 0;
}

// The live table: the sweep state's rows, with what running trials have
// reported since their last rung.
void SweepRunner::show_table() {
  std::vector<SweepTableRow> rows;
  std::lock_guard lock(mutex_);
  for (const TrialRow& t : state_.trials()) {
    SweepTableRow r;
    r.trial = t.trial;
    r.state = trial_state_name(t.state);
    r.epoch = t.epoch;
    r.objective = t.objective;
    if (auto p = progress_.find(t.trial); p != progress_.end() && !has_ended(t.state)) {
      r.epoch = std::max(r.epoch, p->second.epoch);
      if (p->second.objective) r.objective = p->second.objective;
    }
    for (const std::string& a : t.params) r.values.push_back(a.substr(a.find('=') + 1));
    rows.push_back(std::move(r));
  }
  table_.update(std::move(rows));
  table_.refresh();
}

// The leaderboard, the best trial's config and the summary.
void SweepRunner::finish() {
  std::vector<TrialRow> rows = state_.trials();
  rank_trials(&rows, o_.spec.objective());
  const bool maximize = o_.spec.objective().goal() == Objective::MAXIMIZE;
  // epochs: the last epoch the trial reached (what it cost, restarts
  // included, is in sweep_summary.json).
  std::string csv = "rank,trial,state," + o_.spec.objective().metric() + ",test_accuracy,epochs";
  for (const SearchParam& p : o_.spec.param()) csv += "," + p.path();
  csv += ",reason\n";
  say("\nleaderboard (" + o_.spec.objective().metric() + ", " + (maximize ? "higher" : "lower") +
      " is better):");
  int rank = 0;
  int64_t epochs_run = 0;
  for (const TrialRow& t : rows) {
    ++rank;
    epochs_run += t.epochs_run;
    auto num = [](const std::optional<double>& v) {
      if (!v) return std::string();
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.6g", *v);
      return std::string(buf);
    };
    std::string values, shown;
    for (const std::string& p : t.params) {
      values += "," + p.substr(p.find('=') + 1);
      shown += " " + p;
    }
    std::string reason = t.reason;
    std::replace(reason.begin(), reason.end(), ',', ';');
    const std::string state = trial_state_name(t.state);
    csv += std::to_string(rank) + "," + std::to_string(t.trial) + "," + state + "," +
           num(t.objective) + "," + num(t.test_accuracy) + "," + std::to_string(t.epoch) + values +
           "," + reason + "\n";
    char line[256];
    std::snprintf(line, sizeof line, "%3d. trial %-4d %-8s %-10s test %-8s", rank, t.trial,
                  state.c_str(), num(t.objective).c_str(), num(t.test_accuracy).c_str());
    say(line + shown);
  }
  write_file_atomically(o_.dir + "/leaderboard.csv", csv);
  SweepSummary summary;
  summary.set_trials(static_cast<int32_t>(rows.size()));
  summary.set_epochs_run(static_cast<int32_t>(epochs_run));
  summary.set_epochs_full_budget(static_cast<int32_t>(rows.size()) * max_epochs_);
  if (!rows.empty() && rows.front().objective) {
    const TrialRow& best = rows.front();
    summary.set_best_trial(best.trial);
    summary.set_best_objective(*best.objective);
    if (best.test_accuracy) summary.set_best_test_accuracy(*best.test_accuracy);
    TrainSpec spec = o_.base;
    for (const std::string& p : best.params) apply_override(&spec, p);
    apply_override(&spec, "solver.epochs=" + std::to_string(max_epochs_));
    write_file_atomically(o_.dir + "/best.textproto",
                          "# The best trial (" + std::to_string(best.trial) + ") of the sweep in " +
                              o_.dir + ", ready to run.\n" + to_text(spec));
  }
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(summary, &json, options);
  write_file_atomically(o_.dir + "/sweep_summary.json", json);
  char tail[160];
  std::snprintf(
      tail, sizeof tail, "sweep: done; %d of %d epochs of the full budget run (%.0f%%); folder %s",
      summary.epochs_run(), summary.epochs_full_budget(),
      100.0 * summary.epochs_run() / std::max(1, summary.epochs_full_budget()), o_.dir.c_str());
  say(tail);
}

}  // namespace

int run_sweep(const SweepOptions& options) { return SweepRunner(options).run(); }

}  // namespace dptrain::launcher
