// The fused gradient of a ReLU whose output several layers read
// (core/layers/relu_gradient_loops.h) against the sum and cut in double,
// rounded once: f32 and bf16, none to two other branches, lengths with
// lanes over after the vectors and runs split between threads, under
// every instruction set the CPU has.
#include "core/layers/relu_gradient_loops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

namespace dptrain {
namespace {

uint16_t to_bf16(float f) {  // round to nearest even
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

float from_bf16(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Values of both signs whose sums need rounding in either type, and some
// zeros (a ReLU output of exactly 0 cuts the gradient).
std::vector<float> values(int64_t count, int seed) {
  std::vector<float> v(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    const int64_t k = (i * 7919 + seed * 104729) % 1009;
    v[static_cast<size_t>(i)] = k % 13 == 0 ? 0.f : (static_cast<float>(k) - 504.f) / 37.f;
  }
  return v;
}

struct Case {
  Simd simd;
  bool bf16;
  int others;
  int64_t count;
  int threads;
};

class ReluGradientLoopsTest : public ::testing::TestWithParam<Case> {};

TEST_P(ReluGradientLoopsTest, SumsTheBranchesAndCutsWhereTheOutputIsNotPositive) {
  const Case c = GetParam();
  const size_t n = static_cast<size_t>(c.count);
  std::vector<std::vector<float>> in;
  for (int b = 0; b <= c.others; ++b) in.push_back(values(c.count, b + 1));
  const std::vector<float> y = values(c.count, 9);
  std::vector<float> want(n);
  for (size_t i = 0; i < n; ++i) {
    double sum = 0;
    for (const auto& v : in) sum += c.bf16 ? from_bf16(to_bf16(v[i])) : v[i];
    const float yi = c.bf16 ? from_bf16(to_bf16(y[i])) : y[i];
    want[i] = yi > 0 ? static_cast<float>(sum) : 0.f;
  }

  std::vector<float> got(n);
  if (c.bf16) {
    std::vector<std::vector<uint16_t>> b16;
    for (const auto& v : in) {
      b16.emplace_back(n);
      for (size_t i = 0; i < n; ++i) b16.back()[i] = to_bf16(v[i]);
    }
    std::vector<uint16_t> y16(n);
    for (size_t i = 0; i < n; ++i) y16[i] = to_bf16(y[i]);
    std::vector<const void*> others;
    for (size_t b = 1; b < b16.size(); ++b) others.push_back(b16[b].data());
    relu_gradient_sum(true, b16[0].data(), others, y16.data(), c.count, c.threads, c.simd);
    for (size_t i = 0; i < n; ++i) {
      got[i] = from_bf16(b16[0][i]);
      // The float sum of at most three bf16 values is exact here, so one
      // rounding gives what rounding the exact sum does.
      want[i] = from_bf16(to_bf16(want[i]));
    }
  } else {
    std::vector<const void*> others;
    for (size_t b = 1; b < in.size(); ++b) others.push_back(in[b].data());
    got = in[0];
    relu_gradient_sum(false, got.data(), others, y.data(), c.count, c.threads, c.simd);
  }
  for (size_t i = 0; i < n; ++i) {
    // f32: the float sum differs from the double one by its roundings.
    ASSERT_NEAR(got[i], want[i], c.bf16 ? 0.f : 1e-5f * (1.f + std::abs(want[i]))) << "at " << i;
  }
}

std::vector<Case> cases() {
  std::vector<Case> out;
  for (Simd simd : runnable_simds()) {
    for (bool bf16 : {false, true}) {
      if (simd == Simd::kAvx512Bf16 && !bf16) continue;  // f32 runs AVX-512's copy
      for (int others : {0, 1, 2}) {
        for (int64_t count : {int64_t{1}, int64_t{37}, int64_t{20003}}) {
          for (int threads : {1, 2}) out.push_back({simd, bf16, others, count, threads});
        }
      }
    }
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(, ReluGradientLoopsTest, ::testing::ValuesIn(cases()),
                         [](const auto& param_info) {
                           const Case& c = param_info.param;
                           return std::string(simd_name(c.simd)) + (c.bf16 ? "_bf16" : "_f32") +
                                  "_others" + std::to_string(c.others) + "_n" +
                                  std::to_string(c.count) + "_t" + std::to_string(c.threads);
                         });

}  // namespace
}  // namespace dptrain
