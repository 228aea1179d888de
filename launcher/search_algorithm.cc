#include "launcher/search_algorithm.h"

#include <google/protobuf/descriptor.h>

#include <algorithm>
#include <charconv>
#include <climits>
#include <cmath>
#include <limits>
#include <numeric>
#include <system_error>

#include "core/error.h"
#include "core/random.h"

namespace dptrain::launcher {
namespace {

namespace pb = google::protobuf;

// Streams of the sweep's own draws, beyond core's (which never uses these
// values), so a sweep seed equal to a training seed shares no draws.
constexpr RandomStream kSweepDraw = static_cast<RandomStream>(0x53570001);
constexpr RandomStream kTpeCandidates = static_cast<RandomStream>(0x53570002);

// Uniform in [0, 1) with 53 random bits (Rng::uniform has 24: too coarse
// for a log-uniform draw over many decades).
double unit(Rng& rng) { return static_cast<double>(rng.next_u64() >> 11) * 0x1.0p-53; }

std::string shortest(double x) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, x);
  return std::string(buf, r.ptr);
}

std::string shortest(float x) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, x);
  return std::string(buf, r.ptr);
}

long long int_at(const SearchParam& p, long long i) { return std::llround(p.min()) + i * p.step(); }

// The draw of RANDOM (and of TPE before it has data) for one param.
std::string random_assignment(const SearchParam& p, uint64_t seed, int k, int param_index) {
  Rng rng(
      derive_seed(seed, kSweepDraw, static_cast<uint64_t>(k), static_cast<uint64_t>(param_index)));
  switch (p.kind()) {
    case SearchParam::CHOICE:
      return p.path() + "=" + p.values(static_cast<int>(rng.below(p.values_size())));
    case SearchParam::UNIFORM:
      return numeric_assignment(
          p, std::clamp(p.min() + unit(rng) * (p.max() - p.min()), p.min(), p.max()));
    case SearchParam::LOG_UNIFORM: {
      const double lo = std::log(p.min()), hi = std::log(p.max());
      return numeric_assignment(p,
                                std::clamp(std::exp(lo + unit(rng) * (hi - lo)), p.min(), p.max()));
    }
    case SearchParam::INT_RANGE: {
      const auto n = static_cast<uint64_t>(int_range_size(p));
      return numeric_assignment(
          p, static_cast<double>(int_at(p, static_cast<long long>(rng.below(n)))));
    }
  }
  return {};
}

// ---------------------------------------------------------------- GRID

// One axis of the grid: its size and its i-th point, computed on demand
// (an INT_RANGE axis may be long).
long long grid_size(const SearchParam& p) {
  switch (p.kind()) {
    case SearchParam::CHOICE:
      return p.values_size();
    case SearchParam::UNIFORM:
    case SearchParam::LOG_UNIFORM:
      return p.grid_points();
    case SearchParam::INT_RANGE:
      return int_range_size(p);
  }
  return 0;
}

std::string grid_point(const SearchParam& p, long long i) {
  const long long n = grid_size(p);
  switch (p.kind()) {
    case SearchParam::CHOICE:
      return p.path() + "=" + p.values(static_cast<int>(i));
    case SearchParam::UNIFORM: {
      // Ends exactly at min and max, whatever the rounding in between.
      if (i == 0) return numeric_assignment(p, p.min());
      if (i == n - 1) return numeric_assignment(p, p.max());
      const double t = static_cast<double>(i) / static_cast<double>(n - 1);
      return numeric_assignment(p, p.min() + t * (p.max() - p.min()));
    }
    case SearchParam::LOG_UNIFORM: {
      if (i == 0) return numeric_assignment(p, p.min());
      if (i == n - 1) return numeric_assignment(p, p.max());
      // Powers of ten rather than exp/log, so 1e-4 .. 1e-1 come out as
      // 0.001 and 0.01, not 0.0010000000000000002.
      const double lo = std::log10(p.min()), hi = std::log10(p.max());
      const double t = static_cast<double>(i) / static_cast<double>(n - 1);
      return numeric_assignment(p, std::pow(10.0, lo + t * (hi - lo)));
    }
    case SearchParam::INT_RANGE:
      return numeric_assignment(p, static_cast<double>(int_at(p, i)));
  }
  return {};
}

class GridSearch : public SearchAlgorithm {
 public:
  explicit GridSearch(const SweepSpec& spec) : spec_(spec) {
    long long total = 1;
    for (const SearchParam& p : spec.param()) {
      const long long n = grid_size(p);
      total = (n > 0 && total > INT_MAX / n) ? INT_MAX : total * n;
    }
    if (spec.trials() > 0) total = std::min<long long>(total, spec.trials());
    total_ = static_cast<int>(total);
  }
  int total_trials() const override { return total_; }
  int needs_finished(int, int) const override { return 0; }
  Assignment suggest(int k, const std::vector<FinishedTrial>&) override {
    // Mixed radix, the last param fastest: the first param varies slowest.
    Assignment a(spec_.param_size());
    long long rest = k;
    for (int i = spec_.param_size() - 1; i >= 0; --i) {
      const long long n = grid_size(spec_.param(i));
      a[i] = grid_point(spec_.param(i), rest % n);
      rest /= n;
    }
    return a;
  }

 private:
  SweepSpec spec_;
  int total_ = 0;
};

// ---------------------------------------------------------------- RANDOM

class RandomSearch : public SearchAlgorithm {
 public:
  explicit RandomSearch(const SweepSpec& spec) : spec_(spec) {}
  int total_trials() const override { return spec_.trials(); }
  int needs_finished(int, int) const override { return 0; }
  Assignment suggest(int k, const std::vector<FinishedTrial>&) override {
    Assignment a;
    for (int i = 0; i < spec_.param_size(); ++i)
      a.push_back(random_assignment(spec_.param(i), spec_.seed(), k, i));
    return a;
  }

 private:
  SweepSpec spec_;
};

// ---------------------------------------------------------------- TPE

constexpr double kPriorWeight = 1.0;  // Optuna's default prior_weight

double normal_cdf(double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); }

// Optuna's default_weights: equal weights, except that beyond 25
// observations the older ones fade in linearly (`obs` is oldest first).
std::vector<double> observation_weights(std::size_t n) {
  std::vector<double> w(n, 1.0);
  if (n < 25) return w;
  const std::size_t ramp = n - 25;
  for (std::size_t i = 0; i < ramp; ++i) {
    const double t = ramp == 1 ? 0.0 : static_cast<double>(i) / static_cast<double>(ramp - 1);
    w[i] = 1.0 / static_cast<double>(n) + t * (1.0 - 1.0 / static_cast<double>(n));
  }
  return w;
}

// A univariate Parzen estimator on [low, high]: one Gaussian per
// observation plus a wide prior, each truncated to the interval, widths
// from the distances to the neighbours clipped as Optuna does ("magic
// clip"), so it is stable with few observations.
class ParzenEstimator {
 public:
  ParzenEstimator(const std::vector<double>& obs, double low, double high)
      : low_(low), high_(high) {
    std::vector<double> w = observation_weights(obs.size());
    mu_ = obs;
    weight_ = w;
    mu_.push_back(0.5 * (low + high));
    weight_.push_back(kPriorWeight);
    const std::size_t prior = mu_.size() - 1;
    const double total = std::accumulate(weight_.begin(), weight_.end(), 0.0);
    for (double& x : weight_) x /= total;

    std::vector<std::size_t> order(mu_.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t a, std::size_t b) { return mu_[a] < mu_[b]; });
    const std::size_t m = order.size();
    sigma_.assign(m, high - low);
    for (std::size_t r = 0; r < m; ++r) {
      const double here = mu_[order[r]];
      const double left = here - (r == 0 ? low : mu_[order[r - 1]]);
      const double right = (r + 1 == m ? high : mu_[order[r + 1]]) - here;
      double s = std::max(left, right);
      // consider_endpoints=False: the outermost kernels take their inner
      // neighbour's distance, not the distance to the bound.
      if (m >= 2 && r == 0) s = right;
      if (m >= 2 && r + 1 == m) s = left;
      sigma_[order[r]] = s;
    }
    sigma_[prior] = high - low;
    const double min_sigma = (high - low) / std::min(100.0, 1.0 + static_cast<double>(m));
    for (double& s : sigma_) s = std::clamp(s, min_sigma, high - low);
    for (std::size_t j = 0; j < m; ++j) {
      mass_.push_back(normal_cdf((high - mu_[j]) / sigma_[j]) -
                      normal_cdf((low - mu_[j]) / sigma_[j]));
    }
  }

  double sample(Rng& rng) const {
    const std::size_t j = pick(rng);
    // Rejection from the untruncated kernel: its mean lies in [low, high]
    // and its width is at most the interval, so at least a third of the
    // draws land inside.
    for (int attempt = 0; attempt < 1000; ++attempt) {
      const double x = mu_[j] + sigma_[j] * static_cast<double>(rng.normal());
      if (x >= low_ && x <= high_) return x;
    }
    return std::clamp(mu_[j], low_, high_);
  }

  double log_pdf(double x) const {
    double p = 0.0;
    for (std::size_t j = 0; j < mu_.size(); ++j) {
      const double z = (x - mu_[j]) / sigma_[j];
      p += weight_[j] * std::exp(-0.5 * z * z) / (sigma_[j] * std::sqrt(2.0 * M_PI) * mass_[j]);
    }
    return std::log(std::max(p, std::numeric_limits<double>::min()));
  }

  // Log of the probability of [a, b] (the bin of an integer value).
  double log_mass(double a, double b) const {
    double p = 0.0;
    for (std::size_t j = 0; j < mu_.size(); ++j) {
      p += weight_[j] *
           (normal_cdf((b - mu_[j]) / sigma_[j]) - normal_cdf((a - mu_[j]) / sigma_[j])) / mass_[j];
    }
    return std::log(std::max(p, std::numeric_limits<double>::min()));
  }

 private:
  std::size_t pick(Rng& rng) const {
    double u = unit(rng);
    for (std::size_t j = 0; j + 1 < weight_.size(); ++j) {
      if (u < weight_[j]) return j;
      u -= weight_[j];
    }
    return weight_.size() - 1;
  }

  double low_, high_;
  std::vector<double> mu_, sigma_, weight_, mass_;
};

// A categorical Parzen estimator: each observation puts its weight on its
// choice, smoothed by a prior spread over all choices (Optuna's).
std::vector<double> categorical_density(const std::vector<int>& obs, int choices) {
  const std::vector<double> w0 = observation_weights(obs.size());
  std::vector<double> w = w0;
  w.push_back(kPriorWeight);
  const double total = std::accumulate(w.begin(), w.end(), 0.0);
  const double a = kPriorWeight / static_cast<double>(obs.size() + 1);
  const double row_norm = 1.0 + static_cast<double>(choices) * a;
  std::vector<double> p(choices, w.back() / total / static_cast<double>(choices));
  for (std::size_t j = 0; j < obs.size(); ++j) {
    for (int c = 0; c < choices; ++c) {
      const double row = ((c == obs[j] ? 1.0 : 0.0) + a) / row_norm;
      p[c] += w[j] / total * row;
    }
  }
  return p;
}

class TpeSearch : public SearchAlgorithm {
 public:
  explicit TpeSearch(const SweepSpec& spec) : spec_(spec) {}
  int total_trials() const override { return spec_.trials(); }
  int needs_finished(int k, int concurrency) const override {
    if (k < spec_.tpe().startup_trials()) return 0;
    if (concurrency <= 1) return k;
    return std::max(0, k - concurrency);
  }
  Assignment suggest(int k, const std::vector<FinishedTrial>& finished) override {
    Assignment a;
    if (k < spec_.tpe().startup_trials()) {
      for (int i = 0; i < spec_.param_size(); ++i)
        a.push_back(random_assignment(spec_.param(i), spec_.seed(), k, i));
      return a;
    }
    std::vector<const FinishedTrial*> good, bad;
    split(finished, &good, &bad);
    for (int i = 0; i < spec_.param_size(); ++i) {
      a.push_back(good.empty() ? random_assignment(spec_.param(i), spec_.seed(), k, i)
                               : suggest_param(k, i, good, bad));
    }
    return a;
  }

 private:
  // Good: the best ceil(gamma * n) of the n trials with an objective
  // (ties: the lower index); bad: the rest, failed ones included. Both in
  // index order, oldest first, as the weights expect.
  void split(const std::vector<FinishedTrial>& finished, std::vector<const FinishedTrial*>* good,
             std::vector<const FinishedTrial*>* bad) const {
    std::vector<const FinishedTrial*> scored;
    for (const FinishedTrial& t : finished) {
      if (t.objective && !std::isnan(*t.objective))
        scored.push_back(&t);
      else
        bad->push_back(&t);
    }
    const bool maximize = spec_.objective().goal() == Objective::MAXIMIZE;
    std::stable_sort(scored.begin(), scored.end(), [&](const auto* x, const auto* y) {
      if (*x->objective != *y->objective)
        return maximize ? *x->objective > *y->objective : *x->objective < *y->objective;
      return x->index < y->index;
    });
    const auto n = static_cast<double>(scored.size());
    const std::size_t n_good = std::min(
        scored.size(),
        static_cast<std::size_t>(std::max(1.0, std::ceil(spec_.tpe().gamma() * n - 1e-9))));
    good->assign(scored.begin(), scored.begin() + static_cast<std::ptrdiff_t>(n_good));
    bad->insert(bad->end(), scored.begin() + static_cast<std::ptrdiff_t>(n_good), scored.end());
    const auto by_index = [](const auto* x, const auto* y) { return x->index < y->index; };
    std::sort(good->begin(), good->end(), by_index);
    std::sort(bad->begin(), bad->end(), by_index);
  }

  std::string suggest_param(int k, int i, const std::vector<const FinishedTrial*>& good,
                            const std::vector<const FinishedTrial*>& bad) const {
    const SearchParam& p = spec_.param(i);
    Rng rng(derive_seed(spec_.seed(), kTpeCandidates, static_cast<uint64_t>(k),
                        static_cast<uint64_t>(i)));
    const int candidates = std::max(1, spec_.tpe().candidates());
    if (p.kind() == SearchParam::CHOICE) {
      const std::vector<double> l = categorical_density(choices_of(p, i, good), p.values_size());
      const std::vector<double> g = categorical_density(choices_of(p, i, bad), p.values_size());
      int best = -1;
      double best_score = -std::numeric_limits<double>::infinity();
      for (int c = 0; c < candidates; ++c) {
        double u = unit(rng);
        int choice = p.values_size() - 1;
        for (int v = 0; v + 1 < p.values_size(); ++v) {
          if (u < l[v]) {
            choice = v;
            break;
          }
          u -= l[v];
        }
        const double score = std::log(l[choice]) - std::log(g[choice]);
        if (best < 0 || score > best_score) {
          best = choice;
          best_score = score;
        }
      }
      return p.path() + "=" + p.values(best);
    }

    // Numeric: fit in the param's own space (log for LOG_UNIFORM, the
    // integer grid widened by half a step each side for INT_RANGE).
    double low = p.min(), high = p.max();
    long long n_int = 0;
    if (p.kind() == SearchParam::LOG_UNIFORM) {
      low = std::log(p.min());
      high = std::log(p.max());
    } else if (p.kind() == SearchParam::INT_RANGE) {
      n_int = int_range_size(p);
      const double half = 0.5 * static_cast<double>(p.step());
      low = static_cast<double>(int_at(p, 0)) - half;
      high = static_cast<double>(int_at(p, n_int - 1)) + half;
    }
    const ParzenEstimator l(internal_values(p, i, good), low, high);
    const ParzenEstimator g(internal_values(p, i, bad), low, high);
    double best_value = 0.0;
    double best_score = -std::numeric_limits<double>::infinity();
    for (int c = 0; c < candidates; ++c) {
      const double x = l.sample(rng);
      double value, score;
      if (p.kind() == SearchParam::INT_RANGE) {
        const long long idx = std::clamp<long long>(
            std::llround((x - static_cast<double>(int_at(p, 0))) / static_cast<double>(p.step())),
            0, n_int - 1);
        value = static_cast<double>(int_at(p, idx));
        const double half = 0.5 * static_cast<double>(p.step());
        score = l.log_mass(value - half, value + half) - g.log_mass(value - half, value + half);
      } else {
        value = p.kind() == SearchParam::LOG_UNIFORM ? std::exp(x) : x;
        value = std::clamp(value, p.min(), p.max());
        score = l.log_pdf(x) - g.log_pdf(x);
      }
      if (c == 0 || score > best_score) {
        best_value = value;
        best_score = score;
      }
    }
    return numeric_assignment(p, best_value);
  }

  // The observations of param i, skipping any a trial does not carry in
  // this param's form (not something the driver should ever pass).
  static std::vector<double> internal_values(const SearchParam& p, int i,
                                             const std::vector<const FinishedTrial*>& trials) {
    std::vector<double> out;
    for (const FinishedTrial* t : trials) {
      if (i >= static_cast<int>(t->params.size())) continue;
      const std::optional<double> v = parse_numeric_assignment(p, t->params[i]);
      if (!v || !std::isfinite(*v)) continue;
      const double clamped = std::clamp(*v, p.min(), p.max());
      out.push_back(p.kind() == SearchParam::LOG_UNIFORM ? std::log(clamped) : clamped);
    }
    return out;
  }

  static std::vector<int> choices_of(const SearchParam& p, int i,
                                     const std::vector<const FinishedTrial*>& trials) {
    std::vector<int> out;
    for (const FinishedTrial* t : trials) {
      if (i >= static_cast<int>(t->params.size())) continue;
      for (int v = 0; v < p.values_size(); ++v) {
        if (t->params[i] == p.path() + "=" + p.values(v)) {
          out.push_back(v);
          break;
        }
      }
    }
    return out;
  }

  SweepSpec spec_;
};

// ---------------------------------------------------------------- start points

// The sweep's start points first, then the algorithm: trial k >= n gets
// what the algorithm would give it anyway, so adding start points changes
// what the first trials try and, for TPE, what later ones learn from.
class WithStartPoints : public SearchAlgorithm {
 public:
  WithStartPoints(const SweepSpec& spec, std::unique_ptr<SearchAlgorithm> inner)
      : inner_(std::move(inner)) {
    for (int j = 0; j < spec.start_point_size(); ++j)
      points_.push_back(start_point_assignment(spec, j));
  }
  int total_trials() const override { return inner_->total_trials(); }
  int needs_finished(int k, int concurrency) const override {
    return k < static_cast<int>(points_.size()) ? 0 : inner_->needs_finished(k, concurrency);
  }
  Assignment suggest(int k, const std::vector<FinishedTrial>& finished) override {
    if (k < static_cast<int>(points_.size())) return points_[k];
    return inner_->suggest(k, finished);
  }

 private:
  std::unique_ptr<SearchAlgorithm> inner_;
  std::vector<Assignment> points_;
};

std::unique_ptr<SearchAlgorithm> make_algorithm(const SweepSpec& spec) {
  switch (spec.algorithm()) {
    case SweepSpec::GRID:
      return std::make_unique<GridSearch>(spec);
    case SweepSpec::RANDOM:
      return std::make_unique<RandomSearch>(spec);
    case SweepSpec::TPE:
      return std::make_unique<TpeSearch>(spec);
  }
  return std::make_unique<RandomSearch>(spec);
}

}  // namespace

std::unique_ptr<SearchAlgorithm> SearchAlgorithm::create(const SweepSpec& spec) {
  auto algorithm = make_algorithm(spec);
  if (spec.start_point_size() == 0) return algorithm;
  return std::make_unique<WithStartPoints>(spec, std::move(algorithm));
}

Assignment start_point_assignment(const SweepSpec& spec, int j) {
  const std::string at = "start_point[" + std::to_string(j) + "]";
  const TrialPoint& point = spec.start_point(j);
  Assignment out(spec.param_size());
  for (const std::string& set : point.set()) {
    const size_t eq = set.find('=');
    const std::string path = set.substr(0, eq);
    int i = 0;
    while (i < spec.param_size() && spec.param(i).path() != path) ++i;
    if (eq == std::string::npos || i == spec.param_size())
      throw UserError(at + ": \"" + set + "\" sets no param of the search space");
    if (!out[i].empty()) throw UserError(at + ": " + path + " is set twice");
    const SearchParam& p = spec.param(i);
    const std::string value = set.substr(eq + 1);
    if (p.kind() == SearchParam::CHOICE) {
      if (std::find(p.values().begin(), p.values().end(), value) == p.values().end())
        throw UserError(at + ": " + path + "=" + value + " is not among the param's values");
      out[i] = set;
      continue;
    }
    const std::optional<double> x = parse_numeric_assignment(p, set);
    if (!x || !(*x >= p.min() && *x <= p.max())) {
      throw UserError(at + ": " + path + "=" + value + " is not a number in [" + shortest(p.min()) +
                      ", " + shortest(p.max()) + "]");
    }
    if (p.kind() == SearchParam::INT_RANGE) {
      const double steps = (*x - p.min()) / static_cast<double>(p.step());
      if (steps != std::floor(steps))
        throw UserError(at + ": " + path + "=" + value + " is not min + a multiple of step");
    }
    out[i] = numeric_assignment(p, *x);
  }
  for (int i = 0; i < spec.param_size(); ++i)
    if (out[i].empty()) throw UserError(at + ": sets no value for " + spec.param(i).path());
  return out;
}

std::string numeric_assignment(const SearchParam& param, double value) {
  if (param.kind() == SearchParam::INT_RANGE)
    return param.path() + "=" + std::to_string(std::llround(value));
  // Rounding to the nearest float is monotonic, so a value inside
  // [min, max] stays inside [float(min), float(max)]: the interval the
  // float field can hold.
  const pb::FieldDescriptor* field = train_spec_field(param.path());
  if (field != nullptr && field->cpp_type() == pb::FieldDescriptor::CPPTYPE_FLOAT)
    return param.path() + "=" + shortest(static_cast<float>(value));
  return param.path() + "=" + shortest(value);
}

std::optional<double> parse_numeric_assignment(const SearchParam& param,
                                               const std::string& assignment) {
  const std::string prefix = param.path() + "=";
  if (assignment.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  const char* begin = assignment.data() + prefix.size();
  const char* end = assignment.data() + assignment.size();
  double value = 0.0;
  const auto r = std::from_chars(begin, end, value);
  if (r.ec != std::errc() || r.ptr != end) return std::nullopt;
  return value;
}

const pb::FieldDescriptor* train_spec_field(const std::string& path) {
  const pb::Descriptor* message = TrainSpec::descriptor();
  const pb::FieldDescriptor* field = nullptr;
  std::size_t pos = 0;
  while (pos <= path.size()) {
    if (message == nullptr) return nullptr;  // a step past a scalar
    // One step: a name, then optionally "[selector]" (which may hold dots).
    std::size_t end = pos;
    while (end < path.size() && path[end] != '.' && path[end] != '[') ++end;
    const std::string name = path.substr(pos, end - pos);
    if (end < path.size() && path[end] == '[') {
      end = path.find(']', end);
      if (end == std::string::npos) return nullptr;
      ++end;
    }
    field = message->FindFieldByName(name);
    if (field == nullptr) return nullptr;
    message = field->message_type();
    if (end == path.size()) return field;
    if (path[end] != '.') return nullptr;
    pos = end + 1;
  }
  return nullptr;
}

long long int_range_size(const SearchParam& param) {
  if (param.step() < 1) return 0;
  const long long lo = std::llround(param.min()), hi = std::llround(param.max());
  if (hi < lo) return 0;
  return (hi - lo) / param.step() + 1;
}

}  // namespace dptrain::launcher
