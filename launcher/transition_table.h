// The supervisor's life as a table (torchelastic / supervisord style): a
// few states, the events that move between them, and for each pair the
// next state and the one action the supervisor then takes. Pure: no
// processes, clocks or sockets, so every transition is tested on its own
// (tests/launcher/test_transition_table.cc); Supervisor executes the
// actions and logs each transition with its cause.
//
// Exit codes of a job (mpirun passes the worker's on): 0 finished; 2 a
// user error, never restarted; 75 stopped with a checkpoint written,
// resumed without counting against the restart budget; anything else, or
// death by a signal, or a stall, is a failure, restarted from the last
// checkpoint while the budget lasts.
#pragma once

#include <string>

namespace dptrain::launcher {

enum class SupervisorState {
  kStarting,    // mpirun started, no worker has said hello yet
  kRunning,     // the worker's rank 0 is connected and reporting
  kStopping,    // a stop was asked for (or a stall is being killed); waiting for the exit
  kRestarting,  // the job ended; waiting out the back-off before the next start
  kFailed,      // terminal: exit 1 (restarts exhausted) or 2 (user error)
  kDone,        // terminal: the run finished, exit 0
  kPreempted,   // terminal: stopped on request with the run unfinished, exit 75
};

enum class EventKind {
  kHello,           // the worker authenticated on the control channel
  kExit,            // the job (mpirun) ended; see Event::exit_code / signal
  kStall,           // no hello within the start-up allowance, or no report for S seconds
  kStopRequest,     // first SIGINT/SIGTERM to the launcher
  kKillRequest,     // a further signal: kill the job now
  kBackoffElapsed,  // the wait before a restart is over
  kStartFailed,     // mpirun could not be started at all
};

struct Event {
  EventKind kind;
  int exit_code = 0;        // kExit: the exit status, when signal == 0
  int signal = 0;           // kExit: the signal that killed mpirun, else 0
  bool progressed = false;  // kExit: the attempt reported a step beyond where it began
};

// Why the supervisor is in kStopping: it decides what the job's exit means.
enum class StopCause { kNone, kRequest, kStall };

enum class Action {
  kNone,
  kStartJob,     // start mpirun (leaving kRestarting)
  kWaitBackoff,  // arm the back-off timer (Transition::counts_restart or counts_resume)
  kSendStop,     // Stop over the control channel, or SIGTERM mpirun if no worker is connected
  kKillJob,      // SIGTERM mpirun, then SIGKILL its whole session
  kFinish,       // terminal: exit the launcher with Transition::exit_code
};

struct Budget {
  int restarts_used = 0;  // failures restarted so far in this launcher invocation
  int max_restarts = 3;
};

struct Transition {
  SupervisorState next;
  Action action = Action::kNone;
  StopCause stop_cause = StopCause::kNone;  // next == kStopping: why
  bool counts_restart = false;              // a failure, counted against the budget
  bool counts_resume = false;               // an exit 75, not counted
  bool is_failure = false;                  // starts the clock of time lost
  int exit_code = 0;                        // action == kFinish
  std::string cause{};                      // for the log, e.g. "exit 1", "killed by signal 9"
};

// The one table. `stop_cause` is the current cause when state is
// kStopping (kNone otherwise). An event that means nothing in a state
// (a hello while restarting, anything once terminal) yields the same
// state, Action::kNone and an empty cause.
Transition next_transition(SupervisorState state, StopCause stop_cause, const Event& event,
                           const Budget& budget);

bool is_terminal(SupervisorState state);
const char* state_name(SupervisorState state);  // "starting", "running", ...
// "exit 1", "killed by signal 9": how a job's end reads in the log.
std::string describe_exit(const Event& event);

// Seconds to wait before restart number `consecutive` (1-based count of
// failures since the job last made progress): initial, doubling, capped.
double backoff_seconds(int consecutive, double initial_s, double max_s);

}  // namespace dptrain::launcher
