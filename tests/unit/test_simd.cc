// The bf16 that AVX512-BF16's conversion writes (Lanes<NativeBf16, L>) is
// the bf16 our shifts and adds write (Lanes<uint16_t, L>) for every float
// but a subnormal, which it writes as a zero of the same sign; a NaN stays
// a NaN. Checked at every width put takes (the loops use 16 and 1), over
// floats spread across every exponent and the edges of rounding.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/layers/simd.h"

#pragma GCC diagnostic ignored "-Wpsabi"

namespace dptrain {
namespace {

// Each float of `in` written by the conversion, L at a time, the last
// first: a write past its L lanes would land on values already checked.
template <int L>
DPTRAIN_TARGET_AVX512BF16 std::vector<uint16_t> native(const std::vector<float>& in) {
  std::vector<NativeBf16> out(in.size());
  for (size_t i = in.size(); i >= L;) {
    i -= L;
    Lanes<NativeBf16, L>::put(out.data() + i, load<typename Lanes<NativeBf16, L>::F>(&in[i]));
  }
  std::vector<uint16_t> bits(out.size());
  std::memcpy(bits.data(), out.data(), bits.size() * sizeof(uint16_t));
  return bits;
}

std::vector<float> floats() {
  std::vector<uint32_t> u;
  // A stride prime to 2^16 visits every low half's rounding case somewhere.
  for (uint64_t b = 0; b < (uint64_t{1} << 32); b += 4093) u.push_back(static_cast<uint32_t>(b));
  for (uint32_t hi : {0x0000u, 0x3f80u, 0x7f7fu, 0x7f80u, 0x7fc0u, 0x8000u, 0xff80u}) {
    for (uint32_t lo : {0x0000u, 0x0001u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu}) {
      u.push_back(hi << 16 | lo);
    }
  }
  while (u.size() % 16) u.push_back(0);
  std::vector<float> f(u.size());
  std::memcpy(f.data(), u.data(), u.size() * sizeof(float));
  return f;
}

class NativeBf16Test : public ::testing::TestWithParam<int> {};

TEST_P(NativeBf16Test, RoundsAsTheShiftsDoButReadsSubnormalsAsZero) {
  if (best_simd() != Simd::kAvx512Bf16) {
    GTEST_SKIP() << "no AVX512-BF16 on this CPU (its loops run " << simd_name(best_simd()) << ")";
  }
  const std::vector<float> in = floats();
  const int width = GetParam();
  const std::vector<uint16_t> got = width == 16  ? native<16>(in)
                                    : width == 8 ? native<8>(in)
                                    : width == 4 ? native<4>(in)
                                                 : native<1>(in);
  int subnormals = 0, nans = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    uint32_t u;
    std::memcpy(&u, &in[i], sizeof u);
    uint16_t want;
    Lanes<uint16_t, 1>::put(&want, in[i]);
    if ((u & 0x7f800000u) == 0 && (u & 0x007fffffu) != 0) {
      ++subnormals;
      want = static_cast<uint16_t>((u >> 16) & 0x8000u);
    }
    if ((u & 0x7fffffffu) > 0x7f800000u) ++nans;
    ASSERT_EQ(got[i], want) << "float bits " << std::hex << u;
  }
  EXPECT_GT(subnormals, 1000);
  EXPECT_GT(nans, 1000);
}

INSTANTIATE_TEST_SUITE_P(Widths, NativeBf16Test, ::testing::Values(1, 4, 8, 16),
                         [](const auto& p) { return "l" + std::to_string(p.param); });

}  // namespace
}  // namespace dptrain
