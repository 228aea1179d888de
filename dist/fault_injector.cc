#include "dist/fault_injector.h"

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <thread>

#include "core/error.h"

namespace dptrain {

FaultInjector::FaultInjector(int rank) : my_rank_(rank) {
  const char* env = std::getenv("DPTRAIN_FAULT");
  if (!env) return;
  char kind[16] = {};
  long long step = -1;
  int fault_rank = -1;
  if (std::sscanf(env, "%15[a-z_]:%d:%lld", kind, &fault_rank, &step) != 3) {
    throw UserError(
        std::string("DPTRAIN_FAULT must be throw|kill|hang|ckpt_kill:RANK:STEP, got '") + env +
        "'");
  }
  const char* attempt = std::getenv("DPTRAIN_ATTEMPT");
  if (attempt && std::string(attempt) != "1") return;
  kind_ = kind;
  rank_ = fault_rank;
  step_ = step;
}

void FaultInjector::before_step(int64_t step) {
  if (rank_ != my_rank_ || step_ != step || kind_ == "ckpt_kill") return;
  if (kind_ == "kill") std::raise(SIGKILL);
  while (kind_ == "hang") std::this_thread::sleep_for(std::chrono::seconds(1));
  throw std::runtime_error("injected fault at step " + std::to_string(step));
}

void FaultInjector::before_rename(int64_t step) const {
  if (kind_ == "ckpt_kill" && rank_ == my_rank_ && step_ == step) std::raise(SIGKILL);
}

}  // namespace dptrain
