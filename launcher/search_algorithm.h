// The sampler of a sweep (Optuna's `Sampler` seam): which hyperparameters
// trial k gets. Pure: no processes, files or clocks, so GRID, RANDOM and
// TPE are tested on toy objectives (tests/launcher/test_launcher_sweep_search.cc).
//
// Determinism: a suggestion is a pure function of (spec, k, the finished
// trials it is shown). The driver shows suggest(k) exactly trials
// 0 .. needs_finished(k, concurrency) - 1, in index order, whatever else
// has finished by then, so the trials sampled never depend on timing:
//   GRID    trial k is the k-th point of the cartesian product;
//   RANDOM  each value is a function of (seed, k, param index);
//   start_point  trials 0 .. start_point_size() - 1 are those points,
//           for RANDOM and TPE alike;
//   TPE     trials below tpe.startup_trials are drawn as RANDOM; trial k
//           after that sees the trials numbered below k - c, c trials at
//           once (needs_finished = max(0, k - c)): it may start while any
//           c - 1 of the c trials just before it still run, so a slot
//           freed out of order (a trial ASHA stopped early) is refilled
//           at once. With one trial at a time (c = 1) it sees every
//           earlier trial, as Optuna does, since waiting for trial k - 1
//           then costs nothing.
// Values are printed the same way every time (the shortest text that reads
// back as the same number, as float for float fields), so an Assignment is
// also what the sweep state stores and the leaderboard shows.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/dptrain.pb.h"

namespace google::protobuf {
class FieldDescriptor;
}

namespace dptrain::launcher {

// A trial's hyperparameters: one "PATH=VALUE" per SearchParam, in order,
// exactly as --set takes them.
using Assignment = std::vector<std::string>;

struct FinishedTrial {
  int index;
  Assignment params;
  std::optional<double> objective;  // nullopt: failed
};

class SearchAlgorithm {
 public:
  // `spec` must have passed validate_sweep_spec.
  static std::unique_ptr<SearchAlgorithm> create(const SweepSpec& spec);
  virtual ~SearchAlgorithm() = default;

  // GRID: the grid's size, capped at spec.trials if > 0; RANDOM, TPE:
  // spec.trials.
  virtual int total_trials() const = 0;
  // Deterministic decision point: suggest(k) may be called only once trials
  // 0 .. needs_finished(k, concurrency)-1 are finished, and it sees exactly
  // those (in index order), whatever else has finished by then. So the
  // suggestion for k does not depend on timing. `concurrency` is the number
  // of trials run at once (< 1 counts as 1). GRID, RANDOM: 0; TPE: 0 below
  // startup_trials, then k when concurrency is 1, else max(0, k - concurrency).
  virtual int needs_finished(int k, int concurrency) const = 0;
  // `finished`: exactly trials 0 .. needs_finished(k, c) - 1, in index
  // order; an objective of nullopt means the trial failed. Only TPE reads
  // it, and it uses all of it, so passing more would make the suggestion
  // depend on what happened to have finished.
  virtual Assignment suggest(int k, const std::vector<FinishedTrial>& finished) = 0;
};

// The helpers the algorithms share with validate_sweep_spec.

// "PATH=VALUE" of a numeric param (UNIFORM, LOG_UNIFORM, INT_RANGE) at
// `value`: INT_RANGE as an integer, a float field as the shortest text
// that reads back as that float, anything else as the shortest text of the
// double.
std::string numeric_assignment(const SearchParam& param, double value);

// The number in a numeric param's assignment, or nullopt when `assignment`
// is not "PATH=NUMBER" for this param's path.
std::optional<double> parse_numeric_assignment(const SearchParam& param,
                                               const std::string& assignment);

// The field of TrainSpec a --set path ends at ("net.layer[conv1].convolution.
// num_output" -> ConvolutionParam.num_output), or nullptr if the path names
// no field. Selectors in brackets are skipped: only the schema is consulted.
const google::protobuf::FieldDescriptor* train_spec_field(const std::string& path);

// spec.start_point(j) as trial j's Assignment: in param order, each value
// printed as the algorithms print it. UserError naming start_point[j] for
// a param set twice or not at all, a path that is no param, a CHOICE value
// not among the values, or a number outside [min, max] or off the
// INT_RANGE's steps.
Assignment start_point_assignment(const SweepSpec& spec, int j);

// INT_RANGE: how many values min, min + step, ..., <= max there are.
long long int_range_size(const SearchParam& param);

}  // namespace dptrain::launcher
