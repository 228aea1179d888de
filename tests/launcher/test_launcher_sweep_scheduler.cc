// The sweep's early-stopping schedulers (launcher/trial_scheduler.h) on
// toy objectives worked by hand, without a process: ASHA and MEDIAN stop
// exactly the trials the rule says at the right rungs, and the same
// decisions come out whatever order the trials report in (a simulated
// driver shuffles the reports and asks again after every kWait).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <utility>
#include <vector>

#include "core/random.h"
#include "launcher/trial_scheduler.h"

namespace dptrain::launcher {

// Failures print "stop", not bytes (found by argument-dependent lookup).
void PrintTo(TrialScheduler::Decision d, std::ostream* os) { *os << decision_name(d); }

namespace {

using Decision = TrialScheduler::Decision;
using Decisions = std::map<std::pair<int, int>, Decision>;

constexpr Decision C = Decision::kContinue;
constexpr Decision S = Decision::kStop;

SchedulerSpec asha(int eta, int min_epochs) {
  SchedulerSpec s;
  s.set_type(SchedulerSpec::ASHA);
  s.set_reduction_factor(eta);
  s.set_min_epochs(min_epochs);
  return s;
}

SchedulerSpec median(int grace, int min_trials) {
  SchedulerSpec s;
  s.set_type(SchedulerSpec::MEDIAN);
  s.set_grace_epochs(grace);
  s.set_min_trials(min_trials);
  return s;
}

Objective goal(Objective::Goal g) {
  Objective o;
  o.set_goal(g);
  return o;
}

// What a trial would report: its value at each rung, and optionally the
// epoch after which it crashes (it ends there without further reports).
struct Plan {
  std::map<int, double> value;
  int fails_after = std::numeric_limits<int>::max();
};

// A driver with every trial running at once. Each step moves one trial
// that has not ended on: it reports at its next rung, or asks for the
// decision it waits for. kIndex moves the lowest trial that can move,
// kReverse the highest (so later trials report first and wait longest),
// kShuffled a random one. The decisions, once final, are what the test
// compares.
enum class Order { kIndex, kReverse, kShuffled };

Decisions simulate(const TrialScheduler& scheduler, int max_epochs, const std::vector<Plan>& plans,
                   Order order, uint64_t seed = 0, int* waits = nullptr) {
  const std::vector<int> rungs = scheduler.rung_epochs();
  const int n = static_cast<int>(plans.size());
  std::vector<std::size_t> next(n, 0);  // index into rungs
  std::vector<bool> reported(n, false), ended(n, false);
  RungTable table;
  Decisions out;
  const auto end = [&](int t, int epoch) {
    ended[t] = true;
    table.last_epoch[t] = epoch;
  };
  // One step of trial t; false if it could not move (kWait).
  const auto step = [&](int t) {
    const Plan& p = plans[t];
    if (next[t] == rungs.size()) {  // past the last rung: runs to the end
      end(t, std::min(max_epochs, p.fails_after));
      return true;
    }
    const int rung = rungs[next[t]];
    if (!reported[t]) {
      if (p.fails_after < rung) {
        end(t, p.fails_after);
      } else {
        table.value[{t, rung}] = p.value.at(rung);
        reported[t] = true;
      }
      return true;
    }
    const Decision d = scheduler.decide(t, rung, table);
    if (d == Decision::kWait) {
      if (waits != nullptr) ++*waits;
      return false;
    }
    out[{t, rung}] = d;
    if (d == S) {
      end(t, rung);
    } else {
      ++next[t];
      reported[t] = false;
    }
    return true;
  };
  Rng rng(seed);
  for (int steps = 0; steps < 100000; ++steps) {
    std::vector<int> live;
    for (int t = 0; t < n; ++t)
      if (!ended[t]) live.push_back(t);
    if (live.empty()) return out;
    if (order == Order::kShuffled) {
      (void)step(live[rng.below(live.size())]);
      continue;
    }
    if (order == Order::kReverse) std::reverse(live.begin(), live.end());
    bool moved = false;
    for (int t : live) {
      if (step(t)) {
        moved = true;
        break;
      }
    }
    // The lowest live trial compares only with trials that have ended or
    // reported, so it can always move: a deadlock is a bug.
    if (!moved) break;
  }
  ADD_FAILURE() << "the simulation did not finish";
  return out;
}

void expect_same_in_every_order(const TrialScheduler& scheduler, int max_epochs,
                                const std::vector<Plan>& plans, const Decisions& want) {
  EXPECT_EQ(simulate(scheduler, max_epochs, plans, Order::kIndex), want) << "in index order";
  int waits = 0;
  EXPECT_EQ(simulate(scheduler, max_epochs, plans, Order::kReverse, 0, &waits), want)
      << "in reverse order";
  EXPECT_GT(waits, 0) << "later trials reporting first must have waited";
  for (uint64_t seed = 1; seed <= 30; ++seed) {
    EXPECT_EQ(simulate(scheduler, max_epochs, plans, Order::kShuffled, seed), want)
        << "shuffled, seed " << seed;
  }
}

TEST(LauncherSweepScheduler, RungEpochs) {
  const Objective max = goal(Objective::MAXIMIZE);
  EXPECT_EQ(TrialScheduler::create(asha(3, 1), 9, max)->rung_epochs(), (std::vector<int>{1, 3}));
  EXPECT_EQ(TrialScheduler::create(asha(3, 1), 10, max)->rung_epochs(),
            (std::vector<int>{1, 3, 9}));
  EXPECT_EQ(TrialScheduler::create(asha(2, 2), 16, max)->rung_epochs(),
            (std::vector<int>{2, 4, 8}));
  EXPECT_EQ(TrialScheduler::create(median(2, 3), 5, max)->rung_epochs(),
            (std::vector<int>{2, 3, 4}));
  EXPECT_TRUE(TrialScheduler::create(SchedulerSpec(), 5, max)->rung_epochs().empty());
}

// ASHA, eta 3, rungs after epochs 1 and 3 of 9, maximising. At rung 1 all
// nine trials report; trial k keeps going iff it is in the top
// max(1, floor(n / 3)) of the n = k + 1 values of trials 0..k:
//   trial  value  n  keep  earlier values >= it    decision
//   0      .50    1  1     -                       continue
//   1      .40    2  1     .50                     stop
//   2      .70    3  1     -                       continue
//   3      .55    4  1     .70                     stop
//   4      .30    5  1     (all four)              stop
//   5      .90    6  2     -                       continue
//   6      .70    7  2     .70 (trial 2), .90      stop: the tie ranks trial 2 higher
//   7      .80    8  2     .90                     continue
//   8      .45    9  3     six of them             stop
// At rung 3 only trials 0, 2, 5 and 7 report (the others ended at 1):
//   0 .60 (n 1) continue; 2 .80 (n 2, keep 1) continue; 5 .95 (n 3, keep 1)
//   continue; 7 .85 (n 4, keep 1, .95 above it) stop.
std::vector<Plan> asha_plans(double sign = 1) {
  const double r1[] = {.50, .40, .70, .55, .30, .90, .70, .80, .45};
  const double r3[] = {.60, .10, .80, .20, .30, .95, .40, .85, .50};
  std::vector<Plan> plans(9);
  for (int t = 0; t < 9; ++t) plans[t].value = {{1, sign * r1[t]}, {3, sign * r3[t]}};
  return plans;
}

const Decisions kAshaWant = {
    {{0, 1}, C}, {{1, 1}, S}, {{2, 1}, C}, {{3, 1}, S}, {{4, 1}, S}, {{5, 1}, C}, {{6, 1}, S},
    {{7, 1}, C}, {{8, 1}, S}, {{0, 3}, C}, {{2, 3}, C}, {{5, 3}, C}, {{7, 3}, S},
};

TEST(LauncherSweepScheduler, AshaStopsExactlyTheTrialsWorkedByHandInAnyOrder) {
  const auto scheduler = TrialScheduler::create(asha(3, 1), 9, goal(Objective::MAXIMIZE));
  expect_same_in_every_order(*scheduler, 9, asha_plans(), kAshaWant);
}

TEST(LauncherSweepScheduler, AshaMinimizingNegatedValuesDecidesTheSame) {
  const auto scheduler = TrialScheduler::create(asha(3, 1), 9, goal(Objective::MINIMIZE));
  expect_same_in_every_order(*scheduler, 9, asha_plans(-1), kAshaWant);
}

TEST(LauncherSweepScheduler, AshaLeavesOutTrialsThatFailedBeforeARung) {
  // Trial 4 crashes in epoch 1 (no value at rung 1), trial 2 in epoch 2
  // (after continuing at rung 1). Rung 1 then compares 8 values: trial 5
  // is 1st of 5 (keep 1), 6 is 3rd of 6 (keep 2: stop), 7 2nd of 7
  // (keep 2), 8 is 6th of 8 (keep 2): as before. At rung 3 trial 5 is
  // 1st of 2, trial 7 2nd of 3: as before.
  std::vector<Plan> plans = asha_plans();
  plans[4].fails_after = 0;
  plans[2].fails_after = 1;
  Decisions want = kAshaWant;
  want.erase({4, 1});
  want.erase({2, 3});
  const auto scheduler = TrialScheduler::create(asha(3, 1), 9, goal(Objective::MAXIMIZE));
  expect_same_in_every_order(*scheduler, 9, plans, want);
}

// MEDIAN, grace 1, min_trials 2, rungs after epochs 1, 2 and 3 of 4,
// maximising; values in sixteenths so the medians are exact.
//   trial  e1     e2     e3
//   0      .5     .625   .75     fewer than 2 earlier trials: continue
//   1      .375   .5     .875    likewise
//   2      .25    -      -       e1: median of .5, .375 is .4375: stop
//   3      .625   .5     .625    e1 continue; e2: trials 0 and 1 (2 left
//                                out), median .5625, its best so far .625:
//                                continue; e3: median .8125: stop
//   4      .4375  .5625  .8125   e1: median of four .4375, a tie: continue;
//                                e2: median .5; e3: median .75: continue
TEST(LauncherSweepScheduler, MedianStopsExactlyTheTrialsWorkedByHandInAnyOrder) {
  std::vector<Plan> plans(5);
  plans[0].value = {{1, .5}, {2, .625}, {3, .75}};
  plans[1].value = {{1, .375}, {2, .5}, {3, .875}};
  plans[2].value = {{1, .25}, {2, .9}, {3, .9}};
  plans[3].value = {{1, .625}, {2, .5}, {3, .625}};
  plans[4].value = {{1, .4375}, {2, .5625}, {3, .8125}};
  const Decisions want = {
      {{0, 1}, C}, {{0, 2}, C}, {{0, 3}, C}, {{1, 1}, C}, {{1, 2}, C}, {{1, 3}, C}, {{2, 1}, S},
      {{3, 1}, C}, {{3, 2}, C}, {{3, 3}, S}, {{4, 1}, C}, {{4, 2}, C}, {{4, 3}, C},
  };
  const auto scheduler = TrialScheduler::create(median(1, 2), 4, goal(Objective::MAXIMIZE));
  expect_same_in_every_order(*scheduler, 4, plans, want);
}

TEST(LauncherSweepScheduler, DecisionsWaitForEarlierTrialsOnly) {
  const auto scheduler = TrialScheduler::create(asha(2, 1), 8, goal(Objective::MAXIMIZE));
  RungTable table;
  table.value[{1, 1}] = 0.3;
  // Trial 0 runs and has not reached rung 1: trial 1 waits...
  EXPECT_EQ(scheduler->decide(1, 1, table), Decision::kWait);
  // ...while later trials never matter to trial 0.
  table.value[{0, 1}] = 0.5;
  table.value[{2, 1}] = 0.9;
  EXPECT_EQ(scheduler->decide(0, 1, table), C);
  EXPECT_EQ(scheduler->decide(1, 1, table), S);
  EXPECT_EQ(scheduler->decide(2, 1, table), C);
  // A trial that ended before the rung is left out, not waited for.
  RungTable failed;
  failed.last_epoch[0] = 0;
  failed.value[{1, 1}] = 0.3;
  EXPECT_EQ(scheduler->decide(1, 1, failed), C);
  EXPECT_THROW(scheduler->decide(3, 1, table), std::logic_error);  // never reported there
}

TEST(LauncherSweepScheduler, NanIsWorseThanAnyNumber) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (Objective::Goal g : {Objective::MAXIMIZE, Objective::MINIMIZE}) {
    const auto scheduler = TrialScheduler::create(asha(2, 1), 8, goal(g));
    RungTable a;
    a.value[{0, 1}] = 0.5;
    a.value[{1, 1}] = nan;
    EXPECT_EQ(scheduler->decide(1, 1, a), S);
    RungTable b;
    b.value[{0, 1}] = nan;
    b.value[{1, 1}] = 0.5;
    EXPECT_EQ(scheduler->decide(1, 1, b), C);
  }
  const auto med = TrialScheduler::create(median(1, 1), 8, goal(Objective::MAXIMIZE));
  RungTable m;
  m.value[{0, 1}] = 0.5;
  m.value[{1, 1}] = nan;
  EXPECT_EQ(med->decide(1, 1, m), S);
}

TEST(LauncherSweepScheduler, NoneNeverStops) {
  const auto scheduler = TrialScheduler::create(SchedulerSpec(), 8, goal(Objective::MAXIMIZE));
  EXPECT_EQ(scheduler->decide(5, 1, RungTable()), C);
  EXPECT_STREQ(decision_name(S), "stop");
}

}  // namespace
}  // namespace dptrain::launcher
