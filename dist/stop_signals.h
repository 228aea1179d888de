// Preemption: SIGTERM, SIGINT and SIGUSR1 (what Slurm's --signal and
// Kubernetes send before they kill) ask for a checkpoint and a stop at the
// next step boundary, agreed by all ranks; the job then exits 75. A second
// SIGINT ends the process at once, as people expect of Ctrl-C.
#pragma once

#include "dist/run_hook.h"

namespace dptrain {

class StopSignals : public RunHook {
 public:
  StopSignals();
  ~StopSignals() override;
  unsigned requests() override;

 private:
  bool announced_ = false;
};

}  // namespace dptrain
