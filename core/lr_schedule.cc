#include "core/lr_schedule.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <numbers>
#include <string>

#include "core/error.h"

namespace dptrain {
namespace {

// Epochs to whole steps. Negative epochs are a config error.
int64_t to_steps(float epochs, int64_t steps_per_epoch, const char* field) {
  if (!(epochs >= 0)) {
    throw UserError(std::string("solver.lr_schedule.") + field + " must be >= 0, got " +
                    std::to_string(epochs));
  }
  return std::llround(static_cast<double>(epochs) * static_cast<double>(steps_per_epoch));
}

}  // namespace

LrScheduler::LrScheduler(const SolverSpec& spec, int64_t steps_per_epoch, int64_t total_steps)
    : policy_(spec.lr_schedule().policy()),
      base_lr_(spec.base_lr()),
      gamma_(spec.lr_schedule().gamma()),
      min_lr_(spec.lr_schedule().min_lr()),
      warmup_start_factor_(spec.lr_schedule().warmup_start_factor()),
      total_steps_(total_steps) {
  const LrSchedule& s = spec.lr_schedule();
  if (steps_per_epoch <= 0) {
    throw UserError("an epoch must have at least one step, got " + std::to_string(steps_per_epoch) +
                    " (is the batch larger than the data?)");
  }
  if (!(base_lr_ >= 0)) {
    throw UserError("solver.base_lr must be >= 0, got " + std::to_string(spec.base_lr()));
  }
  if (!(warmup_start_factor_ >= 0 && warmup_start_factor_ <= 1)) {
    throw UserError("solver.lr_schedule.warmup_start_factor must be in [0, 1], got " +
                    std::to_string(s.warmup_start_factor()));
  }
  warmup_steps_ = to_steps(s.warmup_epochs(), steps_per_epoch, "warmup_epochs");
  switch (policy_) {
    case LrSchedule::CONSTANT:
    case LrSchedule::COSINE:
      break;
    case LrSchedule::STEP:
      step_steps_ = to_steps(s.step_epochs(), steps_per_epoch, "step_epochs");
      if (step_steps_ < 1) {
        throw UserError("solver.lr_schedule.step_epochs = " + std::to_string(s.step_epochs()) +
                        " is less than one step (" + std::to_string(steps_per_epoch) +
                        " steps per epoch); the STEP policy needs it");
      }
      break;
    case LrSchedule::MULTISTEP:
      for (float epochs : s.milestone_epochs()) {
        milestones_.push_back(to_steps(epochs, steps_per_epoch, "milestone_epochs"));
      }
      std::sort(milestones_.begin(), milestones_.end());
      break;
    default:
      throw UserError("solver.lr_schedule.policy: unknown policy " + std::to_string(policy_));
  }
}

double LrScheduler::policy_lr(int64_t step) const {
  switch (policy_) {
    case LrSchedule::STEP:
      return base_lr_ * std::pow(gamma_, static_cast<double>(step / step_steps_));
    case LrSchedule::MULTISTEP: {
      const auto passed =
          std::upper_bound(milestones_.begin(), milestones_.end(), step) - milestones_.begin();
      return base_lr_ * std::pow(gamma_, static_cast<double>(passed));
    }
    case LrSchedule::COSINE: {
      // A run that ends inside the warmup never reaches the cosine; keep
      // the span at least one step so the formula stays defined.
      const int64_t span = std::max<int64_t>(total_steps_ - warmup_steps_, 1);
      const int64_t into = std::clamp<int64_t>(step - warmup_steps_, 0, span);
      const double progress = static_cast<double>(into) / static_cast<double>(span);
      return min_lr_ + (base_lr_ - min_lr_) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
    }
    default:
      return base_lr_;
  }
}

float LrScheduler::lr(int64_t step) const {
  assert(step >= 0);
  double factor = 1.0;
  if (step < warmup_steps_) {
    factor = warmup_start_factor_ + (1.0 - warmup_start_factor_) * static_cast<double>(step) /
                                        static_cast<double>(warmup_steps_);
  }
  return static_cast<float>(factor * policy_lr(step));
}

}  // namespace dptrain
