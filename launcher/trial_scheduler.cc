#include "launcher/trial_scheduler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>

namespace dptrain::launcher {
namespace {

using Decision = TrialScheduler::Decision;

// Orders values best first; NaN last of all.
struct Better {
  bool maximize;
  bool operator()(double a, double b) const {
    if (std::isnan(a)) return false;
    if (std::isnan(b)) return true;
    return maximize ? a > b : a < b;
  }
};

double own_value(int trial, int epoch, const RungTable& table) {
  const auto it = table.value.find({trial, epoch});
  if (it == table.value.end()) {
    throw std::logic_error("scheduler asked about trial " + std::to_string(trial) + " at epoch " +
                           std::to_string(epoch) + " before it reported there");
  }
  return it->second;
}

// The values of trials 0..trial-1 at `epoch`, in index order, or nullopt
// while one of them has neither reported there nor ended.
std::optional<std::vector<double>> earlier_values(int trial, int epoch, const RungTable& table) {
  std::vector<double> out;
  for (int j = 0; j < trial; ++j) {
    const auto it = table.value.find({j, epoch});
    if (it != table.value.end())
      out.push_back(it->second);
    else if (!table.last_epoch.contains(j))
      return std::nullopt;
  }
  return out;
}

class NoScheduler : public TrialScheduler {
 public:
  std::vector<int> rung_epochs() const override { return {}; }
  Decision decide(int, int, const RungTable&) const override { return Decision::kContinue; }
};

class AshaScheduler : public TrialScheduler {
 public:
  AshaScheduler(const SchedulerSpec& spec, int max_epochs, const Objective& objective)
      : eta_(spec.reduction_factor()), better_{objective.goal() == Objective::MAXIMIZE} {
    for (long long e = spec.min_epochs(); e >= 1 && e < max_epochs; e *= eta_)
      rungs_.push_back(static_cast<int>(e));
  }
  std::vector<int> rung_epochs() const override { return rungs_; }
  Decision decide(int trial, int epoch, const RungTable& table) const override {
    const double mine = own_value(trial, epoch, table);
    const std::optional<std::vector<double>> others = earlier_values(trial, epoch, table);
    if (!others) return Decision::kWait;
    // Trial k has the highest index of those compared, so it ranks below
    // every earlier trial with the same value: its rank is the number of
    // earlier values at least as good.
    const auto rank =
        std::count_if(others->begin(), others->end(), [&](double v) { return !better_(mine, v); });
    const auto n = static_cast<long long>(others->size()) + 1;
    const long long keep = std::max<long long>(1, n / eta_);
    return rank < keep ? Decision::kContinue : Decision::kStop;
  }

 private:
  long long eta_;
  Better better_;
  std::vector<int> rungs_;
};

class MedianScheduler : public TrialScheduler {
 public:
  MedianScheduler(const SchedulerSpec& spec, int max_epochs, const Objective& objective)
      : min_trials_(spec.min_trials()), better_{objective.goal() == Objective::MAXIMIZE} {
    for (int e = std::max(1, spec.grace_epochs()); e < max_epochs; ++e) rungs_.push_back(e);
  }
  std::vector<int> rung_epochs() const override { return rungs_; }
  Decision decide(int trial, int epoch, const RungTable& table) const override {
    (void)own_value(trial, epoch, table);
    std::optional<std::vector<double>> others = earlier_values(trial, epoch, table);
    if (!others) return Decision::kWait;
    if (static_cast<int>(others->size()) < min_trials_) return Decision::kContinue;
    // As Optuna's MedianPruner: the trial's best so far against the
    // others' values at this epoch.
    double best = std::numeric_limits<double>::quiet_NaN();
    for (auto it = table.value.lower_bound({trial, std::numeric_limits<int>::min()});
         it != table.value.end() && it->first.first == trial && it->first.second <= epoch; ++it) {
      if (better_(it->second, best)) best = it->second;
    }
    std::vector<double>& v = *others;
    std::sort(v.begin(), v.end(), better_);
    const std::size_t m = v.size();
    // A NaN among the others sorts last; a median that is NaN stops
    // nothing that is a number and keeps nothing that is not.
    const double median = m % 2 == 1 ? v[m / 2] : 0.5 * (v[m / 2 - 1] + v[m / 2]);
    if (std::isnan(median)) return std::isnan(best) ? Decision::kStop : Decision::kContinue;
    return better_(median, best) ? Decision::kStop : Decision::kContinue;
  }

 private:
  int min_trials_;
  Better better_;
  std::vector<int> rungs_;
};

}  // namespace

std::unique_ptr<TrialScheduler> TrialScheduler::create(const SchedulerSpec& spec, int max_epochs,
                                                       const Objective& objective) {
  switch (spec.type()) {
    case SchedulerSpec::ASHA:
      return std::make_unique<AshaScheduler>(spec, max_epochs, objective);
    case SchedulerSpec::MEDIAN:
      return std::make_unique<MedianScheduler>(spec, max_epochs, objective);
    case SchedulerSpec::NONE:
      break;
  }
  return std::make_unique<NoScheduler>();
}

const char* decision_name(TrialScheduler::Decision d) {
  switch (d) {
    case Decision::kContinue:
      return "continue";
    case Decision::kStop:
      return "stop";
    case Decision::kWait:
      return "wait";
  }
  return "?";
}

}  // namespace dptrain::launcher
