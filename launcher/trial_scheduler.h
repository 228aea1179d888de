// The early-stopping rule of a sweep (Optuna's `Pruner`, Ray Tune's trial
// scheduler): at a rung a trial pauses, and the scheduler answers continue,
// stop or wait from the results recorded so far. Pure: it sees only a
// RungTable, so ASHA and MEDIAN are tested on toy objectives in any order
// of reporting (tests/launcher/test_launcher_sweep_scheduler.cc).
//
// Determinism rule: the decision for trial k at rung e compares its value
// with those of trials 0..k-1 at rung e only. A trial below k that ended
// (stopped, failed, done) without a value at e is left out; one that has
// neither a value at e nor has ended makes the answer kWait, and the
// driver asks again once it reports or ends. Trials above k never count.
// So every decision is a function of the trials' values alone, never of
// the order in which they report or of how many run at once, and a
// decision once taken is never revised (a later trial cannot promote an
// earlier one). Trial 0 is never stopped.
//   ASHA (Ray Tune's AsyncHyperBand with eta = reduction_factor): rungs at
//     min_epochs * eta^i below max_epochs. With n the number of values
//     compared, trial k's included, it continues iff it is among the top
//     max(1, floor(n / eta)); ties rank the lower trial index higher.
//   MEDIAN (Optuna's MedianPruner, Google Vizier's median stopping): a
//     rung at every epoch from grace_epochs on, below max_epochs. Once at
//     least min_trials earlier trials have a value at e, trial k stops iff
//     its best value at its rungs up to e is worse than the median of
//     their values at e; with fewer it continues.
//   NONE: no rungs; every trial runs to max_epochs.
// "Better" follows the Objective's goal; a NaN value is worse than any
// number.
#pragma once

#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "core/dptrain.pb.h"

namespace dptrain::launcher {

// Results recorded at rungs: what every decision reads. Filled by the
// driver from the sweep state (SweepState::rung_table).
struct RungTable {
  // (trial, epoch) -> objective at that evaluation
  std::map<std::pair<int, int>, double> value;
  // Trials that ended (stopped, failed, done): the last epoch they
  // reached (failed: where they failed).
  std::map<int, int> last_epoch;
};

class TrialScheduler {
 public:
  // `spec` must have passed validate_sweep_spec; `max_epochs` as
  // max_epochs(spec, base).
  static std::unique_ptr<TrialScheduler> create(const SchedulerSpec& spec, int max_epochs,
                                                const Objective& objective);
  virtual ~TrialScheduler() = default;

  // Epochs (< max_epochs) at which every trial pauses for a decision,
  // ascending: ASHA min_epochs * eta^k; MEDIAN every epoch from
  // grace_epochs; NONE none.
  virtual std::vector<int> rung_epochs() const = 0;

  enum class Decision { kContinue, kStop, kWait };
  // Trial `trial` has reported table.value[{trial, epoch}] at rung
  // `epoch` (throws std::logic_error if it has not). kWait while a trial
  // it compares against has neither reported at that rung nor ended.
  virtual Decision decide(int trial, int epoch, const RungTable& table) const = 0;
};

const char* decision_name(TrialScheduler::Decision d);  // "continue", "stop", "wait"

}  // namespace dptrain::launcher
