// DPTRAIN_FAULT=KIND:RANK:STEP makes that rank fail at that step: how the
// tests check that faults end or restart a job cleanly. KIND is
//   throw      an internal error (exit 1)
//   kill       SIGKILL to itself
//   hang       sleeps forever (a stall)
//   ckpt_kill  SIGKILL while the checkpoint of that step is flushed but not
//              yet renamed (rank 0 writes checkpoints)
// Under dptrain-launch a fault fires on the first start only
// (DPTRAIN_ATTEMPT unset or 1), so the restarted job can finish.
#pragma once

#include <cstdint>
#include <string>

#include "dist/run_hook.h"

namespace dptrain {

class FaultInjector : public RunHook {
 public:
  // Reads the environment; throws UserError for a malformed DPTRAIN_FAULT.
  explicit FaultInjector(int rank);
  void before_step(int64_t step) override;
  // For the checkpoint writer's fault point.
  void before_rename(int64_t step) const;

 private:
  std::string kind_;
  int rank_ = -1;
  int64_t step_ = -1;
  int my_rank_;
};

}  // namespace dptrain
