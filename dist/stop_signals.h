// Preemption: SIGTERM, SIGINT and SIGUSR1 (what Slurm's --signal and
// Kubernetes send before they kill) ask for a checkpoint and a stop at the
// next step boundary, agreed by all ranks; the job then exits 75. A second
// SIGINT ends the process at once, as people expect of Ctrl-C.
//
// The signals are taken by a thread of their own (sigwait), blocked in
// every thread started after watch(): delivered to a thread at work, a
// handler ran on that thread's stack in the middle of whatever it was
// doing, and about one run in ten stopped that way ended in heap
// corruption inside oneDNN's GEMM. Outside a StopSignals' life they end
// the process, as their default action would.
#pragma once

#include "dist/run_hook.h"

namespace dptrain {

class StopSignals : public RunHook {
 public:
  // Blocks the signals in the calling thread, so in every thread it starts
  // from then on, and starts the thread that takes them. Once per process,
  // before the threads of our own (MPI's, started earlier, run a handler
  // that only records the signal).
  static void watch();

  StopSignals();
  ~StopSignals() override;
  unsigned requests() override;

 private:
  bool announced_ = false;
};

}  // namespace dptrain
