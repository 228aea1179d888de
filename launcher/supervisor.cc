#include "launcher/supervisor.h"

#include <boost/asio/post.hpp>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "core/error.h"
#include "launcher/mpirun_command.h"
#include "launcher/run_folder.h"

extern char** environ;

namespace dptrain::launcher {
namespace {

constexpr auto kWatchInterval = std::chrono::milliseconds(200);

std::chrono::steady_clock::duration seconds(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(s));
}

double seconds_between(std::chrono::steady_clock::time_point a,
                       std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

std::string seconds_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g s", s);
  return buf;
}

// A per-attempt secret: only the worker started with it may report.
std::string random_token() {
  std::random_device device;
  std::string hex;
  for (int i = 0; i < 4; ++i) {
    char buf[9];
    std::snprintf(buf, sizeof buf, "%08x", static_cast<unsigned>(device()));
    hex += buf;
  }
  return hex;
}

std::vector<std::string> launcher_environment() {
  std::vector<std::string> entries;
  for (char** e = environ; e && *e; ++e) entries.emplace_back(*e);
  return entries;
}

long file_size(const std::string& path) {
  std::error_code ec;
  const auto n = std::filesystem::file_size(path, ec);
  return ec ? 0 : static_cast<long>(n);
}

}  // namespace

Supervisor::Supervisor(Options options)
    : options_(std::move(options)),
      run_dir_(options_.launch.run_dir()),
      stall_s_(options_.launch.stall_timeout_s()),
      log_(launcher_log_path(run_dir_)),
      status_(options_.out, options_.live),
      job_(io_),
      backoff_timer_(io_),
      watch_timer_(io_),
      drain_timer_(io_) {
  // Counts carry on across invocations of `run --resume`; the restart
  // budget is this invocation's.
  load_summary(run_dir_, &summary_);
  summary_.clear_exit_code();
  // Set explicitly, so that the JSON shows the zeros too.
  summary_.set_starts(summary_.starts());
  summary_.set_restarts(summary_.restarts());
  summary_.set_resumes(summary_.resumes());
  summary_.set_seconds_lost(summary_.seconds_lost());
  summary_.set_last_step(summary_.last_step());
  summary_.set_steps_run(summary_.steps_run());
  budget_.max_restarts = options_.launch.max_restarts();

  const ListenAddress listen = listen_address(options_.launch);
  ControlServer::Options so;
  so.address = listen.bind;
  so.port = listen.port;
  // The worker connects once its data is loaded and says hello right away.
  so.hello_timeout_s = 10;
  // The supervisor's own stall rule (S seconds) acts long before this.
  so.idle_timeout_s = 2 * stall_s_ + 30;
  // The worker gives up on a launcher silent for S seconds.
  so.ping_interval_s = std::min(stall_s_ / 4, 1.0);
  ControlServer::Callbacks cb;
  cb.on_hello = [this](const Hello& h) { on_hello(h); };
  cb.on_message = [this](const ControlMessage& m) { on_message(m); };
  cb.on_session_closed = [this](const std::string&) {
    // The worker checkpoints and exits 75 when its channel closes; the
    // exit (or the stall rule) decides what happens next.
  };
  cb.log = [this](const std::string& line) { log(line); };
  server_ = std::make_unique<ControlServer>(io_, so, cb);
  advertised_ = listen.advertise + ":" + std::to_string(server_->port());
  if (options_.handle_signals) signals_.emplace(io_, SIGINT, SIGTERM);
}

Supervisor::~Supervisor() = default;

int Supervisor::run() {
  log("launch: run folder " + run_dir_ + ", " + std::to_string(options_.launch.np()) +
      " ranks, max restarts " + std::to_string(budget_.max_restarts) + ", stall timeout " +
      seconds_text(stall_s_) + ", control channel " + advertised_);
  state_ = SupervisorState::kStarting;
  state_since_ = Clock::now();
  write_summary();
  watch();
  wait_for_signal();
  start_job();
  io_.run();
  return exit_code_;
}

void Supervisor::signal(int signo) {
  ++signals_seen_;
  log(std::string("received ") + strsignal(signo));
  dispatch(Event{signals_seen_ == 1 ? EventKind::kStopRequest : EventKind::kKillRequest});
}

void Supervisor::request_stop(const std::string& why) {
  boost::asio::post(io_, [this, why] {
    if (is_terminal(state_)) return;
    log("stop requested: " + why);
    ++signals_seen_;
    dispatch(Event{signals_seen_ == 1 ? EventKind::kStopRequest : EventKind::kKillRequest});
  });
}

void Supervisor::answer_rung(bool go_on, const std::string& why) {
  if (!go_on) return request_stop(why);
  boost::asio::post(io_, [this, why] {
    ControlMessage m;
    m.mutable_proceed();
    if (server_->send(m)) log("rung: go on (" + why + ")");
  });
}

void Supervisor::wait_for_signal() {
  if (!signals_) return;
  signals_->async_wait([this](const boost::system::error_code& ec, int signo) {
    if (ec) return;
    signal(signo);
    if (!is_terminal(state_)) wait_for_signal();
  });
}

void Supervisor::start_job() {
  summary_.set_starts(summary_.starts() + 1);
  const int attempt = summary_.starts();
  AttemptSettings settings;
  settings.control = advertised_;
  settings.token = random_token();
  settings.job_id =
      std::filesystem::path(run_dir_).filename().string() + "." + std::to_string(attempt);
  settings.control_timeout_s = stall_s_;
  settings.attempt = attempt;
  server_->expect_job(settings.token, settings.job_id);
  const EnvironmentList env = attempt_environment(settings, ::geteuid() == 0);
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const std::vector<std::string> args =
      mpirun_args(options_.launch, options_.worker, env, launcher_environment(), cores);
  std::vector<std::string> command = {options_.mpirun};
  command.insert(command.end(), args.begin(), args.end());

  const std::string worker_log = worker_log_path(run_dir_);
  worker_log_offset_ = file_size(worker_log);
  {
    std::ofstream separator(worker_log, std::ios::app);
    separator << "===== dptrain-launch: start " << attempt << " (job " << settings.job_id << ") at "
              << LauncherLog::timestamp() << " =====\n";
  }
  attempt_started_ = last_activity_ = last_report_ = Clock::now();
  attempt_start_step_ = attempt_last_step_ = summary_.last_step();
  progressed_ = false;
  worker_errors_.clear();
  log("start " + std::to_string(attempt) + ": " + shell_quote(command));
  try {
    job_.start(options_.mpirun, args, env, worker_log,
               [this](const JobProcess::Exit& exit) { on_job_exit(exit); });
  } catch (const std::exception& e) {
    start_error_ = e.what();
    log("start " + std::to_string(attempt) + " failed: " + start_error_);
    dispatch(Event{EventKind::kStartFailed});
    return;
  }
  say("start " + std::to_string(attempt) + ": " + std::to_string(options_.launch.np()) +
      " rank(s), job " + settings.job_id + ", mpirun pid " + std::to_string(job_.pid()));
}

void Supervisor::on_job_exit(const JobProcess::Exit& exit) {
  std::string line =
      "job exited: " + describe_exit(Event{EventKind::kExit, exit.exit_code, exit.signal}) +
      " after " + seconds_text(seconds_between(attempt_started_, Clock::now()));
  if (exit.stragglers > 0) {
    line += "; killed " + std::to_string(exit.stragglers) + " process(es) its session left behind";
  }
  log(line);
  exit_ = exit;
  exited_at_ = Clock::now();
  // Not at once: a connection the job made just before it ended may still
  // wait in the listen queue, and Asio may run this before the accept.
  // After a turn of the event loop it is accepted and counted below.
  drain_timer_.expires_after(std::chrono::milliseconds(20));
  drain_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) drain_then_report_exit();
  });
}

void Supervisor::drain_then_report_exit() {
  // The SIGCHLD may overtake the worker's last frames, still in the
  // socket. Its processes are gone, so its connections end (EOF) once
  // read to the end; wait for that, within a bound (a stranger's idle
  // connection must not hold the supervisor up).
  constexpr double kDrainBoundS = 2;
  if (server_->open_connections() > 0 && seconds_between(exited_at_, Clock::now()) < kDrainBoundS) {
    drain_timer_.expires_after(std::chrono::milliseconds(20));
    drain_timer_.async_wait([this](const boost::system::error_code& ec) {
      if (!ec) drain_then_report_exit();
    });
    return;
  }
  const JobProcess::Exit exit = *exit_;
  exit_.reset();
  summary_.set_steps_run(summary_.steps_run() + static_cast<int32_t>(std::max<int64_t>(
                                                    0, attempt_last_step_ - attempt_start_step_)));
  Event event{EventKind::kExit};
  event.exit_code = exit.exit_code;
  event.signal = exit.signal;
  event.progressed = progressed_;
  if (exit.signal == 0 && exit.exit_code == 2) worker_errors_ = worker_error_lines();
  dispatch(event);
}

bool Supervisor::attempt_live() const {
  return state_ == SupervisorState::kStarting || state_ == SupervisorState::kRunning ||
         state_ == SupervisorState::kStopping;
}

void Supervisor::on_hello(const Hello& hello) {
  if (!attempt_live()) return;  // a straggler of an attempt already over
  attempt_start_step_ = attempt_last_step_ = hello.step();
  summary_.set_steps_per_epoch(static_cast<int32_t>(hello.steps_per_epoch()));
  last_activity_ = last_report_ = Clock::now();
  if (hello.step() > summary_.last_step()) summary_.set_last_step(hello.step());
  log("worker: " + std::to_string(hello.world_size()) + " rank(s), " +
      std::to_string(hello.threads()) + " thread(s), from step " + std::to_string(hello.step()) +
      " of " + std::to_string(hello.steps_total()));
  status_.hello(hello);
  status_.set_restarts(summary_.restarts());
  dispatch(Event{EventKind::kHello});
}

void Supervisor::on_message(const ControlMessage& message) {
  if (!attempt_live()) return;
  const auto now = Clock::now();
  last_activity_ = last_report_ = now;
  int64_t step = -1;
  switch (message.body_case()) {
    case ControlMessage::kHeartbeat:
      status_.heartbeat(message.heartbeat());
      step = message.heartbeat().step();
      break;
    case ControlMessage::kMetrics:
      status_.metrics(message.metrics());
      step = message.metrics().step();
      if (on_metrics) on_metrics(message.metrics());
      break;
    case ControlMessage::kRungReached:
      log("rung: paused after epoch " + std::to_string(message.rung_reached().epoch()) +
          " at step " + std::to_string(message.rung_reached().step()));
      step = message.rung_reached().step();
      if (on_rung) on_rung(message.rung_reached());
      break;
    case ControlMessage::kCheckpointWritten:
      log("checkpoint " + message.checkpoint_written().file() + " at step " +
          std::to_string(message.checkpoint_written().step()));
      step = message.checkpoint_written().step();
      break;
    default:
      return;
  }
  if (step > summary_.last_step()) summary_.set_last_step(step);
  attempt_last_step_ = std::max(attempt_last_step_, step);
  if (step > attempt_start_step_ && !progressed_) {
    progressed_ = true;
    consecutive_failures_ = 0;
    if (lost_since_) {
      const double lost = seconds_between(*lost_since_, now);
      summary_.set_seconds_lost(summary_.seconds_lost() + lost);
      lost_since_.reset();
      log("progress again at step " + std::to_string(step) + ": " + seconds_text(lost) +
          " lost to the failure");
      write_summary();
    }
  }
}

void Supervisor::watch() {
  watch_timer_.expires_after(kWatchInterval);
  watch_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || is_terminal(state_)) return;
    // Once a kill is under way its own timer ends the job; more stall
    // events would only repeat the news.
    if (attempt_live() && job_.running() && !job_.killing()) {
      const auto now = Clock::now();
      double limit = stall_s_;
      if (state_ == SupervisorState::kStarting) limit += options_.startup_allowance_s;
      bool stalled = seconds_between(last_activity_, now) > limit;
      // A worker that reports but never stops is as stuck as a silent one.
      if (state_ == SupervisorState::kStopping &&
          seconds_between(state_since_, now) > stall_s_ + options_.stop_allowance_s) {
        stalled = true;
      }
      if (stalled) {
        last_activity_ = now;  // the next stall, if the job lives on, is S seconds away
        dispatch(Event{EventKind::kStall});
      }
    }
    status_.refresh();
    if (!is_terminal(state_)) watch();
  });
}

void Supervisor::dispatch(const Event& event) {
  const SupervisorState from = state_;
  const Transition t = next_transition(state_, stop_cause_, event, budget_);
  if (t.next == from && t.action == Action::kNone && t.cause.empty()) return;
  const auto now = Clock::now();
  if (t.counts_restart) {
    ++budget_.restarts_used;
    summary_.set_restarts(summary_.restarts() + 1);
    summary_.add_causes(t.cause);
  }
  if (t.counts_resume) {
    summary_.set_resumes(summary_.resumes() + 1);
    summary_.add_causes(t.cause);
  }
  if (t.is_failure && !lost_since_) {
    // A stalled job stopped making progress when it fell silent.
    lost_since_ = event.kind == EventKind::kStall ? last_report_ : now;
  }
  state_ = t.next;
  stop_cause_ = t.next == SupervisorState::kStopping ? t.stop_cause : StopCause::kNone;
  if (from != state_) state_since_ = now;
  log(std::string(state_name(from)) + " -> " + state_name(state_) + ": " + t.cause);
  if (t.action != Action::kFinish) write_summary();
  if (on_transition) on_transition(from, state_, t.cause);
  perform(t, event);
}

void Supervisor::perform(const Transition& t, const Event& event) {
  switch (t.action) {
    case Action::kNone:
      break;
    case Action::kStartJob:
      start_job();
      break;
    case Action::kWaitBackoff: {
      double delay = 0;
      if (t.counts_restart) {
        ++consecutive_failures_;
        delay = backoff_seconds(consecutive_failures_, options_.backoff_initial_s,
                                options_.backoff_max_s);
        say("restart " + std::to_string(budget_.restarts_used) + " of " +
            std::to_string(budget_.max_restarts) + " in " + seconds_text(delay) + " after " +
            t.cause);
      } else {
        say(t.cause);
      }
      status_.set_restarts(summary_.restarts());
      backoff_timer_.expires_after(seconds(delay));
      backoff_timer_.async_wait([this](const boost::system::error_code& ec) {
        if (!ec) dispatch(Event{EventKind::kBackoffElapsed});
      });
      break;
    }
    case Action::kSendStop:
      last_activity_ = Clock::now();
      if (server_->send_stop(t.cause)) {
        say("asked the worker to stop; it checkpoints and exits (signal again to kill it)");
      } else {
        job_.terminate();
        say("no worker connected yet: SIGTERM to mpirun (signal again to kill it)");
      }
      break;
    case Action::kKillJob:
      last_activity_ = Clock::now();
      say(event.kind == EventKind::kStall
              ? "stalled (" + t.cause + " for " + seconds_text(stall_s_) + "): killing the job"
              : "killing the job (" + t.cause + ")");
      job_.kill(options_.kill_grace_s);
      break;
    case Action::kFinish:
      finish(t);
      break;
  }
}

void Supervisor::finish(const Transition& t) {
  exit_code_ = t.exit_code;
  backoff_timer_.cancel();
  watch_timer_.cancel();
  drain_timer_.cancel();
  if (signals_) signals_->cancel();
  server_->close();
  if (lost_since_) {
    // Never recovered: lost up to the end.
    summary_.set_seconds_lost(summary_.seconds_lost() +
                              seconds_between(*lost_since_, Clock::now()));
    lost_since_.reset();
  }
  write_summary();
  status_.clear();

  const std::string dir = run_dir_;
  if (state_ == SupervisorState::kDone) {
    std::fprintf(options_.out,
                 "dptrain-launch: done: %s after %d start(s), %d restart(s); run folder %s\n",
                 t.cause.c_str(), summary_.starts(), summary_.restarts(), dir.c_str());
  } else if (state_ == SupervisorState::kPreempted) {
    std::fprintf(
        options_.err,
        "dptrain-launch: stopped at step %lld, unfinished; resume with: dptrain-launch run "
        "--resume %s\n",
        static_cast<long long>(summary_.last_step()), dir.c_str());
  } else if (!start_error_.empty()) {
    std::fprintf(options_.err, "dptrain-launch: cannot start %s: %s; run folder %s\n",
                 options_.mpirun.c_str(), start_error_.c_str(), dir.c_str());
  } else if (t.exit_code == 2) {
    for (const std::string& line : worker_errors_) std::fprintf(options_.err, "%s\n", line.c_str());
    std::fprintf(options_.err,
                 "dptrain-launch: failed: the worker reported a user error (exit 2), "
                 "not restarted; %s %s\n",
                 worker_errors_.empty() ? "see" : "run folder",
                 worker_errors_.empty() ? worker_log_path(dir).c_str() : dir.c_str());
  } else {
    std::fprintf(options_.err, "dptrain-launch: failed: %s; see %s\n", t.cause.c_str(),
                 worker_log_path(dir).c_str());
  }
  std::fflush(options_.out);
  std::fflush(options_.err);
  log("finished with exit code " + std::to_string(exit_code_));
  io_.stop();
}

void Supervisor::write_summary() {
  switch (state_) {
    case SupervisorState::kDone:
      summary_.set_state("done");
      break;
    case SupervisorState::kFailed:
      summary_.set_state("failed");
      break;
    case SupervisorState::kPreempted:
      summary_.set_state("preempted");
      break;
    default:
      summary_.set_state("running");
      break;
  }
  if (is_terminal(state_)) {
    summary_.set_exit_code(exit_code_);
  } else {
    summary_.clear_exit_code();
  }
  try {
    save_summary(run_dir_, summary_);
  } catch (const UserError& e) {
    // A full disk must not take the supervision of the job down with it.
    log(std::string("cannot write the summary: ") + e.what());
  }
}

void Supervisor::log(const std::string& line) { log_.line(line); }

void Supervisor::say(const std::string& line) {
  log_.line(line);
  status_.print("dptrain-launch: " + line);
}

std::vector<std::string> Supervisor::worker_error_lines() const {
  std::ifstream in(worker_log_path(run_dir_));
  in.seekg(worker_log_offset_);
  // The worker's error is its last "dptrain: " line (its first such line
  // is a banner); what follows is mpirun's own account of the abort.
  std::string line, last;
  while (std::getline(in, line)) {
    if (line.rfind("dptrain: ", 0) == 0) last = line;
  }
  if (last.empty()) return {};
  return {last};
}

}  // namespace dptrain::launcher
