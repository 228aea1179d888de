// One mpirun job as a process: started with Boost.Process on the
// launcher's io_context in a session of its own, stdin from /dev/null,
// stdout and stderr appended to a log file, its end reported
// asynchronously (ExitHandler, on the io_context's thread, once).
//
// Ending a job for good is a session affair. mpirun puts each local rank
// in a process group of its own (same session), so killing mpirun's group
// misses the ranks, and a SIGKILL to mpirun alone orphans them. kill()
// therefore sends SIGTERM to mpirun (which forwards it to the ranks),
// waits the grace period, then SIGKILLs every process whose session id is
// mpirun's. Whenever mpirun ends, whatever is left of its session is
// killed and reaped before the exit is reported, so no rank of a finished
// job outlives it. The destructor does the same at once. start() makes
// the calling process a child subreaper (prctl), so that ranks orphaned by
// a dying mpirun are reparented to it, not to init, and can be reaped.
// Each job's session is announced to the launcher's session guard
// (launcher/session_guard.h) before mpirun runs and released once it is
// gone, so that it is ended even if the launcher is killed.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>

namespace dptrain::launcher {

class JobProcess {
 public:
  struct Exit {
    int exit_code = 0;   // when signal == 0
    int signal = 0;      // the signal that ended mpirun
    int stragglers = 0;  // processes of its session still alive when it ended, then killed
  };
  using ExitHandler = std::function<void(const Exit&)>;
  using Environment = std::vector<std::pair<std::string, std::string>>;

  explicit JobProcess(boost::asio::io_context& io);
  ~JobProcess();
  JobProcess(const JobProcess&) = delete;
  JobProcess& operator=(const JobProcess&) = delete;

  // Starts `program` (searched on PATH when it has no '/') with `args`,
  // the launcher's environment plus `env`. Throws std::runtime_error
  // saying why when it cannot be started; on_exit is then never called.
  void start(const std::string& program, const std::vector<std::string>& args,
             const Environment& env, const std::string& output_path, ExitHandler on_exit);
  // SIGTERM to mpirun alone.
  void terminate();
  // SIGTERM to mpirun, SIGKILL to its session after `grace_s`.
  void kill(double grace_s);
  bool running() const;
  bool killing() const;  // kill() is under way
  pid_t pid() const;

 private:
  struct State;
  boost::asio::io_context& io_;
  std::shared_ptr<State> state_;
};

// The live processes (not zombies) whose session id is `sid`.
std::vector<pid_t> session_processes(pid_t sid);
// SIGKILLs every process of session `sid`, reaps those that are the
// caller's children and waits (up to timeout_s) until none is left alive.
// Returns how many processes it signalled.
int kill_session(pid_t sid, double timeout_s = 5);

}  // namespace dptrain::launcher
