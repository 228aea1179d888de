// Turning a `run` invocation into a checked LaunchSpec before anything is
// started: the config loads, every --set applies and the result passes
// validate_train_spec; the numbers are in range; the hostfile is readable;
// the listen address parses; the run folder is new (or, for --resume,
// holds a launcher run). Each problem throws UserError with one line.
#pragma once

#include <string>

#include "core/dptrain.pb.h"

namespace dptrain::launcher {

// The TrainSpec the worker will run, or UserError. Paths in `spec` are
// used as they are.
TrainSpec resolve_train_spec(const LaunchSpec& spec);

// Checks everything of a spec that does not depend on the run folder,
// makes its paths (config, hostfile, run_dir if set) absolute, and
// returns the resolved TrainSpec.
TrainSpec check_launch_spec(LaunchSpec* spec);

}  // namespace dptrain::launcher
