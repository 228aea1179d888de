// Runs a command line through the shell and captures its output and exit
// code, for end-to-end tests of the binaries, or in the background in a
// session of its own.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <thread>

#include "launcher/job_process.h"

namespace dptrain::testing {

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr, interleaved
};

inline CommandResult run_command(const std::string& command) {
  CommandResult r;
  std::FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) r.output.append(buf.data(), n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A fresh folder under the system temp dir, removed with the object.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/dptrain-test-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  // Never throws: a process the test started may still be renaming a file
  // in the folder (a launcher writing its report as it exits), which makes
  // remove_all fail with "no such file"; it is tried again.
  ~TempDir() {
    std::error_code ec;
    for (int attempt = 0; attempt < 50; ++attempt) {
      std::filesystem::remove_all(path_, ec);
      if (!ec) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  const std::filesystem::path& path() const { return path_; }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// A shell command run in the background in a session of its own, so that
// a test can signal it and, whatever happens, stop all of it: the
// destructor kills every process left in the session.
class Background {
 public:
  explicit Background(const std::string& command) {
    pid_ = fork();
    if (pid_ == 0) {
      setsid();
      execl("/bin/sh", "sh", "-c", ("exec " + command).c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  ~Background() {
    // mpirun gives each rank a process group of its own, not a session.
    launcher::kill_session(pid_, 5);
    if (!done_) waitpid(pid_, nullptr, 0);
  }
  Background(const Background&) = delete;
  Background& operator=(const Background&) = delete;

  pid_t pid() const { return pid_; }
  void signal(int sig) const { kill(pid_, sig); }
  // The exit code (128 + signal when killed), or -1 if still running after
  // `timeout_s`.
  int wait(double timeout_s) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (!done_) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        done_ = true;
        code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      } else if (std::chrono::steady_clock::now() > until) {
        return -1;
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
    return code_;
  }

 private:
  pid_t pid_ = -1;
  bool done_ = false;
  int code_ = -1;
};

// `dptrain diff-weights A B`'s max_rel_diff between two weight files (or
// checkpoints); infinity if it failed, its output printed.
inline double max_rel_diff(const std::string& bin, const std::string& a, const std::string& b) {
  const CommandResult r = run_command(bin + " diff-weights " + a + " " + b);
  const auto at = r.output.rfind("max_rel_diff ");
  if (r.exit_code != 0 || at == std::string::npos) {
    std::fprintf(stderr, "diff-weights failed:\n%s\n", r.output.c_str());
    return std::numeric_limits<double>::infinity();
  }
  return std::stod(r.output.substr(at + 13));
}

// Open MPI refuses to run as root unless told; CI runs as root.
inline const std::string kMpiAsRoot =
    "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 ";

// The prefix that runs a command as `ranks` MPI ranks on CI's two cores:
// one thread per rank, ranks that yield when idle (oversubscribed ranks
// must not spin), ended after 300 s whatever happens.
inline std::string mpiexec(int ranks, const std::string& extra_mca = "") {
  return kMpiAsRoot + "OMP_NUM_THREADS=1 timeout 300 mpiexec -np " + std::to_string(ranks) +
         " --oversubscribe --bind-to none --mca mpi_yield_when_idle 1 " + extra_mca + " ";
}

// Polls until `ready` holds or `timeout_s` passes; returns whether it held.
template <class Ready>
bool wait_for(Ready ready, double timeout_s) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (!ready()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

}  // namespace dptrain::testing
