// The learning rate as a function of the optimizer step, from
// SolverSpec.base_lr and SolverSpec.lr_schedule. A pure function of the
// step, so a resumed run gets the same rates without any saved state.
//
// Boundaries are given in epochs (fractions allowed) and rounded to whole
// steps with steps_per_epoch. Policies, with PyTorch's formulas:
//   CONSTANT   base_lr
//   STEP       base_lr * gamma^floor(step / step_steps)             (StepLR)
//   MULTISTEP  base_lr * gamma^(milestones <= step)           (MultiStepLR)
//   COSINE     min_lr + (base_lr - min_lr) * (1 + cos(pi * s / S)) / 2
//              with s = step - warmup_steps clamped to [0, S] and
//              S = total_steps - warmup_steps, so the cosine spans the run
//              after warmup and stays at min_lr past its end.
// Warmup multiplies whatever the policy gives at the same step by a factor
// rising linearly from warmup_start_factor at step 0 to 1 at warmup_steps
// (LinearLR); from there on the factor is 1.
#pragma once

#include <cstdint>
#include <vector>

#include "core/dptrain.pb.h"

namespace dptrain {

class LrScheduler {
 public:
  // total_steps is the length of the run in optimizer steps (used by
  // COSINE). Throws UserError for a schedule that cannot be followed:
  // steps_per_epoch <= 0, negative base_lr, STEP whose step_epochs rounds
  // to less than one step, negative epochs, warmup_start_factor outside
  // [0, 1].
  LrScheduler(const SolverSpec& spec, int64_t steps_per_epoch, int64_t total_steps);

  // The learning rate at `step`, counted from 0.
  float lr(int64_t step) const;

 private:
  double policy_lr(int64_t step) const;

  LrSchedule::Policy policy_;
  double base_lr_;
  double gamma_;
  double min_lr_;
  int64_t step_steps_ = 0;           // STEP
  std::vector<int64_t> milestones_;  // MULTISTEP, sorted
  int64_t warmup_steps_ = 0;
  double warmup_start_factor_;
  int64_t total_steps_;
};

}  // namespace dptrain
