// Checking a SweepSpec before anything starts: every invalid combination
// of search space, algorithm, objective, scheduler and sizes is a UserError
// with one line naming the field (param[2].min, scheduler.reduction_factor,
// objective.metric, ...), so a sweep never fails an hour in on something
// that could be seen from its config. Pure: reads no files except where
// resolve_sweep_base is asked to load the base config.
#pragma once

#include <string>

#include "core/dptrain.pb.h"

namespace dptrain::launcher {

// The metrics an objective may name: the fields of the eval records in
// metrics.jsonl.
inline constexpr const char* kObjectiveMetrics[] = {
    "test_accuracy", "test_loss",        "val_accuracy", "val_loss",
    "auc_macro",     "map_macro",        "auc",          "average_precision",
    "knn_accuracy",  "verification_auc", "retrieval_map"};

// The train config every trial starts from: `base_config` (relative to the
// folder of `sweep_config_path`) or the inline `base`, exactly one of them,
// with the sweep's `set` overrides applied and validate_train_spec passed.
TrainSpec resolve_sweep_base(const SweepSpec& spec, const std::string& sweep_config_path);

// Throws UserError with one line naming the field for any invalid
// combination. `base` is the resolved base (resolve_sweep_base): each
// param's values (CHOICE: each of them; otherwise min and max, printed as
// the search algorithm prints them) must apply to it with --set's
// reflection and give a config that passes validate_train_spec.
void validate_sweep_spec(const SweepSpec& spec, const TrainSpec& base);

// The epochs every trial is configured for: scheduler.max_epochs, or the
// base's solver.epochs when that is 0.
int max_epochs(const SweepSpec& spec, const TrainSpec& base);

}  // namespace dptrain::launcher
