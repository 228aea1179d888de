// `dptrain-launch sweep`: runs a sweep's trials as supervised jobs (one
// Supervisor each, on a thread of its own, in DIR/trial-NNNN) and is the
// one place where the search algorithm, the scheduler and the sweep state
// meet (Optuna's sampler, pruner and storage; Ray Tune's scheduler).
//
// Trials start in index order, never more at once than the concurrency;
// each is configured for the maximum resource and pauses at the
// scheduler's rung epochs (dptrain train --rung-epochs) until the runner
// answers. Decisions follow the deterministic rules of search_algorithm.h
// and trial_scheduler.h, and every change is a transaction in sweep.db,
// so a killed sweep resumed (--resume) reruns no finished trial, continues
// interrupted ones from their checkpoints and ends with the same
// leaderboard. At the end: leaderboard.csv, best.textproto and
// sweep_summary.json in DIR.
#pragma once

#include <string>

#include "core/dptrain.pb.h"

namespace dptrain::launcher {

struct SweepOptions {
  SweepSpec spec;      // validated
  TrainSpec base;      // resolved (resolve_sweep_base)
  std::string dir;     // absolute; exists
  std::string worker;  // the dptrain binary
  std::string mpirun;
  bool live = false;  // stdout is a terminal
};

// Runs to the end; returns the exit code: 0 finished (failed trials are
// data, not errors), 75 stopped by a signal (resume with --resume).
int run_sweep(const SweepOptions& options);

}  // namespace dptrain::launcher
