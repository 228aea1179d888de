#include "launcher/transition_table.h"

#include <algorithm>
#include <cmath>

namespace dptrain::launcher {
namespace {

constexpr int kExitDone = 0;
constexpr int kExitUserError = 2;
constexpr int kExitStopped = 75;

Transition stay(SupervisorState state) { return Transition{state}; }

Transition move_to(SupervisorState state, Action action, std::string cause) {
  Transition t{state, action};
  t.cause = std::move(cause);
  return t;
}

Transition finish(SupervisorState state, int code, std::string cause) {
  Transition t = move_to(state, Action::kFinish, std::move(cause));
  t.exit_code = code;
  return t;
}

// A failure (exit 1, a signal, a stall, an exit 75 that made no progress):
// restarted while the budget lasts.
Transition failure(const Budget& budget, const std::string& cause) {
  if (budget.restarts_used >= budget.max_restarts) {
    Transition t = finish(
        SupervisorState::kFailed, 1,
        cause + "; restarts exhausted (" + std::to_string(budget.max_restarts) + " allowed)");
    t.is_failure = true;
    return t;
  }
  Transition t = move_to(SupervisorState::kRestarting, Action::kWaitBackoff, cause);
  t.counts_restart = true;
  t.is_failure = true;
  return t;
}

// The job ended while starting or running: the exit code alone decides.
Transition on_exit_unasked(const Event& e, const Budget& budget) {
  const std::string cause = describe_exit(e);
  if (e.signal == 0 && e.exit_code == kExitDone) {
    return finish(SupervisorState::kDone, kExitDone, "finished (" + cause + ")");
  }
  if (e.signal == 0 && e.exit_code == kExitUserError) {
    return finish(SupervisorState::kFailed, kExitUserError,
                  "user error (" + cause + "), not restarted");
  }
  if (e.signal == 0 && e.exit_code == kExitStopped) {
    // A worker that stops without a single new step would be resumed
    // forever (say it cannot reach the control channel): count that one.
    if (!e.progressed) return failure(budget, cause + " without progress");
    Transition t = move_to(SupervisorState::kRestarting, Action::kWaitBackoff,
                           "preempted (" + cause + "), resuming");
    t.counts_resume = true;
    return t;
  }
  return failure(budget, cause);
}

// The job ended after the launcher asked it to stop or killed it.
Transition on_exit_stopping(StopCause why, const Event& e, const Budget& budget) {
  const std::string cause = describe_exit(e);
  if (e.signal == 0 && e.exit_code == kExitDone) {
    return finish(SupervisorState::kDone, kExitDone, "finished (" + cause + ")");
  }
  if (e.signal == 0 && e.exit_code == kExitUserError) {
    return finish(SupervisorState::kFailed, kExitUserError,
                  "user error (" + cause + "), not restarted");
  }
  if (why == StopCause::kStall) return failure(budget, "stalled, killed (" + cause + ")");
  return finish(SupervisorState::kPreempted, kExitStopped, "stopped on request (" + cause + ")");
}

Transition stopping(StopCause why, Action action, std::string cause) {
  Transition t = move_to(SupervisorState::kStopping, action, std::move(cause));
  t.stop_cause = why;
  return t;
}

}  // namespace

Transition next_transition(SupervisorState state, StopCause stop_cause, const Event& event,
                           const Budget& budget) {
  using S = SupervisorState;
  using E = EventKind;
  switch (state) {
    case S::kStarting:
    case S::kRunning:
      switch (event.kind) {
        case E::kHello:
          if (state == S::kStarting) return move_to(S::kRunning, Action::kNone, "worker connected");
          return stay(state);
        case E::kExit:
          return on_exit_unasked(event, budget);
        case E::kStall: {
          Transition t = stopping(
              StopCause::kStall, Action::kKillJob,
              state == S::kStarting ? "no hello from the worker in time" : "no heartbeat in time");
          t.is_failure = true;
          return t;
        }
        case E::kStopRequest:
          return stopping(StopCause::kRequest, Action::kSendStop, "stop requested");
        case E::kKillRequest:
          return stopping(StopCause::kRequest, Action::kKillJob, "kill requested");
        case E::kStartFailed:
          return finish(S::kFailed, kExitUserError, "mpirun could not be started");
        case E::kBackoffElapsed:
          return stay(state);
      }
      break;
    case S::kStopping:
      switch (event.kind) {
        case E::kExit:
          return on_exit_stopping(stop_cause, event, budget);
        case E::kStall:
          // Asked to stop but silent for S seconds: it will not stop by itself.
          return stopping(stop_cause, Action::kKillJob, "no report while stopping");
        case E::kStopRequest:
        case E::kKillRequest:
          // A second signal: the user wants out now, whatever the first cause was.
          return stopping(StopCause::kRequest, Action::kKillJob, "second stop request, killing");
        case E::kHello:
        case E::kBackoffElapsed:
        case E::kStartFailed:
          return stay(state);
      }
      break;
    case S::kRestarting:
      switch (event.kind) {
        case E::kBackoffElapsed:
          return move_to(S::kStarting, Action::kStartJob, "back-off over");
        case E::kStopRequest:
        case E::kKillRequest:
          return finish(S::kPreempted, kExitStopped, "stop requested between attempts");
        case E::kHello:
        case E::kExit:
        case E::kStall:
        case E::kStartFailed:
          return stay(state);
      }
      break;
    case S::kFailed:
    case S::kDone:
    case S::kPreempted:
      return stay(state);
  }
  return stay(state);
}

bool is_terminal(SupervisorState state) {
  return state == SupervisorState::kFailed || state == SupervisorState::kDone ||
         state == SupervisorState::kPreempted;
}

const char* state_name(SupervisorState state) {
  switch (state) {
    case SupervisorState::kStarting:
      return "starting";
    case SupervisorState::kRunning:
      return "running";
    case SupervisorState::kStopping:
      return "stopping";
    case SupervisorState::kRestarting:
      return "restarting";
    case SupervisorState::kFailed:
      return "failed";
    case SupervisorState::kDone:
      return "done";
    case SupervisorState::kPreempted:
      return "preempted";
  }
  return "?";
}

std::string describe_exit(const Event& event) {
  if (event.signal != 0) return "killed by signal " + std::to_string(event.signal);
  return "exit " + std::to_string(event.exit_code);
}

double backoff_seconds(int consecutive, double initial_s, double max_s) {
  const int doublings = std::clamp(consecutive - 1, 0, 30);
  return std::min(initial_s * std::ldexp(1.0, doublings), max_s);
}

}  // namespace dptrain::launcher
