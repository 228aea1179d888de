// Keeps one run alive: starts its mpirun job, watches it through the
// control channel and its exit, and moves through the states of
// transition_table.h, executing each transition's action (start, wait out
// a back-off, send stop, kill, finish) and logging it with its cause to
// launcher.log. The summary (launcher_summary.json: counts, causes, time
// lost, last step, outcome) is rewritten on every transition.
//
// Stall rule: in kStarting the worker must say hello within S seconds
// plus Options::startup_allowance_s of the start; afterwards a job that
// sends nothing (heartbeat, metrics, checkpoint notice) for S seconds has
// stalled. A first SIGINT/SIGTERM (or signal()) asks the job to stop; a
// second one kills it. A job's exit is acted on once its connections have
// been read to the end (at most 2 s), so that its last reports count.
//
// Owns its io_context and runs it in run() on the caller's thread; the
// callbacks (on_transition) run there too. Everything the run needs is in
// Options::launch; the run folder must exist and be writable.
#pragma once

#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include "core/dptrain.pb.h"
#include "launcher/control_server.h"
#include "launcher/job_process.h"
#include "launcher/launcher_log.h"
#include "launcher/status_line.h"
#include "launcher/transition_table.h"

namespace dptrain::launcher {

class Supervisor {
 public:
  struct Options {
    LaunchSpec launch;              // checked (check_launch_spec), run_dir set
    std::string mpirun = "mpirun";  // the program started for each attempt
    std::string worker;             // the dptrain binary, as mpirun is told
    double startup_allowance_s = 60;
    // How long beyond S a job asked to stop may take before it is killed.
    double stop_allowance_s = 60;
    double backoff_initial_s = 1;
    double backoff_max_s = 30;
    double kill_grace_s = 2;
    bool handle_signals = true;  // catch SIGINT/SIGTERM (the binary; not in-process tests)
    std::FILE* out = stdout;     // status line, progress and the final line of a success
    std::FILE* err = stderr;     // the final line of anything else, the worker's error lines
    bool live = false;           // `out` is a terminal: one status line rewritten in place
  };

  explicit Supervisor(Options options);
  ~Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Runs until a terminal state; returns the launcher's exit code: 0 done,
  // 1 failed (restarts exhausted), 2 user error (the worker's or mpirun
  // not startable), 75 stopped on request with the run unfinished.
  int run();

  // What a SIGINT/SIGTERM does: the first asks to stop, any later one kills.
  void signal(int signo);
  // From any thread: ask the job to checkpoint and stop (as a first
  // signal does, logged with `why`), or answer a rung: go on or stop.
  void request_stop(const std::string& why);
  void answer_rung(bool go_on, const std::string& why);

  SupervisorState state() const { return state_; }
  const LauncherSummary& summary() const { return summary_; }
  // The session id (= pid) of the running mpirun, 0 when none runs.
  pid_t job_session() const { return job_.running() ? job_.pid() : 0; }
  boost::asio::io_context& io() { return io_; }

  // Called after each transition (from, to, cause), on run()'s thread.
  std::function<void(SupervisorState, SupervisorState, const std::string&)> on_transition;
  // The worker paused at a rung (dptrain train --rung-epochs) and waits for
  // answer_rung(); on run()'s thread.
  std::function<void(const RungReached&)> on_rung;
  // Each metrics record the worker sends; on run()'s thread.
  std::function<void(const MetricsRecord&)> on_metrics;

 private:
  using Clock = std::chrono::steady_clock;

  void dispatch(const Event& event);
  void perform(const Transition& t, const Event& event);
  void start_job();
  void on_job_exit(const JobProcess::Exit& exit);
  void drain_then_report_exit();
  void on_hello(const Hello& hello);
  void on_message(const ControlMessage& message);
  void watch();
  bool attempt_live() const;  // starting, running or stopping
  void wait_for_signal();
  void finish(const Transition& t);
  void write_summary();
  void log(const std::string& line);  // launcher.log only
  void say(const std::string& line);  // launcher.log and the user
  std::vector<std::string> worker_error_lines() const;

  Options options_;
  std::string run_dir_;
  double stall_s_;
  boost::asio::io_context io_;
  LauncherLog log_;
  StatusLine status_;
  std::unique_ptr<ControlServer> server_;
  std::string advertised_;  // HOST:PORT the workers are told
  JobProcess job_;
  boost::asio::steady_timer backoff_timer_;
  boost::asio::steady_timer watch_timer_;
  boost::asio::steady_timer drain_timer_;
  std::optional<boost::asio::signal_set> signals_;

  SupervisorState state_ = SupervisorState::kStarting;
  StopCause stop_cause_ = StopCause::kNone;
  Budget budget_;
  LauncherSummary summary_;
  int exit_code_ = 1;
  int signals_seen_ = 0;
  int consecutive_failures_ = 0;  // since the job last made progress: the back-off's exponent

  // The current attempt.
  Clock::time_point attempt_started_, state_since_;
  Clock::time_point last_report_;  // the job's last word (or its start)
  Clock::time_point
      last_activity_;  // what the stall rule measures from: last_report_, or our last action
  int64_t attempt_start_step_ = 0;
  int64_t attempt_last_step_ = 0;  // the furthest step this attempt reported
  bool progressed_ = false;
  long worker_log_offset_ = 0;
  std::vector<std::string> worker_errors_;
  // The job's end, held back until its connections have said all they had
  // to say: the last heartbeats decide whether the attempt made progress.
  std::optional<JobProcess::Exit> exit_;
  Clock::time_point exited_at_;
  std::string start_error_;
  // Since when progress has been lost to failures (closed by the next new step).
  std::optional<Clock::time_point> lost_since_;
};

}  // namespace dptrain::launcher
