// Learning-rate policies and warmup at chosen steps. Rates and factors are
// powers of two where possible so the expected values are exact.
#include "core/lr_schedule.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "core/error.h"

namespace dptrain {
namespace {

SolverSpec spec_with(LrSchedule::Policy policy, float base_lr = 0.5f) {
  SolverSpec spec;
  spec.set_base_lr(base_lr);
  spec.mutable_lr_schedule()->set_policy(policy);
  return spec;
}

TEST(LrSchedulerTest, ConstantByDefault) {
  SolverSpec spec;
  spec.set_base_lr(0.25f);
  const LrScheduler sched(spec, 10, 100);
  EXPECT_EQ(sched.lr(0), 0.25f);
  EXPECT_EQ(sched.lr(57), 0.25f);
  EXPECT_EQ(sched.lr(100000), 0.25f);
}

TEST(LrSchedulerTest, StepDecaysEveryStepEpochs) {
  SolverSpec spec = spec_with(LrSchedule::STEP);
  spec.mutable_lr_schedule()->set_step_epochs(2);
  spec.mutable_lr_schedule()->set_gamma(0.5f);
  const LrScheduler sched(spec, 10, 1000);  // decays every 20 steps
  EXPECT_EQ(sched.lr(0), 0.5f);
  EXPECT_EQ(sched.lr(19), 0.5f);
  EXPECT_EQ(sched.lr(20), 0.25f);
  EXPECT_EQ(sched.lr(39), 0.25f);
  EXPECT_EQ(sched.lr(40), 0.125f);
  EXPECT_EQ(sched.lr(100), 0.5f / 32);
}

TEST(LrSchedulerTest, StepEpochsMayBeFractional) {
  SolverSpec spec = spec_with(LrSchedule::STEP);
  spec.mutable_lr_schedule()->set_step_epochs(0.3f);  // 0.3 * 10 = 3 steps
  spec.mutable_lr_schedule()->set_gamma(0.5f);
  const LrScheduler sched(spec, 10, 1000);
  EXPECT_EQ(sched.lr(2), 0.5f);
  EXPECT_EQ(sched.lr(3), 0.25f);
  EXPECT_EQ(sched.lr(6), 0.125f);
}

TEST(LrSchedulerTest, MultistepDecaysAtEachMilestone) {
  SolverSpec spec = spec_with(LrSchedule::MULTISTEP);
  // Given out of order, as a user might; 2.5 epochs = 25 steps.
  spec.mutable_lr_schedule()->add_milestone_epochs(5);
  spec.mutable_lr_schedule()->add_milestone_epochs(2.5f);
  spec.mutable_lr_schedule()->set_gamma(0.5f);
  const LrScheduler sched(spec, 10, 1000);
  EXPECT_EQ(sched.lr(0), 0.5f);
  EXPECT_EQ(sched.lr(24), 0.5f);
  EXPECT_EQ(sched.lr(25), 0.25f);
  EXPECT_EQ(sched.lr(49), 0.25f);
  EXPECT_EQ(sched.lr(50), 0.125f);
  EXPECT_EQ(sched.lr(5000), 0.125f);
}

TEST(LrSchedulerTest, CosineEndpointsAndMidpoint) {
  SolverSpec spec = spec_with(LrSchedule::COSINE, 1.0f);
  spec.mutable_lr_schedule()->set_min_lr(0.125f);
  const LrScheduler sched(spec, 10, 100);
  EXPECT_EQ(sched.lr(0), 1.0f);
  EXPECT_FLOAT_EQ(sched.lr(50), 0.5625f);  // halfway between 1 and 0.125
  EXPECT_FLOAT_EQ(sched.lr(25), 0.125 + 0.875 * 0.5 * (1 + std::cos(std::numbers::pi / 4)));
  EXPECT_FLOAT_EQ(sched.lr(100), 0.125f);
  EXPECT_FLOAT_EQ(sched.lr(250), 0.125f);  // stays at min_lr past the end
  EXPECT_GT(sched.lr(49), sched.lr(50));
  EXPECT_GT(sched.lr(50), sched.lr(51));
}

TEST(LrSchedulerTest, WarmupRisesLinearlyToTheBaseRate) {
  SolverSpec spec = spec_with(LrSchedule::CONSTANT, 1.0f);
  spec.mutable_lr_schedule()->set_warmup_epochs(1);  // 10 steps
  spec.mutable_lr_schedule()->set_warmup_start_factor(0.25f);
  const LrScheduler sched(spec, 10, 100);
  EXPECT_EQ(sched.lr(0), 0.25f);
  EXPECT_FLOAT_EQ(sched.lr(2), 0.25f + 0.75f * 0.2f);
  EXPECT_FLOAT_EQ(sched.lr(5), 0.625f);
  EXPECT_FLOAT_EQ(sched.lr(9), 0.25f + 0.75f * 0.9f);
  EXPECT_EQ(sched.lr(10), 1.0f);
  EXPECT_EQ(sched.lr(60), 1.0f);
}

TEST(LrSchedulerTest, DefaultWarmupStartFactor) {
  SolverSpec spec = spec_with(LrSchedule::CONSTANT, 1.0f);
  spec.mutable_lr_schedule()->set_warmup_epochs(2);
  const LrScheduler sched(spec, 5, 100);
  EXPECT_FLOAT_EQ(sched.lr(0), 0.1f);
  EXPECT_EQ(sched.lr(10), 1.0f);
}

// The cosine starts where the warmup ends and spans the rest of the run.
TEST(LrSchedulerTest, WarmupThenCosine) {
  SolverSpec spec = spec_with(LrSchedule::COSINE, 1.0f);
  spec.mutable_lr_schedule()->set_min_lr(0.125f);
  spec.mutable_lr_schedule()->set_warmup_epochs(1);  // 10 steps
  spec.mutable_lr_schedule()->set_warmup_start_factor(0.5f);
  const LrScheduler sched(spec, 10, 110);
  EXPECT_EQ(sched.lr(0), 0.5f);
  EXPECT_FLOAT_EQ(sched.lr(5), 0.75f);
  EXPECT_EQ(sched.lr(10), 1.0f);
  EXPECT_FLOAT_EQ(sched.lr(60), 0.5625f);
  EXPECT_FLOAT_EQ(sched.lr(110), 0.125f);
}

// Warmup multiplies the policy's rate at the same step.
TEST(LrSchedulerTest, WarmupInFrontOfStep) {
  SolverSpec spec = spec_with(LrSchedule::STEP, 1.0f);
  spec.mutable_lr_schedule()->set_step_epochs(1);  // 10 steps
  spec.mutable_lr_schedule()->set_gamma(0.5f);
  spec.mutable_lr_schedule()->set_warmup_epochs(2);  // 20 steps
  spec.mutable_lr_schedule()->set_warmup_start_factor(0.5f);
  const LrScheduler sched(spec, 10, 100);
  EXPECT_EQ(sched.lr(0), 0.5f);
  EXPECT_FLOAT_EQ(sched.lr(10), 0.75f * 0.5f);
  EXPECT_EQ(sched.lr(20), 0.25f);
}

TEST(LrSchedulerTest, CosineRunShorterThanWarmupStaysDefined) {
  SolverSpec spec = spec_with(LrSchedule::COSINE, 1.0f);
  spec.mutable_lr_schedule()->set_warmup_epochs(5);  // 50 steps, run of 20
  const LrScheduler sched(spec, 10, 20);
  EXPECT_TRUE(std::isfinite(sched.lr(0)));
  EXPECT_TRUE(std::isfinite(sched.lr(19)));
  EXPECT_LT(sched.lr(19), 1.0f);
}

TEST(LrSchedulerTest, RejectsSchedulesThatCannotBeFollowed) {
  EXPECT_THROW(LrScheduler(spec_with(LrSchedule::CONSTANT), 0, 100), UserError);
  EXPECT_THROW(LrScheduler(spec_with(LrSchedule::CONSTANT, -0.1f), 10, 100), UserError);

  SolverSpec step = spec_with(LrSchedule::STEP);  // step_epochs unset
  EXPECT_THROW(LrScheduler(step, 10, 100), UserError);
  step.mutable_lr_schedule()->set_step_epochs(0.01f);  // rounds to 0 steps
  EXPECT_THROW(LrScheduler(step, 10, 100), UserError);

  SolverSpec multistep = spec_with(LrSchedule::MULTISTEP);
  multistep.mutable_lr_schedule()->add_milestone_epochs(-1);
  EXPECT_THROW(LrScheduler(multistep, 10, 100), UserError);

  SolverSpec warmup = spec_with(LrSchedule::CONSTANT);
  warmup.mutable_lr_schedule()->set_warmup_epochs(1);
  warmup.mutable_lr_schedule()->set_warmup_start_factor(1.5f);
  EXPECT_THROW(LrScheduler(warmup, 10, 100), UserError);
  warmup.mutable_lr_schedule()->set_warmup_start_factor(0.1f);
  warmup.mutable_lr_schedule()->set_warmup_epochs(-1);
  EXPECT_THROW(LrScheduler(warmup, 10, 100), UserError);
}

}  // namespace
}  // namespace dptrain
