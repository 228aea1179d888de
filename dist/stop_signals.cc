#include "dist/stop_signals.h"

#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <string>
#include <thread>

#include "core/log.h"

namespace dptrain {
namespace {

constexpr int kSignals[] = {SIGTERM, SIGINT, SIGUSR1};

std::atomic<int> g_signal{0};
std::atomic<bool> g_armed{false};  // a StopSignals is alive
std::atomic<bool> g_sigint{false};

sigset_t stop_set() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : kSignals) sigaddset(&set, s);
  return set;
}

// The signal's default action: the process ends by it.
[[noreturn]] void end_by(int signal) {
  std::signal(signal, SIG_DFL);
  sigset_t one;
  sigemptyset(&one);
  sigaddset(&one, signal);
  pthread_sigmask(SIG_UNBLOCK, &one, nullptr);
  raise(signal);
  _exit(128 + signal);
}

// Records a stop request; false where the signal is to take its default
// action instead (no StopSignals alive, or a second SIGINT). Lock-free, so
// a handler may call it too.
bool recorded(int signal) {
  const bool second_sigint = signal == SIGINT && g_sigint.exchange(true);
  if (!g_armed.load() || second_sigint) return false;
  g_signal.store(signal);
  return true;
}

// For threads that had the signals unblocked before watch() (MPI's) or
// unblock them themselves. The signal is blocked while its handler runs,
// so the raise takes effect as the handler returns.
extern "C" void on_stop_signal(int signal) {
  if (recorded(signal)) return;
  std::signal(signal, SIG_DFL);
  raise(signal);
}

}  // namespace

void StopSignals::watch() {
  const sigset_t set = stop_set();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set] {
    for (;;) {
      int signal = 0;
      if (sigwait(&set, &signal) == 0 && !recorded(signal)) end_by(signal);
    }
  }).detach();
}

StopSignals::StopSignals() {
  g_armed.store(true);
  struct sigaction action = {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  for (int s : kSignals) sigaction(s, &action, nullptr);
}

StopSignals::~StopSignals() {
  g_armed.store(false);
  for (int s : kSignals) std::signal(s, SIG_DFL);
}

unsigned StopSignals::requests() {
  const int signal = g_signal.load();
  if (signal == 0) return kNoRequest;
  if (!announced_) {
    announced_ = true;
    log_warn("got signal " + std::to_string(signal) +
             "; checkpointing and stopping at the next step");
  }
  return kStopRequest;
}

}  // namespace dptrain
