#include "dist/stop_signals.h"

#include "core/log.h"

#include <csignal>
#include <cstdio>

namespace dptrain {
namespace {

volatile std::sig_atomic_t g_signal = 0;

extern "C" void on_stop_signal(int signal) {
  g_signal = signal;
  if (signal == SIGINT) std::signal(SIGINT, SIG_DFL);
}

constexpr int kSignals[] = {SIGTERM, SIGINT, SIGUSR1};

}  // namespace

StopSignals::StopSignals() {
  struct sigaction action = {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  for (int s : kSignals) sigaction(s, &action, nullptr);
}

StopSignals::~StopSignals() {
  for (int s : kSignals) std::signal(s, SIG_DFL);
}

unsigned StopSignals::requests() {
  if (g_signal == 0) return kNoRequest;
  if (!announced_) {
    announced_ = true;
    log_warn("got signal " + std::to_string(static_cast<int>(g_signal)) +
             "; checkpointing and stopping at the next step");
  }
  return kStopRequest;
}

}  // namespace dptrain
