#include "core/optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "core/error.h"

namespace dptrain {
namespace {

// Below this many floats a loop runs on the calling thread: waking the team
// would cost more than the loop.
constexpr std::ptrdiff_t kMinParallel = std::ptrdiff_t{1} << 15;

// clip_grad_norm sums squares per chunk of this many floats; the chunking,
// not the thread count, fixes the order of the additions.
constexpr size_t kNormChunk = 4096;

void check(bool ok, const std::string& what) {
  if (!ok) throw UserError(what);
}

class Sgd final : public Optimizer {
 public:
  Sgd(const SolverSpec& spec, size_t size)
      : size_(size),
        momentum_(spec.momentum()),
        weight_decay_(spec.weight_decay()),
        nesterov_(spec.nesterov()) {
    check(spec.momentum() >= 0,
          "solver.momentum must be >= 0, got " + std::to_string(spec.momentum()));
    check(spec.weight_decay() >= 0,
          "solver.weight_decay must be >= 0, got " + std::to_string(spec.weight_decay()));
    check(!spec.nesterov() || spec.momentum() > 0, "solver.nesterov needs solver.momentum > 0");
    // Without momentum the buffer would always equal g: keep none, as PyTorch.
    if (momentum_ > 0) buf_.assign(size_, 0.0f);
  }

  void step(float* params, const float* grads, float lr) override {
    ++steps_;
    float* __restrict p = params;
    const float* __restrict g = grads;
    const auto n = static_cast<std::ptrdiff_t>(size_);
    const float wd = weight_decay_;
    const float mu = momentum_;
    if (buf_.empty()) {
#pragma omp parallel for simd schedule(static) if (parallel : n >= kMinParallel)
      for (std::ptrdiff_t i = 0; i < n; ++i) p[i] -= lr * (g[i] + wd * p[i]);
      return;
    }
    float* __restrict buf = buf_.data();
    if (nesterov_) {
#pragma omp parallel for simd schedule(static) if (parallel : n >= kMinParallel)
      for (std::ptrdiff_t i = 0; i < n; ++i) {
        const float gi = g[i] + wd * p[i];
        const float b = mu * buf[i] + gi;
        buf[i] = b;
        p[i] -= lr * (gi + mu * b);
      }
    } else {
#pragma omp parallel for simd schedule(static) if (parallel : n >= kMinParallel)
      for (std::ptrdiff_t i = 0; i < n; ++i) {
        const float b = mu * buf[i] + (g[i] + wd * p[i]);
        buf[i] = b;
        p[i] -= lr * b;
      }
    }
  }

  std::vector<std::pair<std::string, std::vector<float>*>> state() override {
    if (buf_.empty()) return {};
    return {{"momentum_buffer", &buf_}};
  }
  int64_t steps_taken() const override { return steps_; }
  void set_steps_taken(int64_t steps) override { steps_ = steps; }

 private:
  size_t size_;
  float momentum_;
  float weight_decay_;
  bool nesterov_;
  std::vector<float> buf_;
  int64_t steps_ = 0;
};

class AdamW final : public Optimizer {
 public:
  AdamW(const SolverSpec& spec, size_t size)
      : size_(size),
        beta1_(spec.beta1()),
        beta2_(spec.beta2()),
        eps_(spec.adam_eps()),
        weight_decay_(spec.weight_decay()),
        m_(size, 0.0f),
        v_(size, 0.0f) {
    check(beta1_ >= 0 && beta1_ < 1,
          "solver.beta1 must be in [0, 1), got " + std::to_string(beta1_));
    check(beta2_ >= 0 && beta2_ < 1,
          "solver.beta2 must be in [0, 1), got " + std::to_string(beta2_));
    // eps = 0 would turn every entry with zero grad (padding included) into
    // 0/0 = NaN.
    check(eps_ > 0, "solver.adam_eps must be > 0, got " + std::to_string(eps_));
    check(weight_decay_ >= 0,
          "solver.weight_decay must be >= 0, got " + std::to_string(weight_decay_));
  }

  void step(float* params, const float* grads, float lr) override {
    ++steps_;
    // Per-step scalars in double, as PyTorch computes them in Python.
    const double t = static_cast<double>(steps_);
    const double bias_correction1 = 1.0 - std::pow(static_cast<double>(beta1_), t);
    const double bias_correction2 = 1.0 - std::pow(static_cast<double>(beta2_), t);
    const auto step_size = static_cast<float>(lr / bias_correction1);
    const auto bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
    const float decay = 1.0f - lr * weight_decay_;
    const float b1 = beta1_;
    const float b2 = beta2_;
    const float one_minus_b1 = 1.0f - beta1_;
    const float one_minus_b2 = 1.0f - beta2_;
    const float eps = eps_;

    float* __restrict p = params;
    const float* __restrict g = grads;
    float* __restrict m = m_.data();
    float* __restrict v = v_.data();
    const auto n = static_cast<std::ptrdiff_t>(size_);
#pragma omp parallel for simd schedule(static) if (parallel : n >= kMinParallel)
    for (std::ptrdiff_t i = 0; i < n; ++i) {
      const float gi = g[i];
      const float mi = b1 * m[i] + one_minus_b1 * gi;
      const float vi = b2 * v[i] + one_minus_b2 * gi * gi;
      m[i] = mi;
      v[i] = vi;
      const float denom = std::sqrt(vi) / bias_correction2_sqrt + eps;
      p[i] = p[i] * decay - step_size * mi / denom;
    }
  }

  std::vector<std::pair<std::string, std::vector<float>*>> state() override {
    return {{"exp_avg", &m_}, {"exp_avg_sq", &v_}};
  }
  int64_t steps_taken() const override { return steps_; }
  void set_steps_taken(int64_t steps) override { steps_ = steps; }

 private:
  size_t size_;
  float beta1_;
  float beta2_;
  float eps_;
  float weight_decay_;
  std::vector<float> m_;
  std::vector<float> v_;
  int64_t steps_ = 0;
};

// Sum of squares of one chunk in eight interleaved lanes, added in a fixed
// order: the compiler may put the lanes in vector registers but cannot
// reorder the additions, so the result depends only on the values.
double sum_of_squares(const float* x, size_t n) {
  double lane[8] = {};
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (size_t l = 0; l < 8; ++l) {
      const double xi = x[i + l];
      lane[l] += xi * xi;  // exact: a float squared fits a double
    }
  }
  for (size_t l = 0; i < n; ++i, ++l) {
    const double xi = x[i];
    lane[l] += xi * xi;
  }
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

}  // namespace

std::unique_ptr<Optimizer> Optimizer::create(const SolverSpec& spec, size_t size) {
  switch (spec.type()) {
    case SolverSpec::SGD:
      return std::make_unique<Sgd>(spec, size);
    case SolverSpec::ADAMW:
      return std::make_unique<AdamW>(spec, size);
  }
  throw UserError("solver.type: unknown optimizer " + std::to_string(spec.type()));
}

float clip_grad_norm(float* grads, size_t size, float max_norm) {
  if (size == 0) return 0.0f;
  const size_t chunks = (size + kNormChunk - 1) / kNormChunk;
  // Grows to the largest buffer seen, then is reused: no allocation per step.
  static thread_local std::vector<double> chunk_sums;
  if (chunk_sums.size() < chunks) chunk_sums.resize(chunks);
  double* sums = chunk_sums.data();
  const auto n = static_cast<std::ptrdiff_t>(size);
  const auto nc = static_cast<std::ptrdiff_t>(chunks);
#pragma omp parallel for schedule(static) if (n >= kMinParallel)
  for (std::ptrdiff_t c = 0; c < nc; ++c) {
    const size_t begin = static_cast<size_t>(c) * kNormChunk;
    sums[c] = sum_of_squares(grads + begin, std::min(kNormChunk, size - begin));
  }
  double total = 0.0;
  for (size_t c = 0; c < chunks; ++c) total += sums[c];
  const auto norm = static_cast<float>(std::sqrt(total));

  // PyTorch's clip_coef, in float32 like its tensors.
  if (max_norm > 0 && std::isfinite(norm)) {
    const float coef = max_norm / (norm + 1e-6f);
    if (coef < 1.0f) {
      float* __restrict g = grads;
#pragma omp parallel for simd schedule(static) if (parallel : n >= kMinParallel)
      for (std::ptrdiff_t i = 0; i < n; ++i) g[i] *= coef;
    }
  }
  return norm;
}

}  // namespace dptrain
