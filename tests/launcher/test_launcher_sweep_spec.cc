// Checking a sweep config before anything starts (launcher/sweep_spec.h):
// every invalid combination gives one line naming the field, a valid one
// passes, and the base config is found and resolved as documented.
#include <gmock/gmock.h>
#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "core/config.h"
#include "core/error.h"
#include "launcher/sweep_spec.h"

namespace dptrain::launcher {
namespace {

using ::testing::HasSubstr;

const std::string kConfigs = std::string(DPTRAIN_SOURCE_DIR) + "/configs";

TrainSpec lenet_base() {
  TrainSpec base = load_train_spec(kConfigs + "/lenet5_fmnist.textproto");
  apply_override(&base, "data.validation_size=5000");
  return base;
}

// A valid sweep: each case below breaks one thing in it.
SweepSpec valid() {
  SweepSpec spec;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(
      R"pb(
        param { path: "solver.base_lr" kind: LOG_UNIFORM min: 0.005 max: 0.2 }
        param { path: "solver.momentum" kind: UNIFORM min: 0.8 max: 0.95 }
        param { path: "data.batch_size" kind: CHOICE values: "32" values: "64" }
        param {
          path: "net.layer[fc1].inner_product.num_output"
          kind: INT_RANGE
          min: 60
          max: 180
          step: 30
        }
        algorithm: TPE
        trials: 12
        scheduler { type: ASHA reduction_factor: 3 min_epochs: 1 }
      )pb",
      &spec));
  return spec;
}

std::string error_of(const SweepSpec& spec, const TrainSpec& base) {
  try {
    validate_sweep_spec(spec, base);
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

TEST(LauncherSweepSpec, AValidSweepPasses) {
  EXPECT_EQ(error_of(valid(), lenet_base()), "");
  SweepSpec grid = valid();
  grid.set_algorithm(SweepSpec::GRID);
  grid.set_trials(0);
  EXPECT_EQ(error_of(grid, lenet_base()), "");
  SweepSpec median = valid();
  median.mutable_scheduler()->set_type(SchedulerSpec::MEDIAN);
  EXPECT_EQ(error_of(median, lenet_base()), "");
  // The shipped sweep, resolved as the driver resolves it.
  const std::string shipped = kConfigs + "/sweep_lenet5_fmnist.textproto";
  if (std::filesystem::exists(shipped)) {
    SweepSpec spec;
    load_text(shipped, &spec);
    EXPECT_EQ(error_of(spec, resolve_sweep_base(spec, shipped)), "");
  }
}

struct Case {
  const char* name;
  std::function<void(SweepSpec*, TrainSpec*)> mutate;
  const char* names;  // what the message must contain
};

TEST(LauncherSweepSpec, EachInvalidCombinationIsOneLineNamingTheField) {
  const Case cases[] = {
      {"no params", [](SweepSpec* s, TrainSpec*) { s->clear_param(); }, "param"},
      {"unknown path",
       [](SweepSpec* s, TrainSpec*) { s->mutable_param(1)->set_path("solver.nope"); },
       "param[1] (solver.nope)"},
      {"empty path", [](SweepSpec* s, TrainSpec*) { s->mutable_param(0)->clear_path(); },
       "param[0].path"},
      {"same path twice",
       [](SweepSpec* s, TrainSpec*) { s->mutable_param(1)->set_path("solver.base_lr"); },
       "param[1] (solver.base_lr): the path appears in an earlier param"},
      {"choice without values",
       [](SweepSpec* s, TrainSpec*) { s->mutable_param(2)->clear_values(); },
       "param[2] (data.batch_size): CHOICE needs"},
      {"choice value rejected",
       [](SweepSpec* s, TrainSpec*) { s->mutable_param(2)->add_values("lots"); },
       "param[2] (data.batch_size)"},
      {"choice value failing validation",
       [](SweepSpec* s, TrainSpec*) { s->mutable_param(2)->add_values("0"); }, "data.batch_size"},
      {"choice value with a line break",
       [](SweepSpec* s, TrainSpec*) { s->mutable_param(2)->add_values("32\n64"); },
       "param[2] (data.batch_size): values[2] holds a line break"},
      {"uniform min == max", [](SweepSpec* s, TrainSpec*) { s->mutable_param(1)->set_max(0.8); },
       "param[1] (solver.momentum): UNIFORM needs min < max"},
      {"uniform without max", [](SweepSpec* s, TrainSpec*) { s->mutable_param(1)->clear_max(); },
       "param[1] (solver.momentum): UNIFORM needs min and max"},
      {"log-uniform min 0", [](SweepSpec* s, TrainSpec*) { s->mutable_param(0)->set_min(0); },
       "param[0] (solver.base_lr): LOG_UNIFORM needs min > 0"},
      {"log-uniform min > max", [](SweepSpec* s, TrainSpec*) { s->mutable_param(0)->set_min(1); },
       "param[0] (solver.base_lr): LOG_UNIFORM needs min < max"},
      {"value failing validate_train_spec",
       [](SweepSpec* s, TrainSpec*) { s->mutable_param(1)->set_min(-1); },
       "param[1] (solver.momentum): solver.momentum"},
      {"uniform over an integer field",
       [](SweepSpec* s, TrainSpec*) { s->mutable_param(3)->set_kind(SearchParam::UNIFORM); },
       "param[3] (net.layer[fc1].inner_product.num_output): an integer field; use kind INT_RANGE"},
      {"int range min > max", [](SweepSpec* s, TrainSpec*) { s->mutable_param(3)->set_max(30); },
       "param[3] (net.layer[fc1].inner_product.num_output): INT_RANGE needs min <= max"},
      {"int range step 0", [](SweepSpec* s, TrainSpec*) { s->mutable_param(3)->set_step(0); },
       "param[3] (net.layer[fc1].inner_product.num_output): step must be >= 1"},
      {"int range fractional bound",
       [](SweepSpec* s, TrainSpec*) { s->mutable_param(3)->set_min(60.5); },
       "INT_RANGE needs whole-number min and max"},
      {"random without trials",
       [](SweepSpec* s, TrainSpec*) {
         s->set_algorithm(SweepSpec::RANDOM);
         s->set_trials(0);
       },
       "trials must be >= 1 for RANDOM"},
      {"tpe without trials", [](SweepSpec* s, TrainSpec*) { s->set_trials(0); },
       "trials must be >= 1 for TPE"},
      {"tpe gamma 0", [](SweepSpec* s, TrainSpec*) { s->mutable_tpe()->set_gamma(0); },
       "tpe.gamma"},
      {"tpe candidates 0", [](SweepSpec* s, TrainSpec*) { s->mutable_tpe()->set_candidates(0); },
       "tpe.candidates"},
      {"tpe startup -1", [](SweepSpec* s, TrainSpec*) { s->mutable_tpe()->set_startup_trials(-1); },
       "tpe.startup_trials"},
      {"grid over a continuous param with one point",
       [](SweepSpec* s, TrainSpec*) {
         s->set_algorithm(SweepSpec::GRID);
         s->mutable_param(1)->set_grid_points(1);
       },
       "param[1] (solver.momentum): grid_points must be >= 2 for GRID"},
      {"grid with negative trials",
       [](SweepSpec* s, TrainSpec*) {
         s->set_algorithm(SweepSpec::GRID);
         s->set_trials(-1);
       },
       "trials must be >= 0 for GRID"},
      {"a grid too large to count",
       [](SweepSpec* s, TrainSpec*) {
         s->set_algorithm(SweepSpec::GRID);
         s->set_trials(0);
         s->mutable_param(3)->set_path("data.train_limit");  // int64
         s->mutable_param(3)->set_min(0);
         s->mutable_param(3)->set_max(1e12);
         s->mutable_param(3)->set_step(1);
       },
       "trials: the GRID has more than 2147483647 points"},
      {"asha eta 1",
       [](SweepSpec* s, TrainSpec*) { s->mutable_scheduler()->set_reduction_factor(1); },
       "scheduler.reduction_factor"},
      {"asha min_epochs 0",
       [](SweepSpec* s, TrainSpec*) { s->mutable_scheduler()->set_min_epochs(0); },
       "scheduler.min_epochs"},
      {"asha without a rung",
       [](SweepSpec* s, TrainSpec*) { s->mutable_scheduler()->set_max_epochs(2); },
       "scheduler.max_epochs (2) must be >= min_epochs * reduction_factor (1 * 3)"},
      {"asha without a rung, from the base",
       [](SweepSpec*, TrainSpec* b) { b->mutable_solver()->set_epochs(2); },
       "scheduler.max_epochs (2, the base's solver.epochs)"},
      {"negative max_epochs",
       [](SweepSpec* s, TrainSpec*) { s->mutable_scheduler()->set_max_epochs(-1); },
       "scheduler.max_epochs must be >= 0"},
      {"searching solver.epochs under a scheduler",
       [](SweepSpec* s, TrainSpec*) {
         auto* p = s->add_param();
         p->set_path("solver.epochs");
         p->add_values("5");
       },
       "param[4] (solver.epochs): a scheduler sets every trial's solver.epochs"},
      {"median grace 0",
       [](SweepSpec* s, TrainSpec*) {
         s->mutable_scheduler()->set_type(SchedulerSpec::MEDIAN);
         s->mutable_scheduler()->set_grace_epochs(0);
       },
       "scheduler.grace_epochs must be >= 1"},
      {"median grace beyond the run",
       [](SweepSpec* s, TrainSpec*) {
         s->mutable_scheduler()->set_type(SchedulerSpec::MEDIAN);
         s->mutable_scheduler()->set_grace_epochs(10);
       },
       "scheduler.grace_epochs (10) must be below max_epochs (10)"},
      {"median min_trials 0",
       [](SweepSpec* s, TrainSpec*) {
         s->mutable_scheduler()->set_type(SchedulerSpec::MEDIAN);
         s->mutable_scheduler()->set_min_trials(0);
       },
       "scheduler.min_trials"},
      {"ranks_per_trial 0", [](SweepSpec* s, TrainSpec*) { s->set_ranks_per_trial(0); },
       "ranks_per_trial must be >= 1"},
      {"concurrent_trials -1", [](SweepSpec* s, TrainSpec*) { s->set_concurrent_trials(-1); },
       "concurrent_trials must be >= 0"},
      {"max_restarts -1", [](SweepSpec* s, TrainSpec*) { s->set_max_restarts(-1); },
       "max_restarts"},
      {"stall_timeout_s 0", [](SweepSpec* s, TrainSpec*) { s->set_stall_timeout_s(0); },
       "stall_timeout_s"},
      {"unknown metric",
       [](SweepSpec* s, TrainSpec*) { s->mutable_objective()->set_metric("acc"); },
       "objective.metric must be one of the eval record fields (test_accuracy, test_loss, "
       "val_accuracy, val_loss, auc_macro, map_macro, auc, average_precision, knn_accuracy, "
       "verification_auc, retrieval_map), got \"acc\""},
      {"start point under GRID",
       [](SweepSpec* s, TrainSpec*) {
         s->set_algorithm(SweepSpec::GRID);
         s->add_start_point()->add_set("solver.base_lr=0.05");
       },
       "start_point: GRID runs its own points"},
      {"more start points than trials",
       [](SweepSpec* s, TrainSpec*) {
         s->set_trials(1);
         for (int i = 0; i < 2; ++i) {
           TrialPoint* p = s->add_start_point();
           for (const char* a : {"solver.base_lr=0.05", "solver.momentum=0.9", "data.batch_size=64",
                                 "net.layer[fc1].inner_product.num_output=120"})
             p->add_set(a);
         }
       },
       "start_point: 2 points but only 1 trials"},
      {"start point missing a param",
       [](SweepSpec* s, TrainSpec*) { s->add_start_point()->add_set("solver.base_lr=0.05"); },
       "start_point[0]: sets no value for solver.momentum"},
      {"start point outside the space",
       [](SweepSpec* s, TrainSpec*) { s->add_start_point()->add_set("solver.base_lr=0.5"); },
       "start_point[0]: solver.base_lr=0.5 is not a number in [0.005, 0.2]"},
      {"start point off the integer steps",
       [](SweepSpec* s, TrainSpec*) {
         s->add_start_point()->add_set("net.layer[fc1].inner_product.num_output=100");
       },
       "start_point[0]: net.layer[fc1].inner_product.num_output=100 is not min + a multiple"},
      {"start point choice not among the values",
       [](SweepSpec* s, TrainSpec*) { s->add_start_point()->add_set("data.batch_size=48"); },
       "start_point[0]: data.batch_size=48 is not among the param's values"},
      {"start point setting a param twice",
       [](SweepSpec* s, TrainSpec*) {
         s->add_start_point()->add_set("data.batch_size=32");
         s->mutable_start_point(0)->add_set("data.batch_size=64");
       },
       "start_point[0]: data.batch_size is set twice"},
      {"start point setting no param",
       [](SweepSpec* s, TrainSpec*) { s->add_start_point()->add_set("solver.epochs=3"); },
       "start_point[0]: \"solver.epochs=3\" sets no param of the search space"},
      {"val metric without a validation split",
       [](SweepSpec*, TrainSpec* b) { b->mutable_data()->set_validation_size(0); },
       "objective.metric val_accuracy needs a validation split: set data.validation_size > 0"},
  };
  for (const Case& c : cases) {
    SweepSpec spec = valid();
    TrainSpec base = lenet_base();
    c.mutate(&spec, &base);
    const std::string error = error_of(spec, base);
    EXPECT_THAT(error, HasSubstr(c.names)) << c.name;
    EXPECT_EQ(error.find('\n'), std::string::npos) << c.name << ": " << error;
  }
}

TEST(LauncherSweepSpec, TestMetricsNeedNoValidationSplit) {
  SweepSpec spec = valid();
  spec.mutable_objective()->set_metric("test_loss");
  spec.mutable_objective()->set_goal(Objective::MINIMIZE);
  TrainSpec base = lenet_base();
  base.mutable_data()->set_validation_size(0);
  EXPECT_EQ(error_of(spec, base), "");
}

TEST(LauncherSweepSpec, MaxEpochsComesFromTheSchedulerOrTheBase) {
  SweepSpec spec = valid();
  TrainSpec base = lenet_base();  // solver.epochs 10
  EXPECT_EQ(max_epochs(spec, base), base.solver().epochs());
  spec.mutable_scheduler()->set_max_epochs(27);
  EXPECT_EQ(max_epochs(spec, base), 27);
}

TEST(LauncherSweepSpec, TheBaseIsAFileBesideTheSweepConfigOrInline) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("sweep_spec_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir / "sub");
  std::filesystem::copy_file(kConfigs + "/lenet5_fmnist.textproto", dir / "sub" / "base.textproto",
                             std::filesystem::copy_options::overwrite_existing);
  const std::string sweep_config = (dir / "sweep.textproto").string();

  SweepSpec spec;
  spec.set_base_config("sub/base.textproto");
  spec.add_set("solver.epochs=4");
  TrainSpec base = resolve_sweep_base(spec, sweep_config);
  EXPECT_EQ(base.name(), "lenet5_fmnist");
  EXPECT_EQ(base.solver().epochs(), 4);

  SweepSpec inline_spec;
  *inline_spec.mutable_base() = base;
  inline_spec.add_set("solver.base_lr=0.5");
  EXPECT_FLOAT_EQ(resolve_sweep_base(inline_spec, sweep_config).solver().base_lr(), 0.5f);

  SweepSpec both = inline_spec;
  both.set_base_config("sub/base.textproto");
  EXPECT_THROW(resolve_sweep_base(both, sweep_config), UserError);
  EXPECT_THROW(resolve_sweep_base(SweepSpec(), sweep_config), UserError);
  SweepSpec bad_set = spec;
  bad_set.add_set("solver.nope=1");
  EXPECT_THROW(resolve_sweep_base(bad_set, sweep_config), UserError);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace dptrain::launcher

namespace dptrain::launcher {
namespace {

TEST(LauncherSweepSpec, ShippedSweepConfigsParseAndValidate) {
  const std::filesystem::path dir = std::filesystem::path(DPTRAIN_SOURCE_DIR) / "configs";
  int checked = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("sweep_", 0) != 0 || entry.path().extension() != ".textproto") continue;
    SCOPED_TRACE(name);
    try {
      SweepSpec spec;
      load_text(entry.path().string(), &spec);
      validate_sweep_spec(spec, resolve_sweep_base(spec, entry.path().string()));
    } catch (const UserError& e) {
      ADD_FAILURE() << e.what();
    }
    ++checked;
  }
  EXPECT_GE(checked, 1);
}

}  // namespace
}  // namespace dptrain::launcher
