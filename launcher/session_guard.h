// The session guard: a small process the launcher starts once, which
// outlives it to end its jobs. A launcher killed outright (kill -9, the
// OOM killer) cannot end its mpirun sessions itself; its workers leave on
// their own when the control channel closes (with a checkpoint), but a
// stopped or hung rank never sees that, and its mpirun waits for it
// forever. The guard sees the launcher go (the socket between them
// closes), gives the sessions it was told of `grace_s` to end on their
// own, then SIGKILLs whatever is left of them.
//
// Each job's child announces its session to the guard between fork and
// exec, before mpirun runs, so no job is ever unguarded; the launcher
// releases it once the session is gone and reaped. The guard also holds
// the run folder's lock until it exits, so no new launcher takes the
// folder while processes of the old one's jobs still write in it.
//
// Without a SessionGuard (tests that drive JobProcess directly) the
// other calls do nothing.
#pragma once

#include <sys/types.h>

#include <string>

namespace dptrain::launcher {

// The argv[1] by which dptrain-launch runs as the guard.
inline constexpr const char* kSessionGuardCommand = "__session-guard";

// The guard of this process, while the object lives (one at a time).
// It is this very binary (dptrain-launch) run as the guard; `hold_fd` is
// held open by it (the folder lock); its messages are appended to
// `log_path`. The constructor throws std::runtime_error when it cannot
// start it; the destructor tells it the launcher is done and waits for it
// to exit, so a launcher that ends normally leaves neither guard nor lock
// behind.
class SessionGuard {
 public:
  SessionGuard(int hold_fd, double grace_s, const std::string& log_path);
  ~SessionGuard();
  SessionGuard(const SessionGuard&) = delete;
  SessionGuard& operator=(const SessionGuard&) = delete;

 private:
  pid_t pid_ = 0;
};

// In a job's child between fork and exec: tells the guard that this
// process leads a session. Async-signal-safe.
void announce_session_to_guard() noexcept;
// The session has ended and its processes are reaped.
void release_session_from_guard(pid_t sid);

// The guard itself: `dptrain-launch __session-guard GRACE_S LOG_PATH`,
// the socket on stdin and the held descriptor as 3.
int session_guard_main(int argc, char** argv);

}  // namespace dptrain::launcher
