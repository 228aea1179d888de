#include "launcher/sweep_spec.h"

#include <google/protobuf/descriptor.h>

#include <climits>
#include <cmath>
#include <filesystem>
#include <set>
#include <sstream>

#include "core/config.h"
#include "core/error.h"
#include "launcher/search_algorithm.h"

namespace dptrain::launcher {
namespace {

namespace pb = google::protobuf;

std::string num(double x) {
  std::ostringstream s;
  s << x;
  return s.str();
}

std::string kind_name(SearchParam::Kind kind) { return SearchParam::Kind_Name(kind); }

// "param[2] (solver.momentum)": how every message about a param begins.
std::string where(int i, const SearchParam& p) {
  return "param[" + std::to_string(i) + "] (" + p.path() + ")";
}

// A value that must apply to the base and leave a valid config.
void check_applies(const TrainSpec& base, int i, const SearchParam& p,
                   const std::string& assignment) {
  TrainSpec trial = base;
  try {
    apply_override(&trial, assignment);
    validate_train_spec(trial);
  } catch (const UserError& e) {
    throw UserError(where(i, p) + ": " + e.what());
  }
}

bool integral(double x) { return std::isfinite(x) && std::floor(x) == x && std::fabs(x) <= 0x1p53; }

bool is_integer_field(const pb::FieldDescriptor* f) {
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT32:
    case pb::FieldDescriptor::CPPTYPE_INT64:
    case pb::FieldDescriptor::CPPTYPE_UINT32:
    case pb::FieldDescriptor::CPPTYPE_UINT64:
      return true;
    default:
      return false;
  }
}

// The number of grid points, saturated just above INT_MAX.
long long grid_size(const SweepSpec& spec) {
  long long total = 1;
  for (const SearchParam& p : spec.param()) {
    long long n = p.values_size();
    if (p.kind() == SearchParam::UNIFORM || p.kind() == SearchParam::LOG_UNIFORM)
      n = p.grid_points();
    if (p.kind() == SearchParam::INT_RANGE) n = int_range_size(p);
    total = n > 0 && total > INT_MAX / n ? static_cast<long long>(INT_MAX) + 1 : total * n;
  }
  return total;
}

void validate_param(const SweepSpec& spec, const TrainSpec& base, int i) {
  const SearchParam& p = spec.param(i);
  const std::string at = where(i, p);
  if (p.path().empty()) throw UserError("param[" + std::to_string(i) + "].path is empty");
  if (p.path().find('=') != std::string::npos)
    throw UserError(at + ": path holds '=': the values go in values, min and max");
  if (spec.scheduler().type() != SchedulerSpec::NONE && p.path() == "solver.epochs") {
    throw UserError(at +
                    ": a scheduler sets every trial's solver.epochs (scheduler.max_epochs); "
                    "search it only with scheduler.type NONE");
  }
  switch (p.kind()) {
    case SearchParam::CHOICE:
      if (p.values_size() == 0) throw UserError(at + ": CHOICE needs at least one values entry");
      for (int v = 0; v < p.values_size(); ++v) {
        // The sweep state keeps a trial's assignments one per line.
        if (p.values(v).find('\n') != std::string::npos)
          throw UserError(at + ": values[" + std::to_string(v) + "] holds a line break");
        check_applies(base, i, p, p.path() + "=" + p.values(v));
      }
      return;
    case SearchParam::UNIFORM:
    case SearchParam::LOG_UNIFORM: {
      if (!p.has_min() || !p.has_max())
        throw UserError(at + ": " + kind_name(p.kind()) + " needs min and max");
      if (!std::isfinite(p.min()) || !std::isfinite(p.max()) || !(p.min() < p.max())) {
        throw UserError(at + ": " + kind_name(p.kind()) + " needs min < max (got min " +
                        num(p.min()) + ", max " + num(p.max()) + ")");
      }
      if (p.kind() == SearchParam::LOG_UNIFORM && p.min() <= 0)
        throw UserError(at + ": LOG_UNIFORM needs min > 0 (got " + num(p.min()) + ")");
      if (spec.algorithm() == SweepSpec::GRID && p.grid_points() < 2) {
        throw UserError(at + ": grid_points must be >= 2 for GRID over " + kind_name(p.kind()) +
                        " (got " + std::to_string(p.grid_points()) + ")");
      }
      const pb::FieldDescriptor* field = train_spec_field(p.path());
      if (field != nullptr && is_integer_field(field))
        throw UserError(at + ": an integer field; use kind INT_RANGE");
      check_applies(base, i, p, numeric_assignment(p, p.min()));
      check_applies(base, i, p, numeric_assignment(p, p.max()));
      return;
    }
    case SearchParam::INT_RANGE:
      if (!p.has_min() || !p.has_max()) throw UserError(at + ": INT_RANGE needs min and max");
      if (!integral(p.min()) || !integral(p.max())) {
        throw UserError(at + ": INT_RANGE needs whole-number min and max (got min " + num(p.min()) +
                        ", max " + num(p.max()) + ")");
      }
      if (p.min() > p.max()) {
        throw UserError(at + ": INT_RANGE needs min <= max (got min " + num(p.min()) + ", max " +
                        num(p.max()) + ")");
      }
      if (p.step() < 1)
        throw UserError(at + ": step must be >= 1 (got " + std::to_string(p.step()) + ")");
      check_applies(base, i, p, numeric_assignment(p, p.min()));
      check_applies(base, i, p, numeric_assignment(p, p.max()));
      return;
  }
}

void validate_objective(const SweepSpec& spec, const TrainSpec& base) {
  const std::string& metric = spec.objective().metric();
  bool known = false;
  std::string choices;
  for (const char* m : kObjectiveMetrics) {
    known = known || metric == m;
    choices += choices.empty() ? m : std::string(", ") + m;
  }
  if (!known) {
    throw UserError("objective.metric must be one of the eval record fields (" + choices +
                    "), got \"" + metric + "\"");
  }
  if (metric.rfind("val_", 0) == 0 && base.data().validation_size() <= 0) {
    throw UserError("objective.metric " + metric +
                    " needs a validation split: set data.validation_size > 0 in the base config");
  }
}

void validate_scheduler(const SweepSpec& spec, const TrainSpec& base) {
  const SchedulerSpec& s = spec.scheduler();
  if (s.max_epochs() < 0)
    throw UserError("scheduler.max_epochs must be >= 0 (got " + std::to_string(s.max_epochs()) +
                    ")");
  const int max = max_epochs(spec, base);
  if (max < 1)
    throw UserError("solver.epochs of the base must be >= 1 (got " + std::to_string(max) + ")");
  switch (s.type()) {
    case SchedulerSpec::NONE:
      return;
    case SchedulerSpec::ASHA:
      if (s.reduction_factor() < 2) {
        throw UserError("scheduler.reduction_factor must be >= 2 (got " +
                        std::to_string(s.reduction_factor()) + ")");
      }
      if (s.min_epochs() < 1) {
        throw UserError("scheduler.min_epochs must be >= 1 (got " + std::to_string(s.min_epochs()) +
                        ")");
      }
      if (static_cast<long long>(max) <
          static_cast<long long>(s.min_epochs()) * s.reduction_factor()) {
        throw UserError("scheduler.max_epochs (" + std::to_string(max) +
                        (s.max_epochs() == 0 ? ", the base's solver.epochs" : "") +
                        ") must be >= min_epochs * reduction_factor (" +
                        std::to_string(s.min_epochs()) + " * " +
                        std::to_string(s.reduction_factor()) +
                        "), so that the trials a rung keeps train reduction_factor times longer");
      }
      return;
    case SchedulerSpec::MEDIAN:
      if (s.grace_epochs() < 1) {
        throw UserError("scheduler.grace_epochs must be >= 1 (got " +
                        std::to_string(s.grace_epochs()) + ")");
      }
      if (s.min_trials() < 1) {
        throw UserError("scheduler.min_trials must be >= 1 (got " + std::to_string(s.min_trials()) +
                        ")");
      }
      if (s.grace_epochs() >= max) {
        throw UserError("scheduler.grace_epochs (" + std::to_string(s.grace_epochs()) +
                        ") must be below max_epochs (" + std::to_string(max) +
                        "): MEDIAN would never judge a trial");
      }
      return;
  }
}

}  // namespace

TrainSpec resolve_sweep_base(const SweepSpec& spec, const std::string& sweep_config_path) {
  if (spec.has_base_config() == spec.has_base()) {
    throw UserError(sweep_config_path +
                    ": set exactly one of base_config (a file) and base (inline)");
  }
  TrainSpec base;
  if (spec.has_base_config()) {
    std::filesystem::path path = spec.base_config();
    if (path.is_relative()) path = std::filesystem::path(sweep_config_path).parent_path() / path;
    base = load_train_spec(path.lexically_normal().string());
  } else {
    base = spec.base();
  }
  for (const std::string& s : spec.set()) apply_override(&base, s);
  validate_train_spec(base);
  return base;
}

void validate_sweep_spec(const SweepSpec& spec, const TrainSpec& base) {
  if (spec.param_size() == 0)
    throw UserError("param: the sweep has no search space; add a param { path: ... }");
  std::set<std::string> paths;
  for (int i = 0; i < spec.param_size(); ++i) {
    validate_param(spec, base, i);
    if (!paths.insert(spec.param(i).path()).second)
      throw UserError(where(i, spec.param(i)) + ": the path appears in an earlier param too");
  }
  switch (spec.algorithm()) {
    case SweepSpec::GRID:
      if (spec.trials() < 0)
        throw UserError("trials must be >= 0 for GRID (got " + std::to_string(spec.trials()) + ")");
      if (spec.trials() == 0 && grid_size(spec) > INT_MAX) {
        throw UserError("trials: the GRID has more than " + std::to_string(INT_MAX) +
                        " points; set trials to run only the first ones");
      }
      break;
    case SweepSpec::TPE:
      if (spec.tpe().startup_trials() < 0) {
        throw UserError("tpe.startup_trials must be >= 0 (got " +
                        std::to_string(spec.tpe().startup_trials()) + ")");
      }
      if (!(spec.tpe().gamma() > 0 && spec.tpe().gamma() <= 1))
        throw UserError("tpe.gamma must be in (0, 1] (got " + num(spec.tpe().gamma()) + ")");
      if (spec.tpe().candidates() < 1) {
        throw UserError("tpe.candidates must be >= 1 (got " +
                        std::to_string(spec.tpe().candidates()) + ")");
      }
      [[fallthrough]];
    case SweepSpec::RANDOM:
      if (spec.trials() < 1) {
        throw UserError("trials must be >= 1 for " + SweepSpec::Algorithm_Name(spec.algorithm()) +
                        " (got " + std::to_string(spec.trials()) + ")");
      }
      break;
  }
  if (spec.start_point_size() > 0) {
    if (spec.algorithm() == SweepSpec::GRID)
      throw UserError("start_point: GRID runs its own points in order; use RANDOM or TPE");
    if (spec.start_point_size() > spec.trials()) {
      throw UserError("start_point: " + std::to_string(spec.start_point_size()) +
                      " points but only " + std::to_string(spec.trials()) + " trials");
    }
    for (int j = 0; j < spec.start_point_size(); ++j) (void)start_point_assignment(spec, j);
  }
  validate_objective(spec, base);
  validate_scheduler(spec, base);
  if (spec.ranks_per_trial() < 1) {
    throw UserError("ranks_per_trial must be >= 1 (got " + std::to_string(spec.ranks_per_trial()) +
                    ")");
  }
  if (spec.concurrent_trials() < 0) {
    throw UserError("concurrent_trials must be >= 0 (0 = as many as fit the cores; got " +
                    std::to_string(spec.concurrent_trials()) + ")");
  }
  if (spec.max_restarts() < 0)
    throw UserError("max_restarts must be >= 0 (got " + std::to_string(spec.max_restarts()) + ")");
  if (!(spec.stall_timeout_s() > 0) || !std::isfinite(spec.stall_timeout_s()))
    throw UserError("stall_timeout_s must be > 0 (got " + num(spec.stall_timeout_s()) + ")");
}

int max_epochs(const SweepSpec& spec, const TrainSpec& base) {
  return spec.scheduler().max_epochs() > 0 ? spec.scheduler().max_epochs() : base.solver().epochs();
}

}  // namespace dptrain::launcher
