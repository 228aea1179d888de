#include "launcher/job_process.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <stdexcept>
#include <thread>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/process.hpp>
#include <boost/process/extend.hpp>

#include "launcher/session_guard.h"

namespace dptrain::launcher {

namespace bp = boost::process;

struct JobProcess::State {
  explicit State(boost::asio::io_context& io) : kill_timer(io) {}
  bp::child child;
  boost::asio::steady_timer kill_timer;
  pid_t pid = 0;
  bool running = false;
  bool killing = false;
  ExitHandler on_exit;
};

namespace {

struct ProcStat {
  pid_t pid;
  char state;
  pid_t session;
};

bool read_stat(pid_t pid, ProcStat* out) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return false;
  // The command name is in parentheses and may itself hold ") ", so the
  // fields are counted from the last ')'.
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return false;
  char state = 0;
  long ppid = 0, pgrp = 0, session = 0;
  if (std::sscanf(line.c_str() + close + 1, " %c %ld %ld %ld", &state, &ppid, &pgrp, &session) !=
      4) {
    return false;
  }
  *out = {pid, state, static_cast<pid_t>(session)};
  return true;
}

std::vector<ProcStat> session_stats(pid_t sid) {
  std::vector<ProcStat> found;
  DIR* dir = ::opendir("/proc");
  if (!dir) return found;
  while (const dirent* entry = ::readdir(dir)) {
    char* end = nullptr;
    const long pid = std::strtol(entry->d_name, &end, 10);
    if (*end != '\0' || pid <= 0) continue;
    ProcStat stat;
    if (read_stat(static_cast<pid_t>(pid), &stat) && stat.session == sid) found.push_back(stat);
  }
  ::closedir(dir);
  return found;
}

}  // namespace

std::vector<pid_t> session_processes(pid_t sid) {
  std::vector<pid_t> pids;
  // A zombie runs nothing; one whose parent is gone waits for init (which
  // in some containers never reaps it).
  for (const ProcStat& s : session_stats(sid)) {
    if (s.state != 'Z') pids.push_back(s.pid);
  }
  return pids;
}

int kill_session(pid_t sid, double timeout_s) {
  // Never our own session or init's: a job always has a session of its own.
  if (sid <= 1 || sid == ::getsid(0)) return 0;
  std::set<pid_t> signalled;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  for (;;) {
    bool alive = false;
    for (const ProcStat& s : session_stats(sid)) {
      if (s.state != 'Z') {
        ::kill(s.pid, SIGKILL);
        signalled.insert(s.pid);
        alive = true;
      }
      // Ranks orphaned by mpirun are ours to reap (we are their subreaper);
      // for anyone else's child this fails harmlessly with ECHILD.
      ::waitpid(s.pid, nullptr, WNOHANG);
    }
    if (!alive || std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return static_cast<int>(signalled.size());
}

JobProcess::JobProcess(boost::asio::io_context& io) : io_(io) {}

JobProcess::~JobProcess() {
  if (!state_ || !state_->running) return;
  state_->running = false;
  state_->on_exit = nullptr;
  const pid_t pid = state_->pid;
  ::kill(pid, SIGKILL);
  kill_session(pid);
  // Reap mpirun here: its exit handler (which also would) is disarmed.
  ::waitpid(pid, nullptr, 0);
  release_session_from_guard(pid);
  state_->child.detach();
}

void JobProcess::start(const std::string& program, const std::vector<std::string>& args,
                       const Environment& env, const std::string& output_path,
                       ExitHandler on_exit) {
  if (running()) throw std::logic_error("JobProcess::start while a job is running");
  // Ranks that mpirun leaves behind when it dies are reparented to us, not
  // to init, so that kill_session can reap them.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);

  boost::filesystem::path exe = program;
  if (program.find('/') == std::string::npos) {
    exe = bp::search_path(program);
    if (exe.empty()) throw std::runtime_error(program + ": not found on PATH");
  }
  const int fd = ::open(output_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot open " + output_path + ": " + std::strerror(errno));
  std::FILE* out = ::fdopen(fd, "a");
  if (!out) {
    ::close(fd);
    throw std::runtime_error("cannot open " + output_path + ": " + std::strerror(errno));
  }

  bp::environment environment = boost::this_process::environment();
  // set(), not operator[]: Boost 1.74's find() reads past the end of shorter entries.
  for (const auto& [name, value] : env) environment.set(name, value);

  auto state = std::make_shared<State>(io_);
  std::weak_ptr<State> weak = state;
  boost::asio::io_context& io = io_;
  std::error_code ec;
  state->child = bp::child(bp::exe = exe, bp::args = args, environment,
                           bp::std_in<bp::null, (bp::std_out & bp::std_err)> out, io_,
                           // Boost.Process has no "new session" property: setsid in the child
                           // between fork and exec. Asio's sockets are not close-on-exec, so
                           // mark every inherited descriptor beyond stdio close-on-exec here
                           // too, or mpirun and the ranks would hold the control port open.
                           bp::extend::on_exec_setup([](auto&) {
                             ::setsid();
                             announce_session_to_guard();
                             ::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
                           }),
                           bp::on_exit([weak, &io](int, const std::error_code& wait_error) {
                             // Boost.Process calls this from inside its SIGCHLD dispatch loop,
                             // where starting another child would invalidate the loop's
                             // iterator; the real work is therefore posted.
                             boost::asio::post(io, [weak, wait_error] {
                               auto s = weak.lock();
                               if (!s || !s->running) return;
                               Exit exit;
                               // The status as waitpid gave it: the handler's int cannot tell
                               // "exit 9" from "killed by signal 9".
                               const int status = s->child.native_exit_code();
                               if (wait_error) {
                                 exit.exit_code = 1;
                               } else if (WIFSIGNALED(status)) {
                                 exit.signal = WTERMSIG(status);
                               } else {
                                 exit.exit_code = WEXITSTATUS(status);
                               }
                               exit.stragglers = kill_session(s->pid);
                               release_session_from_guard(s->pid);
                               s->running = false;
                               s->kill_timer.cancel();
                               auto handler = std::move(s->on_exit);
                               if (handler) handler(exit);
                             });
                           }),
                           ec);
  std::fclose(out);
  if (ec) throw std::runtime_error("cannot start " + exe.string() + ": " + ec.message());
  state->pid = state->child.id();
  state->running = true;
  state->on_exit = std::move(on_exit);
  state_ = std::move(state);
}

void JobProcess::terminate() {
  if (running()) ::kill(state_->pid, SIGTERM);
}

void JobProcess::kill(double grace_s) {
  // Once under way, asking again must not push the SIGKILL further off.
  if (!running() || state_->killing) return;
  state_->killing = true;
  ::kill(state_->pid, SIGTERM);
  state_->kill_timer.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(grace_s)));
  std::weak_ptr<State> weak = state_;
  state_->kill_timer.async_wait([weak](const boost::system::error_code& ec) {
    auto s = weak.lock();
    if (ec || !s || !s->running) return;
    // mpirun's own exit then reaps and reports; the ranks go with it.
    ::kill(s->pid, SIGKILL);
    for (pid_t p : session_processes(s->pid)) ::kill(p, SIGKILL);
  });
}

bool JobProcess::running() const { return state_ && state_->running; }

bool JobProcess::killing() const { return running() && state_->killing; }

pid_t JobProcess::pid() const { return state_ ? state_->pid : 0; }

}  // namespace dptrain::launcher
