// Optimizers and gradient clipping against PyTorch's semantics, written
// out below as plain scalar loops in double.
#include "core/optimizer.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "core/error.h"

namespace dptrain {
namespace {

SolverSpec sgd_spec(float momentum, bool nesterov, float weight_decay) {
  SolverSpec spec;
  spec.set_type(SolverSpec::SGD);
  spec.set_momentum(momentum);
  spec.set_nesterov(nesterov);
  spec.set_weight_decay(weight_decay);
  return spec;
}

SolverSpec adamw_spec(float weight_decay) {
  SolverSpec spec;
  spec.set_type(SolverSpec::ADAMW);
  spec.set_weight_decay(weight_decay);
  return spec;  // beta1 0.9, beta2 0.999, eps 1e-8 by default
}

// A gradient that changes sign and size with the entry and the step.
std::vector<float> varying_grads(size_t n, int step) {
  std::vector<float> g(n);
  for (size_t i = 0; i < n; ++i) {
    g[i] = static_cast<float>(std::sin(0.7 * static_cast<double>(i) + 1.3 * step) *
                              (1.0 + 0.25 * static_cast<double>(i % 5)));
  }
  return g;
}

std::vector<float> initial_params(size_t n) {
  std::vector<float> p(n);
  for (size_t i = 0; i < n; ++i) p[i] = 0.5f - 0.1f * static_cast<float>(i % 11);
  return p;
}

// torch.optim.SGD(dampening=0) step by step, in its own words: the buffer
// is created as a copy of the first gradient.
struct ReferenceSgd {
  double lr, momentum, weight_decay;
  bool nesterov;
  std::vector<double> buf;
  void step(std::vector<double>& p, const std::vector<float>& grad) {
    const bool first = buf.empty();
    if (first) buf.resize(p.size());
    for (size_t i = 0; i < p.size(); ++i) {
      double d = grad[i] + weight_decay * p[i];
      if (momentum != 0) {
        buf[i] = first ? d : momentum * buf[i] + d;
        d = nesterov ? d + momentum * buf[i] : buf[i];
      }
      p[i] -= lr * d;
    }
  }
};

// torch.optim.AdamW(amsgrad=False) step by step.
struct ReferenceAdamW {
  double lr, beta1, beta2, eps, weight_decay;
  std::vector<double> m, v;
  int t = 0;
  void step(std::vector<double>& p, const std::vector<float>& grad) {
    if (m.empty()) {
      m.assign(p.size(), 0.0);
      v.assign(p.size(), 0.0);
    }
    ++t;
    for (size_t i = 0; i < p.size(); ++i) {
      const double g = grad[i];
      p[i] *= 1 - lr * weight_decay;
      m[i] = beta1 * m[i] + (1 - beta1) * g;
      v[i] = beta2 * v[i] + (1 - beta2) * g * g;
      const double mhat = m[i] / (1 - std::pow(beta1, t));
      const double vhat = v[i] / (1 - std::pow(beta2, t));
      p[i] -= lr * mhat / (std::sqrt(vhat) + eps);
    }
  }
};

void expect_close(const std::vector<float>& got, const std::vector<double>& want, int step) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], 2e-6 * std::max(1.0, std::abs(want[i])))
        << "entry " << i << " after step " << step;
  }
}

// Runs `steps` steps of the optimizer built from `spec` and of the
// reference, with the same float grads, and compares after every step.
template <typename Reference>
void compare_with_reference(const SolverSpec& spec, Reference ref, float lr, int steps) {
  const size_t n = 37;
  auto opt = Optimizer::create(spec, n);
  std::vector<float> p = initial_params(n);
  std::vector<double> p_ref(p.begin(), p.end());
  for (int s = 1; s <= steps; ++s) {
    const std::vector<float> g = varying_grads(n, s);
    opt->step(p.data(), g.data(), lr);
    ref.step(p_ref, g);
    expect_close(p, p_ref, s);
  }
  EXPECT_EQ(opt->steps_taken(), steps);
}

TEST(SgdTest, PlainMatchesPyTorch) {
  compare_with_reference(sgd_spec(0, false, 0), ReferenceSgd{0.1, 0, 0, false, {}}, 0.1f, 6);
}

TEST(SgdTest, MomentumMatchesPyTorch) {
  compare_with_reference(sgd_spec(0.9f, false, 0), ReferenceSgd{0.05, 0.9f, 0, false, {}}, 0.05f,
                         6);
}

TEST(SgdTest, NesterovMatchesPyTorch) {
  compare_with_reference(sgd_spec(0.9f, true, 0), ReferenceSgd{0.05, 0.9f, 0, true, {}}, 0.05f, 6);
}

TEST(SgdTest, WeightDecayMatchesPyTorch) {
  compare_with_reference(sgd_spec(0, false, 0.01f), ReferenceSgd{0.1, 0, 0.01f, false, {}}, 0.1f,
                         6);
  compare_with_reference(sgd_spec(0.9f, false, 0.01f), ReferenceSgd{0.1, 0.9f, 0.01f, false, {}},
                         0.1f, 6);
  compare_with_reference(sgd_spec(0.9f, true, 0.01f), ReferenceSgd{0.1, 0.9f, 0.01f, true, {}},
                         0.1f, 6);
}

// Values worked out by hand, to check the reference itself.
TEST(SgdTest, HandComputedSteps) {
  {  // momentum 0.9, lr 0.1, grad 1: buf 1, 1.9, 2.71
    auto opt = Optimizer::create(sgd_spec(0.9f, false, 0), 1);
    float p = 1.0f;
    const float g = 1.0f;
    opt->step(&p, &g, 0.1f);
    EXPECT_NEAR(p, 0.9f, 1e-6);
    opt->step(&p, &g, 0.1f);
    EXPECT_NEAR(p, 0.71f, 1e-6);
    opt->step(&p, &g, 0.1f);
    EXPECT_NEAR(p, 0.439f, 1e-6);
  }
  {  // nesterov: d = 1 + 0.9 * buf, buf 1 then 1.9
    auto opt = Optimizer::create(sgd_spec(0.9f, true, 0), 1);
    float p = 1.0f;
    const float g = 1.0f;
    opt->step(&p, &g, 0.1f);
    EXPECT_NEAR(p, 0.81f, 1e-6);
    opt->step(&p, &g, 0.1f);
    EXPECT_NEAR(p, 0.539f, 1e-6);
  }
  {  // weight decay alone shrinks p by 1 - lr * wd per step
    auto opt = Optimizer::create(sgd_spec(0, false, 0.1f), 1);
    float p = 1.0f;
    const float g = 0.0f;
    opt->step(&p, &g, 0.5f);
    EXPECT_NEAR(p, 0.95f, 1e-6);
    opt->step(&p, &g, 0.5f);
    EXPECT_NEAR(p, 0.9025f, 1e-6);
  }
}

TEST(AdamWTest, MatchesPyTorch) {
  compare_with_reference(adamw_spec(0), ReferenceAdamW{0.01, 0.9f, 0.999f, 1e-8f, 0, {}, {}}, 0.01f,
                         8);
}

TEST(AdamWTest, DecoupledWeightDecayMatchesPyTorch) {
  compare_with_reference(adamw_spec(0.05f),
                         ReferenceAdamW{0.01, 0.9f, 0.999f, 1e-8f, 0.05f, {}, {}}, 0.01f, 8);
  SolverSpec spec = adamw_spec(0.1f);
  spec.set_beta1(0.8f);
  spec.set_beta2(0.99f);
  spec.set_adam_eps(1e-3f);
  compare_with_reference(spec, ReferenceAdamW{0.02, 0.8f, 0.99f, 1e-3f, 0.1f, {}, {}}, 0.02f, 8);
}

// With a constant grad, the bias-corrected moments are g and g^2, so each
// step moves p by lr (eps aside) after the decay.
TEST(AdamWTest, HandComputedSteps) {
  auto opt = Optimizer::create(adamw_spec(0.01f), 1);
  float p = 1.0f;
  const float g = 2.0f;
  opt->step(&p, &g, 0.1f);
  EXPECT_NEAR(p, 1.0 * 0.999 - 0.1, 1e-6);
  opt->step(&p, &g, 0.1f);
  EXPECT_NEAR(p, 0.899 * 0.999 - 0.1, 1e-6);
}

// Minimises 0.5 * sum a_i (p_i - c_i)^2.
double minimise_quadratic(const SolverSpec& spec, float lr, int steps) {
  const size_t n = 16;
  std::vector<float> a(n), c(n), p(n, 0.0f), g(n);
  for (size_t i = 0; i < n; ++i) {
    a[i] = 0.5f + 0.1f * static_cast<float>(i);
    c[i] = static_cast<float>(i % 4) - 1.5f;
  }
  auto opt = Optimizer::create(spec, n);
  for (int s = 0; s < steps; ++s) {
    for (size_t i = 0; i < n; ++i) g[i] = a[i] * (p[i] - c[i]);
    opt->step(p.data(), g.data(), lr);
  }
  double worst = 0;
  for (size_t i = 0; i < n; ++i) worst = std::max(worst, std::abs(double{p[i]} - c[i]));
  return worst;
}

TEST(OptimizerTest, ConvergesOnQuadratic) {
  EXPECT_LT(minimise_quadratic(sgd_spec(0, false, 0), 0.3f, 300), 1e-4);
  EXPECT_LT(minimise_quadratic(sgd_spec(0.9f, false, 0), 0.05f, 500), 1e-4);
  EXPECT_LT(minimise_quadratic(sgd_spec(0.9f, true, 0), 0.05f, 500), 1e-4);
  EXPECT_LT(minimise_quadratic(adamw_spec(0), 0.01f, 2000), 1e-2);
}

bool is_positive_zero(float x) { return std::bit_cast<uint32_t>(x) == 0; }

// Entries with param = grad = 0 (padding of blocked layouts) must stay
// exactly +0.0f with weight decay on, in the parallel path too.
TEST(OptimizerTest, ZeroEntriesStayExactlyZero) {
  const size_t n = 100'003;  // large enough to run on the thread team
  const std::vector<SolverSpec> specs = {sgd_spec(0, false, 0.1f), sgd_spec(0.9f, false, 0.1f),
                                         sgd_spec(0.9f, true, 0.1f), adamw_spec(0.1f)};
  for (const SolverSpec& spec : specs) {
    auto opt = Optimizer::create(spec, n);
    std::vector<float> p = initial_params(n);
    for (size_t i = 0; i < n; i += 3) p[i] = 0.0f;
    for (int s = 1; s <= 5; ++s) {
      std::vector<float> g = varying_grads(n, s);
      for (size_t i = 0; i < n; i += 3) g[i] = (i % 2) ? -0.0f : 0.0f;
      opt->step(p.data(), g.data(), 0.1f);
    }
    for (size_t i = 0; i < n; i += 3) {
      ASSERT_TRUE(is_positive_zero(p[i]))
          << "type " << spec.type() << " entry " << i << " = " << p[i];
    }
    for (const auto& [name, buf] : opt->state()) {
      for (size_t i = 0; i < n; i += 3) {
        ASSERT_EQ((*buf)[i], 0.0f) << name << " entry " << i;
      }
    }
  }
}

std::vector<float> run_with_threads(const SolverSpec& spec, size_t n, int threads) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(threads);
  auto opt = Optimizer::create(spec, n);
  std::vector<float> p = initial_params(n);
  for (int s = 1; s <= 3; ++s) {
    const std::vector<float> g = varying_grads(n, s);
    opt->step(p.data(), g.data(), 0.01f);
  }
  omp_set_num_threads(saved);
  return p;
}

TEST(OptimizerTest, ResultDoesNotDependOnThreadCount) {
  const size_t n = 200'001;
  for (const SolverSpec& spec : {sgd_spec(0.9f, true, 0.01f), adamw_spec(0.01f)}) {
    const std::vector<float> one = run_with_threads(spec, n, 1);
    const std::vector<float> two = run_with_threads(spec, n, 2);
    EXPECT_TRUE(one == two) << "type " << spec.type();
  }
}

TEST(OptimizerTest, StateHasNamedBuffersOfTheRightSize) {
  const size_t n = 123;
  auto plain = Optimizer::create(sgd_spec(0, false, 0), n);
  EXPECT_TRUE(plain->state().empty());

  auto momentum = Optimizer::create(sgd_spec(0.9f, false, 0), n);
  auto state = momentum->state();
  ASSERT_EQ(state.size(), 1u);
  EXPECT_EQ(state[0].first, "momentum_buffer");
  EXPECT_EQ(state[0].second->size(), n);

  auto adamw = Optimizer::create(adamw_spec(0), n);
  state = adamw->state();
  ASSERT_EQ(state.size(), 2u);
  EXPECT_EQ(state[0].first, "exp_avg");
  EXPECT_EQ(state[1].first, "exp_avg_sq");
  for (const auto& [name, buf] : state) {
    EXPECT_EQ(buf->size(), n) << name;
    EXPECT_TRUE(std::all_of(buf->begin(), buf->end(), [](float x) { return x == 0.0f; }));
  }
  EXPECT_EQ(adamw->steps_taken(), 0);
}

// A fresh optimizer given the saved state and step count continues bitwise
// like the one that never stopped (the checkpoint resume path).
TEST(OptimizerTest, RestoredStateResumesBitwise) {
  const size_t n = 50;
  for (const SolverSpec& spec : {sgd_spec(0.9f, true, 0.01f), adamw_spec(0.01f)}) {
    auto original = Optimizer::create(spec, n);
    std::vector<float> p = initial_params(n);
    for (int s = 1; s <= 3; ++s) {
      const std::vector<float> g = varying_grads(n, s);
      original->step(p.data(), g.data(), 0.01f);
    }
    std::vector<float> p_saved = p;
    std::vector<std::vector<float>> saved;
    for (const auto& entry : original->state()) saved.push_back(*entry.second);

    auto resumed = Optimizer::create(spec, n);
    auto state = resumed->state();
    ASSERT_EQ(state.size(), saved.size());
    for (size_t k = 0; k < saved.size(); ++k) *state[k].second = saved[k];
    resumed->set_steps_taken(original->steps_taken());

    for (int s = 4; s <= 6; ++s) {
      const std::vector<float> g = varying_grads(n, s);
      original->step(p.data(), g.data(), 0.01f);
      resumed->step(p_saved.data(), g.data(), 0.01f);
    }
    EXPECT_TRUE(p == p_saved) << "type " << spec.type();
    EXPECT_EQ(resumed->steps_taken(), 6);
  }
}

TEST(OptimizerTest, RejectsBadHyperparameters) {
  EXPECT_THROW(Optimizer::create(sgd_spec(0, true, 0), 4), UserError);
  EXPECT_THROW(Optimizer::create(sgd_spec(-0.1f, false, 0), 4), UserError);
  EXPECT_THROW(Optimizer::create(sgd_spec(0.9f, false, -1), 4), UserError);
  SolverSpec spec = adamw_spec(0);
  spec.set_adam_eps(0);
  EXPECT_THROW(Optimizer::create(spec, 4), UserError);
  spec = adamw_spec(0);
  spec.set_beta1(1.0f);
  EXPECT_THROW(Optimizer::create(spec, 4), UserError);
  spec = adamw_spec(0);
  spec.set_beta2(-0.5f);
  EXPECT_THROW(Optimizer::create(spec, 4), UserError);
}

TEST(ClipGradNormTest, ReturnsNormAndLeavesGradsWhenOff) {
  std::vector<float> g = {3.0f, 4.0f};
  EXPECT_EQ(clip_grad_norm(g.data(), g.size(), 0.0f), 5.0f);
  EXPECT_EQ(g, (std::vector<float>{3.0f, 4.0f}));
  EXPECT_EQ(clip_grad_norm(g.data(), 0, 1.0f), 0.0f);
}

TEST(ClipGradNormTest, ClipsToMaxNorm) {
  std::vector<float> g = {3.0f, 4.0f};
  EXPECT_EQ(clip_grad_norm(g.data(), g.size(), 1.0f), 5.0f);
  // PyTorch's factor max_norm / (norm + 1e-6).
  EXPECT_FLOAT_EQ(g[0], 3.0f / 5.000001f);
  EXPECT_FLOAT_EQ(g[1], 4.0f / 5.000001f);
  EXPECT_NEAR(clip_grad_norm(g.data(), g.size(), 0.0f), 1.0f, 1e-6);
}

TEST(ClipGradNormTest, LeavesSmallGradsUntouched) {
  std::vector<float> g = {3.0f, -4.0f, 0.0f};
  EXPECT_EQ(clip_grad_norm(g.data(), g.size(), 10.0f), 5.0f);
  EXPECT_EQ(g, (std::vector<float>{3.0f, -4.0f, 0.0f}));
}

TEST(ClipGradNormTest, NonFiniteNormLeavesGradsUntouched) {
  std::vector<float> g = {1.0f, std::numeric_limits<float>::infinity(), 2.0f};
  EXPECT_TRUE(std::isinf(clip_grad_norm(g.data(), g.size(), 1.0f)));
  EXPECT_EQ(g[0], 1.0f);
  EXPECT_EQ(g[2], 2.0f);
}

std::vector<float> random_grads(size_t n) {
  std::mt19937 rng(42);
  std::normal_distribution<float> dist(0.0f, 0.01f);
  std::vector<float> g(n);
  for (float& x : g) x = dist(rng);
  return g;
}

TEST(ClipGradNormTest, LargeBufferNormIsAccurate) {
  const std::vector<float> g = random_grads(1'000'003);
  double sum = 0;
  for (float x : g) sum += double{x} * x;
  std::vector<float> copy = g;
  EXPECT_NEAR(clip_grad_norm(copy.data(), copy.size(), 0.0f), std::sqrt(sum),
              1e-6 * std::sqrt(sum));
}

// The norm and the clipped grads are bitwise the same for 1 and 2 threads
// and for a buffer that starts at another alignment.
TEST(ClipGradNormTest, BitwiseDeterministicAcrossThreadCounts) {
  const size_t n = 1'000'003;
  const std::vector<float> g = random_grads(n);
  const int saved = omp_get_max_threads();

  omp_set_num_threads(1);
  std::vector<float> one = g;
  const float norm_one = clip_grad_norm(one.data(), n, 0.5f);

  omp_set_num_threads(2);
  std::vector<float> two = g;
  const float norm_two = clip_grad_norm(two.data(), n, 0.5f);

  std::vector<float> shifted(n + 1);
  std::copy(g.begin(), g.end(), shifted.begin() + 1);
  const float norm_shifted = clip_grad_norm(shifted.data() + 1, n, 0.5f);
  omp_set_num_threads(saved);

  EXPECT_GT(norm_one, 0.5f);  // so the clipping path ran
  EXPECT_EQ(std::bit_cast<uint32_t>(norm_one), std::bit_cast<uint32_t>(norm_two));
  EXPECT_EQ(std::bit_cast<uint32_t>(norm_one), std::bit_cast<uint32_t>(norm_shifted));
  EXPECT_TRUE(one == two);
  EXPECT_TRUE(std::equal(one.begin(), one.end(), shifted.begin() + 1));
}

}  // namespace
}  // namespace dptrain
