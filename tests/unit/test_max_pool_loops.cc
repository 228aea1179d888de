// The max pooling loops (core/layers/max_pool_loops.h) in every layout they
// read and both data types, against a plain reference: forward values
// exactly, and backward routing each gradient to the first maximum of its
// window. The loops are plain C++, so bf16 runs here on any CPU.
#include "core/layers/max_pool_loops.h"

#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/engine.h"
#include "core/primitive.h"

namespace dptrain {
namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

struct Geometry {
  std::string name;
  int64_t h, w, k, s, pad;
};

struct Case {
  tag layout;
  dt type;
  Geometry g;
  Simd simd;
  int64_t channels;
};

// 20: the last block of 16 or 8 is padded, and in nhwc the loops take 16
// lanes and then 4 one at a time; 40: in nhwc, f32 takes two vectors of 16
// and bf16 one of 32 (on AVX-512), then 8 lanes one at a time.
constexpr int64_t kN = 2, kC = 20, kWideC = 40;

memory plain(const memory::dims& d, std::vector<float>& values) {
  return memory({d, dt::f32, tag::nchw}, cpu_engine(), values.data());
}

void copy(const memory& from, const memory& to) {
  make_reorder(from, to).run();
  cpu_stream().wait();
}

// Integers below 256 are exact in bf16; the pattern repeats, so windows
// hold equal values too.
std::vector<float> values(int64_t count, int64_t mul) {
  std::vector<float> v(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) v[static_cast<size_t>(i)] = float((i * mul) % 97 - 48);
  return v;
}

class MaxPoolLoopsTest : public ::testing::TestWithParam<Case> {};

TEST_P(MaxPoolLoopsTest, ForwardAndBackwardMatchThePlainReference) {
  const Case& c = GetParam();
  const Geometry& g = c.g;
  const int64_t channels = c.channels;
  const memory::desc src_desc({kN, channels, g.h, g.w}, c.type, c.layout);
  const auto loops = MaxPoolLoops::plan(src_desc, g.k, g.s, g.pad, c.simd);
  ASSERT_TRUE(loops.has_value());
  const int64_t oh = (g.h + 2 * g.pad - g.k) / g.s + 1, ow = (g.w + 2 * g.pad - g.k) / g.s + 1;
  ASSERT_EQ(loops->dst.dims(), (memory::dims{kN, channels, oh, ow}));

  std::vector<float> x = values(kN * channels * g.h * g.w, 31),
                     dy = values(kN * channels * oh * ow, 7);
  // The reference: each window's first maximum, and its gradient routed there.
  std::vector<float> want_y(dy.size()), want_dx(x.size(), 0.f);
  for (int64_t p = 0; p < kN * channels; ++p) {
    for (int64_t r = 0; r < oh; ++r) {
      for (int64_t q = 0; q < ow; ++q) {
        float best = -std::numeric_limits<float>::infinity();
        int64_t at = -1;
        for (int64_t i = 0; i < g.k; ++i) {
          for (int64_t j = 0; j < g.k; ++j) {
            const int64_t hh = r * g.s - g.pad + i, ww = q * g.s - g.pad + j;
            if (hh < 0 || hh >= g.h || ww < 0 || ww >= g.w) continue;
            const int64_t idx = (p * g.h + hh) * g.w + ww;
            if (x[static_cast<size_t>(idx)] > best) best = x[static_cast<size_t>(idx)], at = idx;
          }
        }
        const auto o = static_cast<size_t>((p * oh + r) * ow + q);
        want_y[o] = best;
        want_dx[static_cast<size_t>(at)] = dy[o];
      }
    }
  }

  memory src(src_desc, cpu_engine()), dst(loops->dst, cpu_engine());
  memory diff_dst(loops->dst, cpu_engine()), diff_src(src_desc, cpu_engine());
  copy(plain(src_desc.dims(), x), src);
  copy(plain(loops->dst.dims(), dy), diff_dst);
  std::memset(diff_src.get_data_handle(), 0x5a, src_desc.get_size());  // stale bytes
  std::vector<uint8_t> where(loops->where_size());
  loops->forward(src.get_data_handle(), dst.get_data_handle(), where.data());
  loops->backward(diff_dst.get_data_handle(), where.data(), diff_src.get_data_handle());
  std::vector<float> y(want_y.size()), dx(want_dx.size());
  copy(dst, plain(loops->dst.dims(), y));
  copy(diff_src, plain(src_desc.dims(), dx));
  EXPECT_EQ(y, want_y);
  EXPECT_EQ(dx, want_dx);
}

std::vector<Case> cases() {
  const std::vector<Geometry> geometries = {
      {"covered", 6, 6, 2, 2, 0}, {"last_row_and_column_left_out", 7, 7, 2, 2, 0},
      {"gaps", 7, 8, 2, 3, 0},    {"padded", 5, 5, 2, 2, 1},
      {"kernel3", 6, 9, 3, 3, 0},
  };
  std::vector<Case> all;
  // Every instruction set this CPU runs; the baseline runs everywhere.
  for (Simd simd : runnable_simds()) {
    if (simd == Simd::kAvx512Bf16) continue;  // planned as AVX-512 (nothing to convert)
    for (tag t : {tag::nChw16c, tag::nChw8c, tag::nhwc}) {
      for (dt type : {dt::f32, dt::bf16}) {
        for (const Geometry& g : geometries) {
          all.push_back({t, type, g, simd, kC});
          if (t == tag::nhwc) all.push_back({t, type, g, simd, kWideC});
        }
      }
    }
  }
  return all;
}

INSTANTIATE_TEST_SUITE_P(Layouts, MaxPoolLoopsTest, ::testing::ValuesIn(cases()),
                         [](const auto& tp) {
                           const Case& c = tp.param;
                           const std::string layout = c.layout == tag::nChw16c  ? "nChw16c"
                                                      : c.layout == tag::nChw8c ? "nChw8c"
                                                                                : "nhwc";
                           return std::string(simd_name(c.simd)) + "_" + layout +
                                  (c.type == dt::bf16 ? "_bf16_" : "_f32_") + c.g.name + "_c" +
                                  std::to_string(c.channels);
                         });

TEST(MaxPoolLoopsPlan, LeavesOverlappingWindowsAndOtherLayoutsToOneDnn) {
  const memory::desc blocked({kN, kC, 8, 8}, dt::f32, tag::nChw16c);
  EXPECT_TRUE(MaxPoolLoops::plan(blocked, 2, 2, 0).has_value());
  EXPECT_FALSE(MaxPoolLoops::plan(blocked, 3, 2, 1).has_value());
  EXPECT_FALSE(MaxPoolLoops::plan({{kN, kC, 8, 8}, dt::f32, tag::nchw}, 2, 2, 0).has_value());
}

// Pooling converts nothing: AVX512-BF16's copy would be AVX-512's, so the
// plan (and the layer's description) says AVX-512.
TEST(MaxPoolLoopsPlan, RunsTheAvx512CopyForAvx512Bf16) {
  const memory::desc bf16({kN, kC, 8, 8}, dt::bf16, tag::nhwc);
  EXPECT_EQ(MaxPoolLoops::plan(bf16, 2, 2, 0, Simd::kAvx512Bf16)->simd, Simd::kAvx512);
}

}  // namespace
}  // namespace dptrain
