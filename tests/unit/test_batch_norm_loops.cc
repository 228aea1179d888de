// Batch normalization's loops over channels-last tensors
// (core/layers/batch_norm_loops.h) against the textbook formulas in double:
// statistics, output, and the gradients of gamma, beta and the input, with
// and without the fused ReLU, in f32 and bf16, under every instruction set
// the CPU has and on one thread and two; the normalization added to another
// tensor, itself plain or normalized by other loops, as the residual Add it
// is folded into computes it; and the gradient sums taken in the Add's ReLU
// gradient pass. The channel counts leave lanes over after the vectors and
// (84) single vectors after the groups of vectors the sums take at a time,
// and the pixels a part of the 32 summed in float; rows of 1024 channels
// are as long as those for which the Add leaves the sums to a pass of their
// own.
// Their copy for AVX512-BF16 (bf16 only: f32 runs AVX-512's) runs where
// the CPU has it; the others are plain C++, so bf16 runs here on any CPU.
#include "core/layers/batch_norm_loops.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "core/engine.h"
#include "core/layers/relu_gradient_loops.h"
#include "core/primitive.h"
#include "tests/unit/layer_test_util.h"

namespace dptrain {
namespace {

using dnnl::memory;
using layer_test::channels_last;
using layer_test::distinct_values;
using layer_test::to_plain;
using tag = memory::format_tag;
using dt = memory::data_type;

struct Case {
  Simd simd;
  dt type;
  int64_t channels;
  bool relu;
  int threads;
};

double worst(const std::vector<double>& want, const std::vector<float>& got) {
  double w = 0;
  for (size_t i = 0; i < want.size(); ++i) w = std::max(w, std::abs(want[i] - got[i]));
  return w;
}

double largest(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

class BatchNormLoopsTest : public ::testing::TestWithParam<Case> {};

TEST_P(BatchNormLoopsTest, MatchTheFormulas) {
  const Case c = GetParam();
  const int64_t n = 2, ch = c.channels, h = 5, w = 7, pixels = n * h * w;
  const float eps = 1e-3f;
  const memory::dims dims{n, ch, h, w};
  // Values around 3, so that summing around the mean matters.
  std::vector<float> xv = distinct_values(static_cast<size_t>(n * ch * h * w), 5);
  for (float& v : xv) v = 3.f + 2.f * v;
  const memory xm = channels_last(xv, dims, c.type);
  const memory dym =
      channels_last(distinct_values(static_cast<size_t>(n * ch * h * w), 6), dims, c.type);
  const memory ym({dims, c.type, tag::nhwc}, cpu_engine());
  const memory dxm({dims, c.type, tag::nhwc}, cpu_engine());
  std::vector<float> gamma(static_cast<size_t>(ch)), beta(gamma.size());
  for (int64_t k = 0; k < ch; ++k) {
    gamma[static_cast<size_t>(k)] = 0.5f + static_cast<float>(k % 7) / 7.f;
    beta[static_cast<size_t>(k)] = static_cast<float>(k % 5) / 5.f - 0.4f;
  }

  const auto loops = BatchNormLoops::plan(xm.get_desc(), c.threads, c.simd);
  ASSERT_TRUE(loops.has_value());
  std::vector<float> mean(gamma.size()), var(gamma.size()), dgamma(gamma.size()),
      dbeta(gamma.size());
  loops->forward_training(xm.get_data_handle(), ym.get_data_handle(), gamma.data(), beta.data(),
                          eps, c.relu, mean.data(), var.data());
  loops->backward(xm.get_data_handle(), dym.get_data_handle(), dxm.get_data_handle(), gamma.data(),
                  beta.data(), mean.data(), var.data(), eps, c.relu, dgamma.data(), dbeta.data());

  // The reference reads the tensors back (bf16's rounding in both).
  const std::vector<float> x = to_plain(xm), dy = to_plain(dym), y = to_plain(ym),
                           dx = to_plain(dxm);
  auto at = [&](int64_t k, int64_t p) {
    return static_cast<size_t>(((p / (h * w)) * ch + k) * h * w + p % (h * w));
  };
  // Channel k's mean and biased variance.
  auto moments = [&](const std::vector<float>& values, int64_t k) {
    double s = 0, s2 = 0;
    for (int64_t p = 0; p < pixels; ++p) s += values[at(k, p)];
    const double m = s / static_cast<double>(pixels);
    for (int64_t p = 0; p < pixels; ++p) s2 += (values[at(k, p)] - m) * (values[at(k, p)] - m);
    return std::pair(m, s2 / static_cast<double>(pixels));
  };
  std::vector<double> want_mean(gamma.size()), want_var(gamma.size()), want_y(x.size()),
      want_dx(x.size()), want_dgamma(gamma.size()), want_dbeta(gamma.size());
  for (int64_t k = 0; k < ch; ++k) {
    const auto ki = static_cast<size_t>(k);
    const auto [m, v] = moments(x, k);
    const double inv_std = 1 / std::sqrt(v + eps);
    want_mean[ki] = m;
    want_var[ki] = v;
    std::vector<double> g(static_cast<size_t>(pixels));
    double sg = 0, sgx = 0;
    for (int64_t p = 0; p < pixels; ++p) {
      const double xhat = (x[at(k, p)] - m) * inv_std, pre = gamma[ki] * xhat + beta[ki];
      want_y[at(k, p)] = c.relu ? std::max(pre, 0.0) : pre;
      g[static_cast<size_t>(p)] = c.relu && pre <= 0 ? 0.0 : dy[at(k, p)];
      sg += g[static_cast<size_t>(p)];
      sgx += g[static_cast<size_t>(p)] * xhat;
    }
    want_dbeta[ki] = sg;
    want_dgamma[ki] = sgx;
    for (int64_t p = 0; p < pixels; ++p) {
      const double xhat = (x[at(k, p)] - m) * inv_std;
      want_dx[at(k, p)] =
          gamma[ki] * inv_std / static_cast<double>(pixels) *
          (static_cast<double>(pixels) * g[static_cast<size_t>(p)] - sg - xhat * sgx);
    }
  }
  const bool bf16 = c.type == dt::bf16;
  EXPECT_LT(worst(want_mean, mean), 1e-5 * largest(want_mean));
  EXPECT_LT(worst(want_var, var), 1e-5 * largest(want_var));
  // bf16 outputs are rounded to 8 significant bits.
  EXPECT_LT(worst(want_y, y), (bf16 ? 8e-3 : 1e-5) * largest(want_y));
  EXPECT_LT(worst(want_dbeta, dbeta), 1e-5 * largest(want_dbeta));
  EXPECT_LT(worst(want_dgamma, dgamma), 1e-4 * largest(want_dgamma));
  EXPECT_LT(worst(want_dx, dx), (bf16 ? 8e-3 : 1e-4) * largest(want_dx));

  // Evaluation with given statistics is the training output's formula.
  const memory em({dims, c.type, tag::nhwc}, cpu_engine());
  loops->forward_inference(xm.get_data_handle(), em.get_data_handle(), gamma.data(), beta.data(),
                           mean.data(), var.data(), eps, c.relu);
  EXPECT_EQ(to_plain(em), y);

  // Folded into a sum: without y, training finds the same statistics, and
  // add_normalized writes y + other (cut where not positive with relu).
  std::vector<float> mean2(gamma.size()), var2(gamma.size());
  loops->forward_training(xm.get_data_handle(), nullptr, gamma.data(), beta.data(), eps, c.relu,
                          mean2.data(), var2.data());
  EXPECT_EQ(mean2, mean);
  EXPECT_EQ(var2, var);
  const memory om =
      channels_last(distinct_values(static_cast<size_t>(n * ch * h * w), 7), dims, c.type);
  const memory sm({dims, c.type, tag::nhwc}, cpu_engine());
  loops->add_normalized(xm.get_data_handle(), om.get_data_handle(), sm.get_data_handle(), c.relu);
  const std::vector<float> other = to_plain(om), sum = to_plain(sm);
  std::vector<double> want_sum(x.size());
  for (int64_t k = 0; k < ch; ++k) {
    const auto ki = static_cast<size_t>(k);
    const double inv_std = 1 / std::sqrt(want_var[ki] + eps);
    for (int64_t p = 0; p < pixels; ++p) {
      const double v =
          gamma[ki] * (x[at(k, p)] - want_mean[ki]) * inv_std + beta[ki] + other[at(k, p)];
      want_sum[at(k, p)] = c.relu ? std::max(v, 0.0) : v;
    }
  }
  EXPECT_LT(worst(want_sum, sum), (bf16 ? 8e-3 : 1e-5) * largest(want_sum));

  // Both bottoms of the sum folded: other normalized by another BatchNorm
  // (its own scale and shift, no ReLU of its own).
  const auto other_loops = BatchNormLoops::plan(om.get_desc(), c.threads, c.simd);
  ASSERT_TRUE(other_loops.has_value());
  std::vector<float> gamma_o(gamma.rbegin(), gamma.rend()), beta_o(beta.rbegin(), beta.rend());
  std::vector<float> mean_o(gamma.size()), var_o(gamma.size());
  other_loops->forward_training(om.get_data_handle(), nullptr, gamma_o.data(), beta_o.data(), eps,
                                false, mean_o.data(), var_o.data());
  loops->add_normalized(xm.get_data_handle(), *other_loops, om.get_data_handle(),
                        sm.get_data_handle(), c.relu);
  const std::vector<float> both = to_plain(sm);
  std::vector<double> want_both(x.size());
  for (int64_t k = 0; k < ch; ++k) {
    const auto ki = static_cast<size_t>(k);
    const auto [mo, vo] = moments(other, k);
    const double inv_std = 1 / std::sqrt(want_var[ki] + eps);
    const double inv_std_o = 1 / std::sqrt(vo + eps);
    for (int64_t p = 0; p < pixels; ++p) {
      const double v = gamma[ki] * (x[at(k, p)] - want_mean[ki]) * inv_std + beta[ki] +
                       gamma_o[ki] * (other[at(k, p)] - mo) * inv_std_o + beta_o[ki];
      want_both[at(k, p)] = c.relu ? std::max(v, 0.0) : v;
    }
  }
  EXPECT_LT(worst(want_both, both), (bf16 ? 8e-3 : 1e-5) * largest(want_both));

  // The Add's gradient through its ReLU (with relu; else the plain sum)
  // with both BatchNorms' sums in its pass: the gradient exactly that of
  // the passes apart, the sums to 1e-6 and the input gradients to bf16's
  // rounding (the compiler may fuse a product into a sum in one pass and not
  // the other, which moves the last bits).
  const size_t count = static_cast<size_t>(n * ch * h * w);
  const memory branch = channels_last(distinct_values(count, 8), dims, c.type);
  const memory out = channels_last(distinct_values(count, 9), dims, c.type);
  const std::vector<const void*> others{branch.get_data_handle()};
  const void* cut = c.relu ? out.get_data_handle() : nullptr;
  const memory ones = channels_last(std::vector<float>(count, 1.f), dims, c.type);
  auto gradients = [&](bool fused) {
    const memory g = channels_last(to_plain(dym), dims, c.type);
    const memory dx_a({dims, c.type, tag::nhwc}, cpu_engine());
    const memory dx_b({dims, c.type, tag::nhwc}, cpu_engine());
    std::vector<float> sums(4 * gamma.size());
    float* d = sums.data();
    const size_t k = gamma.size();
    if (fused) {
      loops->take_gradient_sums(g.get_data_handle(), others[0], cut, xm.get_data_handle(),
                                mean.data(), &*other_loops, om.get_data_handle(), mean_o.data());
    } else {
      // Without the ReLU, a cut that cuts nothing.
      relu_gradient_sum(bf16, g.get_data_handle(), others, c.relu ? cut : ones.get_data_handle(),
                        static_cast<int64_t>(count), c.threads, c.simd);
    }
    loops->backward(xm.get_data_handle(), g.get_data_handle(), dx_a.get_data_handle(), gamma.data(),
                    beta.data(), mean.data(), var.data(), eps, false, d, d + k, fused);
    other_loops->backward(om.get_data_handle(), g.get_data_handle(), dx_b.get_data_handle(),
                          gamma_o.data(), beta_o.data(), mean_o.data(), var_o.data(), eps, false,
                          d + 2 * k, d + 3 * k, fused);
    return std::tuple(to_plain(g), to_plain(dx_a), to_plain(dx_b), sums);
  };
  const auto [g, dx_a, dx_b, sums] = gradients(true);
  const auto [g_apart, dx_a_apart, dx_b_apart, sums_apart] = gradients(false);
  EXPECT_EQ(g, g_apart);
  auto expect_close = [&](const std::vector<float>& got, const std::vector<float>& want,
                          double tolerance, const char* what) {
    const std::vector<double> wanted(want.begin(), want.end());
    EXPECT_LE(worst(wanted, got), tolerance * largest(wanted)) << what;
  };
  expect_close(sums, sums_apart, 1e-6, "sums");
  expect_close(dx_a, dx_a_apart, bf16 ? 8e-3 : 1e-6, "dx");
  expect_close(dx_b, dx_b_apart, bf16 ? 8e-3 : 1e-6, "second dx");
}

std::vector<Case> cases() {
  std::vector<Case> out;
  for (Simd simd : runnable_simds()) {
    for (dt type : {dt::f32, dt::bf16}) {
      if (simd == Simd::kAvx512Bf16 && type == dt::f32) continue;  // AVX-512's copy
      for (int64_t channels : {20, 40, 84, 1024}) {
        for (bool relu : {false, true}) {
          for (int threads : {1, 2}) out.push_back({simd, type, channels, relu, threads});
        }
      }
    }
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(, BatchNormLoopsTest, ::testing::ValuesIn(cases()),
                         [](const auto& param_info) {
                           const Case& c = param_info.param;
                           return std::string(simd_name(c.simd)) + "_" +
                                  (c.type == dt::bf16 ? "bf16" : "f32") + "_c" +
                                  std::to_string(c.channels) + (c.relu ? "_relu" : "") + "_t" +
                                  std::to_string(c.threads);
                         });

TEST(BatchNormLoopsPlanTest, ChannelsLastOnly) {
  EXPECT_TRUE(BatchNormLoops::plan({{2, 8, 3, 3}, dt::bf16, tag::nhwc}, 2).has_value());
  // AVX512-BF16 adds a conversion, which only bf16 makes.
  EXPECT_EQ(BatchNormLoops::plan({{2, 8, 3, 3}, dt::f32, tag::nhwc}, 2, Simd::kAvx512Bf16)->simd(),
            Simd::kAvx512);
  EXPECT_EQ(BatchNormLoops::plan({{2, 8, 3, 3}, dt::bf16, tag::nhwc}, 2, Simd::kAvx512Bf16)->simd(),
            Simd::kAvx512Bf16);
  EXPECT_FALSE(BatchNormLoops::plan({{2, 32, 3, 3}, dt::f32, tag::nChw16c}, 2).has_value());
  EXPECT_FALSE(BatchNormLoops::plan({{2, 8, 3, 3}, dt::f32, tag::nchw}, 2).has_value());
  EXPECT_FALSE(BatchNormLoops::plan({{2, 8}, dt::f32, tag::nc}, 2).has_value());
}

}  // namespace
}  // namespace dptrain
