// A convolution's weight gradient as a matmul over its input's patches
// (core/layers/matmul_weight_grad.h), against a plain sum over pixels:
// f32 on any CPU, bf16 where the CPU has it; 1x1 kernels read in place and
// strided, 3x3 ones padded, with and without a stride; delivered into a
// blocked gradient layout. Where the layouts are not channels-last there
// is no plan, and the convolution's own kernel stays; nor where the
// strided patches are no view oneDNN takes.
#include "core/layers/matmul_weight_grad.h"

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
  int64_t kernel, stride, pad;
};

class MatmulWeightGradTest : public ::testing::TestWithParam<Case> {};

TEST_P(MatmulWeightGradTest, MatchesASumOverPixels) {
  const auto [type, k, s, pad] = GetParam();
  if (type == dt::bf16 && !has_bf16()) {
    GTEST_SKIP() << "no bf16 kernels on this CPU (oneDNN runs " << effective_isa_name() << ")";
  }
  const int64_t n = 3, ic = 24, oc = 40, h = 6, w = 10;
  const int64_t oh = (h + 2 * pad - k) / s + 1, ow = (w + 2 * pad - k) / s + 1;
  const memory::dims in{n, ic, h, w}, out{n, oc, oh, ow};
  const memory src =
      channels_last(distinct_values(static_cast<size_t>(n * ic * h * w), 1), in, type);
  const memory dy =
      channels_last(distinct_values(static_cast<size_t>(n * oc * oh * ow), 2), out, type);
  const auto plan = MatmulWeightGrad::plan(src.get_desc(), dy.get_desc(), k, s, pad);
  ASSERT_TRUE(plan.has_value());

  NetState state;
  ParamStore store;
  SetupContext ctx(state, store, "conv");
  const memory grad({{oc, ic, k, k}, dt::f32, tag::OIhw16i16o}, cpu_engine());
  const MatmulWeightGrad wg(*plan, src, dy, grad, ctx);
  auto& pending = ctx.pending();
  for (auto& [from, view] : pending.views) view.set_data_handle(from.get_data_handle());
  std::vector<char> scratch(pending.scratchpad_bytes + 64);
  for (auto& m : pending.scratchpads) m.set_data_handle(scratch.data());
  wg.run();
  cpu_stream().wait();

  // The reference reads the tensors back, so bf16's rounding is in both.
  const std::vector<float> x = to_plain(src), g = to_plain(dy), got = to_plain(grad);
  double largest = 0, worst = 0;
  std::vector<double> want(static_cast<size_t>(oc * ic * k * k), 0.0);
  for (int64_t o = 0; o < oc; ++o) {
    for (int64_t i = 0; i < ic; ++i) {
      for (int64_t kh = 0; kh < k; ++kh) {
        for (int64_t kw = 0; kw < k; ++kw) {
          double sum = 0;
          for (int64_t b = 0; b < n; ++b) {
            for (int64_t y = 0; y < oh; ++y) {
              for (int64_t xx = 0; xx < ow; ++xx) {
                const int64_t r = y * s + kh - pad, q = xx * s + kw - pad;
                if (r < 0 || r >= h || q < 0 || q >= w) continue;
                sum +=
                    static_cast<double>(g[static_cast<size_t>(((b * oc + o) * oh + y) * ow + xx)]) *
                    x[static_cast<size_t>(((b * ic + i) * h + r) * w + q)];
              }
            }
          }
          want[static_cast<size_t>(((o * ic + i) * k + kh) * k + kw)] = sum;
          largest = std::max(largest, std::abs(sum));
        }
      }
    }
  }
  for (size_t j = 0; j < want.size(); ++j) worst = std::max(worst, std::abs(want[j] - got[j]));
  EXPECT_GT(largest, 0.1);
  EXPECT_LT(worst, 1e-5 * largest) << "largest " << largest;
}

std::vector<Case> cases() {
  std::vector<Case> out;
  for (dt type : {dt::f32, dt::bf16}) {
    for (Case c :
         {Case{type, 1, 1, 0}, Case{type, 1, 2, 0}, Case{type, 3, 1, 1}, Case{type, 3, 2, 1}}) {
      out.push_back(c);
    }
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(, MatmulWeightGradTest, ::testing::ValuesIn(cases()),
                         [](const auto& param_info) {
                           const Case& c = param_info.param;
                           return std::string(c.type == dt::bf16 ? "bf16" : "f32") + "_k" +
                                  std::to_string(c.kernel) + "_stride" + std::to_string(c.stride) +
                                  "_pad" + std::to_string(c.pad);
                         });

TEST(MatmulWeightGradPlanTest, NoneUnlessChannelsLast) {
  const memory::desc blocked({2, 32, 5, 5}, dt::f32, tag::nChw16c);
  const memory::desc plain({2, 16, 5, 5}, dt::f32, tag::nchw);
  const memory::desc nhwc_in({2, 32, 5, 5}, dt::f32, tag::nhwc);
  const memory::desc nhwc_out({2, 16, 5, 5}, dt::f32, tag::nhwc);
  EXPECT_FALSE(MatmulWeightGrad::plan(blocked, nhwc_out, 1, 1, 0).has_value());
  EXPECT_FALSE(MatmulWeightGrad::plan(nhwc_in, plain, 1, 1, 0).has_value());
  EXPECT_TRUE(MatmulWeightGrad::plan(nhwc_in, nhwc_out, 1, 1, 0).has_value());
  // 5x5 by stride 2 reads rows 0, 2 and 4: not a strided view oneDNN
  // takes; padded by 1, rows 0, 2 and 4 of 7, it is.
  const memory::desc nhwc_half({2, 16, 3, 3}, dt::f32, tag::nhwc);
  EXPECT_FALSE(MatmulWeightGrad::plan(nhwc_in, nhwc_half, 1, 2, 0).has_value());
  EXPECT_TRUE(MatmulWeightGrad::plan(nhwc_in, nhwc_half, 3, 2, 1).has_value());
}

}  // namespace
}  // namespace dptrain
