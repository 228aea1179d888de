// A 1x1 convolution's weight gradient as a matmul
// (core/layers/pointwise_weight_grad.h), against a plain sum over pixels:
// f32 on any CPU, bf16 where the CPU has it, strides 1 and 2, delivered
// into a blocked gradient layout. Where the layouts are not channels-last
// there is no plan, and the convolution's own kernel stays; nor where
// the stride does not divide the input.
#include "core/layers/pointwise_weight_grad.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/engine.h"
#include "core/param_store.h"
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
  dt type;
  int64_t stride;
};

class PointwiseWeightGradTest : public ::testing::TestWithParam<Case> {};

TEST_P(PointwiseWeightGradTest, MatchesASumOverPixels) {
  const auto [type, s] = GetParam();
  if (type == dt::bf16 && !has_bf16()) {
    GTEST_SKIP() << "no bf16 kernels on this CPU (oneDNN runs " << effective_isa_name() << ")";
  }
  const int64_t n = 3, ic = 24, oc = 40, h = 6, w = 10;
  const int64_t oh = (h - 1) / s + 1, ow = (w - 1) / s + 1;
  const memory::dims in{n, ic, h, w}, out{n, oc, oh, ow};
  const memory src =
      channels_last(distinct_values(static_cast<size_t>(n * ic * h * w), 1), in, type);
  const memory dy =
      channels_last(distinct_values(static_cast<size_t>(n * oc * oh * ow), 2), out, type);
  const auto plan = PointwiseWeightGrad::plan(src.get_desc(), dy.get_desc(), s);
  ASSERT_TRUE(plan.has_value());

  NetState state;
  ParamStore store;
  SetupContext ctx(state, store, "conv");
  const memory grad({{oc, ic, 1, 1}, dt::f32, tag::OIhw16i16o}, cpu_engine());
  const PointwiseWeightGrad wg(*plan, src, dy, grad, ctx);
  auto& pending = ctx.pending();
  for (auto& [from, view] : pending.views) view.set_data_handle(from.get_data_handle());
  std::vector<char> scratch(pending.scratchpad_bytes + 64);
  for (auto& m : pending.scratchpads) m.set_data_handle(scratch.data());
  wg.run();
  cpu_stream().wait();

  // The reference reads the tensors back, so bf16's rounding is in both.
  const std::vector<float> x = to_plain(src), g = to_plain(dy), got = to_plain(grad);
  double largest = 0, worst = 0;
  std::vector<double> want(static_cast<size_t>(oc * ic), 0.0);
  for (int64_t o = 0; o < oc; ++o) {
    for (int64_t i = 0; i < ic; ++i) {
      double sum = 0;
      for (int64_t b = 0; b < n; ++b) {
        for (int64_t y = 0; y < oh; ++y) {
          for (int64_t xx = 0; xx < ow; ++xx) {
            sum += static_cast<double>(g[static_cast<size_t>(((b * oc + o) * oh + y) * ow + xx)]) *
                   x[static_cast<size_t>(((b * ic + i) * h + y * s) * w + xx * s)];
          }
        }
      }
      want[static_cast<size_t>(o * ic + i)] = sum;
      largest = std::max(largest, std::abs(sum));
    }
  }
  for (size_t j = 0; j < want.size(); ++j) worst = std::max(worst, std::abs(want[j] - got[j]));
  EXPECT_GT(largest, 0.1);
  EXPECT_LT(worst, 1e-5 * largest) << "largest " << largest;
}

INSTANTIATE_TEST_SUITE_P(, PointwiseWeightGradTest,
                         ::testing::Values(Case{dt::f32, 1}, Case{dt::f32, 2}, Case{dt::bf16, 1},
                                           Case{dt::bf16, 2}),
                         [](const auto& param_info) {
                           return std::string(param_info.param.type == dt::bf16 ? "bf16" : "f32") +
                                  "_stride" + std::to_string(param_info.param.stride);
                         });

TEST(PointwiseWeightGradPlanTest, NoneUnlessChannelsLast) {
  const memory::desc blocked({2, 32, 5, 5}, dt::f32, tag::nChw16c);
  const memory::desc plain({2, 16, 5, 5}, dt::f32, tag::nchw);
  const memory::desc nhwc_in({2, 32, 5, 5}, dt::f32, tag::nhwc);
  const memory::desc nhwc_out({2, 16, 5, 5}, dt::f32, tag::nhwc);
  EXPECT_FALSE(PointwiseWeightGrad::plan(blocked, nhwc_out, 1).has_value());
  EXPECT_FALSE(PointwiseWeightGrad::plan(nhwc_in, plain, 1).has_value());
  EXPECT_TRUE(PointwiseWeightGrad::plan(nhwc_in, nhwc_out, 1).has_value());
  // 5x5 by stride 2 reads rows 0, 2 and 4: not a strided view oneDNN takes.
  const memory::desc nhwc_half({2, 16, 3, 3}, dt::f32, tag::nhwc);
  EXPECT_FALSE(PointwiseWeightGrad::plan(nhwc_in, nhwc_half, 2).has_value());
}

}  // namespace
}  // namespace dptrain
