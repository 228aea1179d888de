#include "launcher/launch_spec.h"

#include <cmath>
#include <filesystem>

#include "core/config.h"
#include "core/error.h"
#include "launcher/mpirun_command.h"

namespace dptrain::launcher {
namespace {

std::string absolute(const std::string& path) {
  return std::filesystem::absolute(path).lexically_normal().string();
}

}  // namespace

TrainSpec resolve_train_spec(const LaunchSpec& spec) {
  TrainSpec train = load_train_spec(spec.config());
  for (const std::string& s : spec.set()) apply_override(&train, s);
  validate_train_spec(train);
  return train;
}

TrainSpec check_launch_spec(LaunchSpec* spec) {
  if (spec->np() < 1)
    throw UserError("--np must be at least 1 (got " + std::to_string(spec->np()) + ")");
  if (spec->max_restarts() < 0) {
    throw UserError("--max-restarts must be >= 0 (got " + std::to_string(spec->max_restarts()) +
                    ")");
  }
  if (!(spec->stall_timeout_s() > 0) || !std::isfinite(spec->stall_timeout_s())) {
    throw UserError("--stall-timeout must be a number of seconds > 0 (got " +
                    std::to_string(spec->stall_timeout_s()) + ")");
  }
  if (spec->config().empty()) throw UserError("run needs a CONFIG");
  spec->set_config(absolute(spec->config()));
  if (!spec->hostfile().empty()) {
    spec->set_hostfile(absolute(spec->hostfile()));
    (void)hostfile_is_local(spec->hostfile());  // readable?
  }
  (void)listen_address(*spec);
  if (!spec->run_dir().empty()) spec->set_run_dir(absolute(spec->run_dir()));
  return resolve_train_spec(*spec);
}

}  // namespace dptrain::launcher
