// The sweep's search algorithms (launcher/search_algorithm.h) on toy
// objectives, without a process: GRID's order and cap, RANDOM and TPE
// deterministic for a seed and inside the space, TPE concentrating near a
// known optimum, and the decision points that keep suggestions independent
// of timing.
#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "launcher/search_algorithm.h"

namespace dptrain::launcher {
namespace {

SweepSpec parse(const std::string& text) {
  SweepSpec spec;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &spec)) << text;
  return spec;
}

double value_of(const std::string& assignment) {
  const std::string v = assignment.substr(assignment.find('=') + 1);
  double x = 0;
  const auto r = std::from_chars(v.data(), v.data() + v.size(), x);
  EXPECT_EQ(r.ptr, v.data() + v.size()) << assignment;
  return x;
}

std::vector<Assignment> all(SearchAlgorithm& a) {
  std::vector<Assignment> out;
  for (int k = 0; k < a.total_trials(); ++k) out.push_back(a.suggest(k, {}));
  return out;
}

TEST(LauncherSweepSearch, GridIsTheProductFirstParamSlowest) {
  const SweepSpec spec = parse(R"pb(
    algorithm: GRID
    param { path: "solver.momentum" kind: CHOICE values: "0.8" values: "0.9" }
    param { path: "data.batch_size" kind: INT_RANGE min: 32 max: 100 step: 32 }
  )pb");
  auto grid = SearchAlgorithm::create(spec);
  EXPECT_EQ(grid->total_trials(), 6);
  EXPECT_EQ(grid->needs_finished(5, 2), 0);
  const std::vector<Assignment> want = {
      {"solver.momentum=0.8", "data.batch_size=32"}, {"solver.momentum=0.8", "data.batch_size=64"},
      {"solver.momentum=0.8", "data.batch_size=96"}, {"solver.momentum=0.9", "data.batch_size=32"},
      {"solver.momentum=0.9", "data.batch_size=64"}, {"solver.momentum=0.9", "data.batch_size=96"},
  };
  EXPECT_EQ(all(*grid), want);
}

TEST(LauncherSweepSearch, GridPlacesContinuousPointsEvenlyEndsIncluded) {
  const SweepSpec spec = parse(R"pb(
    algorithm: GRID
    param { path: "solver.base_lr" kind: LOG_UNIFORM min: 0.0001 max: 0.1 grid_points: 4 }
    param { path: "solver.momentum" kind: UNIFORM min: 0.5 max: 0.9 grid_points: 3 }
  )pb");
  auto grid = SearchAlgorithm::create(spec);
  ASSERT_EQ(grid->total_trials(), 12);
  std::vector<std::string> lrs, momenta;
  for (int k = 0; k < 12; k += 3) lrs.push_back(grid->suggest(k, {})[0]);
  for (int k = 0; k < 3; ++k) momenta.push_back(grid->suggest(k, {})[1]);
  // Shortest text of each float: what a user would have typed.
  EXPECT_EQ(lrs, (std::vector<std::string>{"solver.base_lr=1e-04", "solver.base_lr=0.001",
                                           "solver.base_lr=0.01", "solver.base_lr=0.1"}));
  EXPECT_EQ(momenta, (std::vector<std::string>{"solver.momentum=0.5", "solver.momentum=0.7",
                                               "solver.momentum=0.9"}));
}

TEST(LauncherSweepSearch, GridIsCappedAtTrials) {
  const SweepSpec spec = parse(R"pb(
    algorithm: GRID
    trials: 4
    param { path: "solver.momentum" kind: CHOICE values: "0.8" values: "0.9" }
    param { path: "data.batch_size" kind: INT_RANGE min: 32 max: 96 step: 32 }
  )pb");
  auto grid = SearchAlgorithm::create(spec);
  EXPECT_EQ(grid->total_trials(), 4);
  EXPECT_EQ(grid->suggest(3, {}), (Assignment{"solver.momentum=0.9", "data.batch_size=32"}));
}

const char* kSpace = R"pb(
  param { path: "solver.base_lr" kind: LOG_UNIFORM min: 1e-5 max: 1 }
  param { path: "solver.momentum" kind: UNIFORM min: 0.5 max: 0.99 }
  param { path: "data.batch_size" kind: INT_RANGE min: 16 max: 250 step: 16 }
  param { path: "solver.lr_schedule.policy" kind: CHOICE values: "constant" values: "cosine" }
)pb";

// Every value is one the space allows: float fields compared as floats
// (the field holds float(min) when a user writes min).
void expect_inside(const Assignment& a) {
  ASSERT_EQ(a.size(), 4u);
  ASSERT_EQ(a[0].rfind("solver.base_lr=", 0), 0u) << a[0];
  const auto lr = static_cast<float>(value_of(a[0]));
  EXPECT_GE(lr, static_cast<float>(1e-5));
  EXPECT_LE(lr, 1.0f);
  ASSERT_EQ(a[1].rfind("solver.momentum=", 0), 0u) << a[1];
  const auto m = static_cast<float>(value_of(a[1]));
  EXPECT_GE(m, 0.5f);
  EXPECT_LE(m, 0.99f);
  ASSERT_EQ(a[2].rfind("data.batch_size=", 0), 0u) << a[2];
  const std::string b = a[2].substr(a[2].find('=') + 1);
  EXPECT_EQ(b.find_first_not_of("0123456789"), std::string::npos) << a[2];
  const int batch = std::stoi(b);
  EXPECT_GE(batch, 16);
  EXPECT_LE(batch, 250);
  EXPECT_EQ((batch - 16) % 16, 0) << a[2];
  EXPECT_TRUE(a[3] == "solver.lr_schedule.policy=constant" ||
              a[3] == "solver.lr_schedule.policy=cosine")
      << a[3];
}

TEST(LauncherSweepSearch, RandomIsDeterministicForASeedAndInsideTheSpace) {
  SweepSpec spec = parse(std::string(kSpace) + "algorithm: RANDOM trials: 300 seed: 7");
  auto a = SearchAlgorithm::create(spec);
  auto b = SearchAlgorithm::create(spec);
  EXPECT_EQ(a->total_trials(), 300);
  // b asks in reverse order: a draw depends on (seed, trial, param) only.
  std::vector<Assignment> forward = all(*a), backward(300);
  for (int k = 299; k >= 0; --k) backward[k] = b->suggest(k, {});
  EXPECT_EQ(forward, backward);
  int below_1e3 = 0;
  std::set<std::string> batches, policies;
  for (const Assignment& x : forward) {
    expect_inside(x);
    below_1e3 += value_of(x[0]) < 1e-3;
    batches.insert(x[2]);
    policies.insert(x[3]);
  }
  // Log-uniform over 5 decades: 2 of them below 1e-3.
  EXPECT_GT(below_1e3, 300 * 0.3);
  EXPECT_LT(below_1e3, 300 * 0.5);
  EXPECT_EQ(batches.size(), 15u);  // 16, 32, ..., 240
  EXPECT_EQ(policies.size(), 2u);

  spec.set_seed(8);
  EXPECT_NE(all(*SearchAlgorithm::create(spec)), forward);
}

TEST(LauncherSweepSearch, StartPointsComeFirstThenTheAlgorithmAsBefore) {
  const std::string space = std::string(kSpace) + "algorithm: RANDOM trials: 6 seed: 7\n";
  const auto plain = all(*SearchAlgorithm::create(parse(space)));
  SweepSpec spec = parse(space +
                         "start_point { set: 'data.batch_size=64' set: 'solver.base_lr=0.0500' "
                         "set: 'solver.lr_schedule.policy=cosine' set: 'solver.momentum=0.9' }");
  // The same points however the params are ordered in the start point; the
  // numbers printed as the algorithm prints them.
  ASSERT_EQ(spec.param_size(), 4);
  const Assignment first = start_point_assignment(spec, 0);
  EXPECT_EQ(first[0], "solver.base_lr=0.05");
  EXPECT_EQ(first[1], "solver.momentum=0.9");
  EXPECT_EQ(first[2], "data.batch_size=64");
  EXPECT_EQ(first[3], "solver.lr_schedule.policy=cosine");
  auto with = SearchAlgorithm::create(spec);
  EXPECT_EQ(with->needs_finished(0, 2), 0);
  EXPECT_EQ(with->suggest(0, {}), first);
  for (int k = 1; k < 6; ++k) EXPECT_EQ(with->suggest(k, {}), plain[k]) << k;
  // TPE's later trials still wait for the ones they see.
  spec.set_algorithm(SweepSpec::TPE);
  spec.mutable_tpe()->set_startup_trials(2);
  auto tpe = SearchAlgorithm::create(spec);
  EXPECT_EQ(tpe->needs_finished(0, 2), 0);
  EXPECT_EQ(tpe->needs_finished(4, 2), 2);
}

// A sequential loop of the driver: trial k sees exactly the trials below
// needs_finished(k, concurrency), scored by `objective`.
template <typename F>
std::vector<FinishedTrial> run_sequentially(SearchAlgorithm& algo, int concurrency, F objective) {
  std::vector<FinishedTrial> done;
  for (int k = 0; k < algo.total_trials(); ++k) {
    const int need = algo.needs_finished(k, concurrency);
    EXPECT_LE(need, k);
    const std::vector<FinishedTrial> shown(done.begin(), done.begin() + need);
    Assignment a = algo.suggest(k, shown);
    done.push_back({k, a, objective(a)});
  }
  return done;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

TEST(LauncherSweepSearch, TpeConcentratesNearTheOptimum) {
  const SweepSpec spec = parse(R"pb(
    algorithm: TPE
    trials: 40
    seed: 3
    tpe { startup_trials: 10 }
    param { path: "solver.base_lr" kind: LOG_UNIFORM min: 1e-5 max: 1 }
  )pb");
  const auto objective = [](const Assignment& a) -> std::optional<double> {
    const double x = std::log10(value_of(a[0])) + 2;
    return -x * x;
  };
  // One trial at a time, and three at once (each trial then sees two fewer).
  for (const auto& [seed, concurrency] : {std::pair{3, 1}, {4, 1}, {5, 3}, {6, 3}}) {
    SweepSpec s = spec;
    s.set_seed(seed);
    auto tpe = SearchAlgorithm::create(s);
    const std::vector<FinishedTrial> trials = run_sequentially(*tpe, concurrency, objective);
    std::vector<double> startup, last;
    for (int k = 0; k < 40; ++k) {
      const double distance = std::fabs(std::log10(value_of(trials[k].params[0])) + 2);
      if (k < 10) startup.push_back(distance);
      if (k >= 30) last.push_back(distance);
    }
    // Random draws over 5 decades sit about 1.2 decades from 1e-2 (the
    // median); TPE's last ten within a third of a decade.
    EXPECT_LT(median(last), 0.5 * median(startup)) << "seed " << seed;
    EXPECT_LT(median(last), 0.3) << "seed " << seed;
  }
}

TEST(LauncherSweepSearch, TpeIsDeterministicAndInsideTheSpace) {
  const SweepSpec spec =
      parse(std::string(kSpace) + "algorithm: TPE trials: 30 seed: 11 tpe { startup_trials: 5 }");
  // A toy objective over all four params; its optimum is inside the space.
  const auto objective = [](const Assignment& a) -> std::optional<double> {
    const double lr = std::log10(value_of(a[0])) + 2.5;
    const double m = value_of(a[1]) - 0.9;
    const double b = (value_of(a[2]) - 128) / 64;
    const double p = a[3].ends_with("cosine") ? 0 : 0.3;
    return -(lr * lr + 10 * m * m + b * b + p);
  };
  auto a = SearchAlgorithm::create(spec);
  auto b = SearchAlgorithm::create(spec);
  const std::vector<FinishedTrial> run_a = run_sequentially(*a, 2, objective);
  const std::vector<FinishedTrial> run_b = run_sequentially(*b, 2, objective);
  int cosine_late = 0;
  for (int k = 0; k < 30; ++k) {
    EXPECT_EQ(run_a[k].params, run_b[k].params) << "trial " << k;
    expect_inside(run_a[k].params);
    if (k >= 20) cosine_late += run_a[k].params[3].ends_with("cosine");
  }
  // The categorical estimator learns the better choice.
  EXPECT_GE(cosine_late, 7);
}

TEST(LauncherSweepSearch, TpeStartsRandomAndThenWaitsForTheTrialsItSees) {
  const SweepSpec spec =
      parse(std::string(kSpace) + "algorithm: TPE trials: 20 seed: 5 tpe { startup_trials: 4 }");
  SweepSpec random = spec;
  random.set_algorithm(SweepSpec::RANDOM);
  auto tpe = SearchAlgorithm::create(spec);
  auto rnd = SearchAlgorithm::create(random);
  for (int k = 0; k < 4; ++k) {
    EXPECT_EQ(tpe->needs_finished(k, 3), 0);
    EXPECT_EQ(tpe->suggest(k, {}), rnd->suggest(k, {})) << "startup trial " << k;
  }
  // With c trials at once, trial k sees the trials below k - c; one at a
  // time it sees every earlier trial.
  EXPECT_EQ(tpe->needs_finished(4, 1), 4);
  EXPECT_EQ(tpe->needs_finished(4, 2), 2);
  EXPECT_EQ(tpe->needs_finished(9, 3), 6);
  EXPECT_EQ(tpe->needs_finished(5, 8), 0);
  EXPECT_EQ(tpe->needs_finished(6, 0), 6);  // concurrency < 1 counts as 1
  // With nothing to learn from (none shown, or all failed), TPE draws as
  // RANDOM does.
  EXPECT_EQ(tpe->suggest(5, {}), rnd->suggest(5, {}));
  std::vector<FinishedTrial> failed;
  for (int k = 0; k < 5; ++k) failed.push_back({k, rnd->suggest(k, {}), std::nullopt});
  EXPECT_EQ(tpe->suggest(6, failed), rnd->suggest(6, {}));
}

TEST(LauncherSweepSearch, TpeLearnsAnIntegerParamOnItsGrid) {
  const SweepSpec spec = parse(R"pb(
    algorithm: TPE
    trials: 40
    seed: 2
    tpe { startup_trials: 8 }
    objective { goal: MINIMIZE }
    param {
      path: "net.layer[fc1].inner_product.num_output"
      kind: INT_RANGE
      min: 10
      max: 200
      step: 10
    }
  )pb");
  const auto loss = [](const Assignment& a) -> std::optional<double> {
    const double u = (value_of(a[0]) - 150) / 50;
    return u * u;
  };
  auto tpe = SearchAlgorithm::create(spec);
  const std::vector<FinishedTrial> trials = run_sequentially(*tpe, 1, loss);
  int near = 0;
  for (int k = 0; k < 40; ++k) {
    const double units = value_of(trials[k].params[0]);
    EXPECT_EQ(std::fmod(units, 10.0), 0.0) << trials[k].params[0];
    EXPECT_GE(units, 10);
    EXPECT_LE(units, 200);
    if (k >= 30) near += std::fabs(units - 150) <= 20;
  }
  EXPECT_GE(near, 7);
}

TEST(LauncherSweepSearch, TpeLearnsTheBestChoice) {
  const SweepSpec spec = parse(R"pb(
    algorithm: TPE
    trials: 40
    seed: 2
    tpe { startup_trials: 8 }
    objective { goal: MINIMIZE }
    param {
      path: "data.batch_size"
      kind: CHOICE
      values: "32"
      values: "64"
      values: "128"
      values: "256"
    }
  )pb");
  const auto loss = [](const Assignment& a) -> std::optional<double> {
    if (a[0] == "data.batch_size=64") return 0.0;
    if (a[0] == "data.batch_size=128") return 0.5;
    return a[0] == "data.batch_size=32" ? 1.0 : 2.0;
  };
  auto tpe = SearchAlgorithm::create(spec);
  const std::vector<FinishedTrial> trials = run_sequentially(*tpe, 1, loss);
  int best = 0;
  for (int k = 30; k < 40; ++k) best += trials[k].params[0] == "data.batch_size=64";
  EXPECT_GE(best, 7);
}

TEST(LauncherSweepSearch, ValuesArePrintedTheShortestWayThatReadsBack) {
  SearchParam lr;
  lr.set_path("solver.base_lr");  // a float field
  lr.set_kind(SearchParam::LOG_UNIFORM);
  EXPECT_EQ(numeric_assignment(lr, 0.1), "solver.base_lr=0.1");
  EXPECT_EQ(numeric_assignment(lr, 0.0031622776601683794), "solver.base_lr=0.0031622776");
  EXPECT_EQ(parse_numeric_assignment(lr, "solver.base_lr=0.0031622776"), 0.0031622776);
  EXPECT_EQ(parse_numeric_assignment(lr, "solver.momentum=0.1"), std::nullopt);
  EXPECT_EQ(parse_numeric_assignment(lr, "solver.base_lr=0.1x"), std::nullopt);
  SearchParam units;
  units.set_path("net.layer[fc1].inner_product.num_output");
  units.set_kind(SearchParam::INT_RANGE);
  EXPECT_EQ(numeric_assignment(units, 120.0), "net.layer[fc1].inner_product.num_output=120");
  EXPECT_NE(train_spec_field("net.layer[conv.1].convolution.num_output"), nullptr);
  EXPECT_EQ(train_spec_field("solver.base_lr.x"), nullptr);
  EXPECT_EQ(train_spec_field("solver.nope"), nullptr);
}

}  // namespace
}  // namespace dptrain::launcher
