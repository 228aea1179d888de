#include "launcher/session_guard.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>

#include "launcher/job_process.h"
#include "launcher/launcher_log.h"

extern char** environ;

namespace dptrain::launcher {
namespace {

// The launcher's end of the socket to the guard; -1 without one.
std::atomic<int> guard_fd{-1};

// "+123\n" or "-123\n", written whole (a stream socket's short message
// from one writer is never interleaved with another's).
void send_line(int fd, char sign, pid_t pid) noexcept {
  char buf[24];
  char digits[20];
  int n = 0;
  for (unsigned long v = static_cast<unsigned long>(pid); n == 0 || v > 0; v /= 10) {
    digits[n++] = static_cast<char>('0' + v % 10);
  }
  int len = 0;
  buf[len++] = sign;
  while (n > 0) buf[len++] = digits[--n];
  buf[len++] = '\n';
  // MSG_NOSIGNAL: a guard that died must not take the launcher (or a job's
  // child about to exec mpirun) with it through SIGPIPE.
  while (::send(fd, buf, static_cast<size_t>(len), MSG_NOSIGNAL) < 0 && errno == EINTR) {
  }
}

}  // namespace

SessionGuard::SessionGuard(int hold_fd, double grace_s, const std::string& log_path) {
  if (guard_fd.load() >= 0) throw std::logic_error("the session guard is already running");
  // The binary by its own name, so that ps shows the guard as dptrain-launch.
  std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    throw std::runtime_error(std::string("session guard: socketpair: ") + std::strerror(errno));
  }
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  // Its own session: a terminal's hangup or Ctrl-C, meant for the
  // launcher, does not reach it. Nothing of the launcher's but the socket
  // and the lock: an inherited control-channel socket would keep the
  // workers' connections open after the launcher died.
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawn_file_actions_adddup2(&actions, pair[1], 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  if (hold_fd >= 0) posix_spawn_file_actions_adddup2(&actions, hold_fd, 3);
  posix_spawn_file_actions_addclosefrom_np(&actions, 4);
  char grace[32];
  std::snprintf(grace, sizeof grace, "%g", grace_s);
  std::string command = kSessionGuardCommand, grace_arg = grace, log = log_path;
  char* argv[] = {self.data(), command.data(), grace_arg.data(), log.data(), nullptr};
  const int rc = ::posix_spawn(&pid_, self.c_str(), &actions, &attr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(pair[1]);
  if (rc != 0) {
    ::close(pair[0]);
    throw std::runtime_error(std::string("cannot start the session guard: ") + std::strerror(rc));
  }
  guard_fd.store(pair[0]);
}

SessionGuard::~SessionGuard() {
  ::close(guard_fd.exchange(-1));
  while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
  }
}

void announce_session_to_guard() noexcept {
  const int fd = guard_fd.load();
  if (fd >= 0) send_line(fd, '+', ::getpid());
}

void release_session_from_guard(pid_t sid) {
  const int fd = guard_fd.load();
  if (fd >= 0) send_line(fd, '-', sid);
}

int session_guard_main(int argc, char** argv) {
  if (argc != 4) return 2;
  const double grace_s = std::strtod(argv[2], nullptr);
  const std::string log_path = argv[3];
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGHUP, SIG_IGN);
  ::signal(SIGPIPE, SIG_IGN);

  std::set<pid_t> sessions;
  std::string pending;
  char buf[256];
  for (;;) {
    const ssize_t n = ::read(0, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // the launcher is gone (or ended)
    pending.append(buf, static_cast<size_t>(n));
    for (size_t end; (end = pending.find('\n')) != std::string::npos; pending.erase(0, end + 1)) {
      const pid_t sid = static_cast<pid_t>(std::strtol(pending.c_str() + 1, nullptr, 10));
      if (sid <= 1) continue;
      if (pending[0] == '+') sessions.insert(sid);
      if (pending[0] == '-') sessions.erase(sid);
    }
  }
  if (sessions.empty()) return 0;

  // Workers whose channel closed checkpoint and leave by themselves; a
  // stopped or hung one is killed once the grace is over.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(grace_s);
  while (std::chrono::steady_clock::now() < deadline) {
    for (auto it = sessions.begin(); it != sessions.end();) {
      it = session_processes(*it).empty() ? sessions.erase(it) : std::next(it);
    }
    if (sessions.empty()) return 0;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  for (pid_t sid : sessions) {
    // Said before it is done, so that whoever sees the job gone finds why.
    try {
      LauncherLog(log_path).line("session guard: the launcher is gone and job session " +
                                 std::to_string(sid) + " had not ended " + argv[2] +
                                 " s later; killing it");
    } catch (const std::exception&) {
    }
    kill_session(sid, 10);
  }
  return 0;
}

}  // namespace dptrain::launcher
