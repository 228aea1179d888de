#include "core/layers/max_pool_loops.h"

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "core/primitive.h"

#include "core/layers/simd.h"

// Vectors pass between inlined functions only (simd.h).
#pragma GCC diagnostic ignored "-Wpsabi"

namespace dptrain {
namespace {

// A lane's bits: float itself (compared as floats), bf16 as int16 (compared
// as keys that order as the values do).
template <class T>
using Lane = std::conditional_t<sizeof(T) == 4, float, int16_t>;
template <class T>
using LaneBits = std::conditional_t<sizeof(T) == 4, int32_t, int16_t>;

// W bytes widened to the lanes of V, through 16 bits: GCC 12 turns the
// widening from bytes to 32 bits in one step into a byte at a time.
template <class V, int W>
[[gnu::always_inline]] inline V widen(const uint8_t* p) {
  const auto h = __builtin_convertvector(load<typename VecOf<uint8_t, W>::type>(p),
                                         typename VecOf<uint16_t, W>::type);
  return __builtin_convertvector(h, V);
}

// Keys that order as the values do, of one lane or a vector of them: a
// float itself; for bf16 the bits as a signed integer with a negative's
// magnitude bits flipped, so that the comparison stays in 16-bit lanes.
template <class E, class V>
[[gnu::always_inline]] inline V keys(const V& v) {
  if constexpr (std::is_same_v<E, float>) {
    return v;
  } else {
    return static_cast<V>(v ^ ((v >> 15) & 0x7fff));
  }
}

// Output c of row r of sample n's block b: where it goes, and where its
// window lies in the input.
struct Window {
  int64_t out;                 // the output's offset
  int64_t in;                  // the offset of the window's place (0, 0), perhaps in the padding
  int64_t hlo, hhi, wlo, whi;  // its rows and columns inside the input
  int64_t row, column;         // the input's offsets from one row, or column, to the next
  int64_t k;
  // The offset of place (i, j), and its number.
  int64_t at(int64_t i, int64_t j) const { return in + i * row + j * column; }
  int64_t place(int64_t i, int64_t j) const { return i * k + j; }
};
// K: the kernel when it is known at compile time and every window lies
// whole inside the input (no padding), else 0; then the loops over a
// window unroll.
template <int K>
[[gnu::always_inline]] inline Window window_of(const MaxPoolLoops& p, int64_t n, int64_t b,
                                               int64_t r, int64_t c) {
  Window w;
  int64_t h0, w0;
  p.window(r, p.ih, h0, w.hlo, w.hhi);
  p.window(c, p.iw, w0, w.wlo, w.whi);
  w.out = p.out.at(n, b, r * p.ow + c);
  w.row = p.iw * p.in.block, w.column = p.in.block, w.k = p.k;
  w.in = p.in.at(n, b, 0) + h0 * w.row + w0 * w.column;
  if constexpr (K > 0) w.hlo = w.wlo = 0, w.hhi = w.whi = w.k = K;
  return w;
}

// One output row (n, block b, row r): each output's window, W lanes at a
// time, then any lanes left one at a time.
template <class T, int W, int K>
[[gnu::always_inline]] inline void forward_row(const MaxPoolLoops& p, const void* xv, void* yv,
                                               uint8_t* where, int64_t n, int64_t b, int64_t r) {
  using E = Lane<T>;
  using V = typename VecOf<E, W>::type;
  using M = typename VecOf<LaneBits<T>, W>::type;
  using B = typename VecOf<uint8_t, W>::type;
  const E* x = static_cast<const E*>(xv);
  E* y = static_cast<E*>(yv);
  const int64_t lanes = p.in.block;
  for (int64_t c = 0; c < p.ow; ++c) {
    const Window w = window_of<K>(p, n, b, r, c);
    const E* first = x + w.at(w.hlo, w.wlo);
    const auto first_place = static_cast<LaneBits<T>>(w.place(w.hlo, w.wlo));
    int64_t l = 0;
    for (; l + W <= lanes; l += W) {
      V best = load<V>(first + l);
      M from = M{} + first_place;
      for (int64_t i = w.hlo; i < w.hhi; ++i) {
        for (int64_t j = i == w.hlo ? w.wlo + 1 : w.wlo; j < w.whi; ++j) {
          const V v = load<V>(x + w.at(i, j) + l);
          const M larger = keys<E>(v) > keys<E>(best);
          best = larger ? v : best;
          from = larger ? M{} + static_cast<LaneBits<T>>(w.place(i, j)) : from;
        }
      }
      store(y + w.out + l, best);
      store(where + w.out + l, __builtin_convertvector(from, B));
    }
    for (; l < lanes; ++l) {
      E best = first[l];
      auto from = static_cast<uint8_t>(first_place);
      for (int64_t i = w.hlo; i < w.hhi; ++i) {
        for (int64_t j = i == w.hlo ? w.wlo + 1 : w.wlo; j < w.whi; ++j) {
          const E v = x[w.at(i, j) + l];
          if (keys<E>(v) > keys<E>(best)) best = v, from = static_cast<uint8_t>(w.place(i, j));
        }
      }
      y[w.out + l] = best;
      where[w.out + l] = from;
    }
  }
}

template <class T, int W, int K>
[[gnu::always_inline]] inline void backward_row(const MaxPoolLoops& p, const void* dyv,
                                                const uint8_t* where, void* dxv, int64_t n,
                                                int64_t b, int64_t r) {
  using E = LaneBits<T>;
  using V = typename VecOf<E, W>::type;
  const E* dy = static_cast<const E*>(dyv);
  E* dx = static_cast<E*>(dxv);
  const int64_t lanes = p.in.block;
  for (int64_t c = 0; c < p.ow; ++c) {
    const Window w = window_of<K>(p, n, b, r, c);
    int64_t l = 0;
    for (; l + W <= lanes; l += W) {
      const V g = load<V>(dy + w.out + l);
      const V from = widen<V, W>(where + w.out + l);
      for (int64_t i = w.hlo; i < w.hhi; ++i) {
        for (int64_t j = w.wlo; j < w.whi; ++j) {
          store(dx + w.at(i, j) + l, g & (from == static_cast<E>(w.place(i, j))));
        }
      }
    }
    for (; l < lanes; ++l) {
      for (int64_t i = w.hlo; i < w.hhi; ++i) {
        for (int64_t j = w.wlo; j < w.whi; ++j) {
          dx[w.at(i, j) + l] = where[w.out + l] == w.place(i, j) ? dy[w.out + l] : E{0};
        }
      }
    }
  }
}

using ForwardRow = void (*)(const MaxPoolLoops&, const void*, void*, uint8_t*, int64_t, int64_t,
                            int64_t);
using BackwardRow = void (*)(const MaxPoolLoops&, const void*, const uint8_t*, void*, int64_t,
                             int64_t, int64_t);

// The rows compiled for each instruction set: the same code, inlined into
// functions of each target.
#define DPTRAIN_POOL_ROWS(suffix, target)                                                     \
  template <class T, int W, int K>                                                            \
  target void forward_##suffix(const MaxPoolLoops& p, const void* x, void* y, uint8_t* where, \
                               int64_t n, int64_t b, int64_t r) {                             \
    forward_row<T, W, K>(p, x, y, where, n, b, r);                                            \
  }                                                                                           \
  template <class T, int W, int K>                                                            \
  target void backward_##suffix(const MaxPoolLoops& p, const void* dy, const uint8_t* where,  \
                                void* dx, int64_t n, int64_t b, int64_t r) {                  \
    backward_row<T, W, K>(p, dy, where, dx, n, b, r);                                         \
  }
DPTRAIN_POOL_ROWS(avx512, DPTRAIN_TARGET_AVX512)
DPTRAIN_POOL_ROWS(avx2, DPTRAIN_TARGET_AVX2)
DPTRAIN_POOL_ROWS(baseline, )
#undef DPTRAIN_POOL_ROWS

struct Rows {
  ForwardRow forward;
  BackwardRow backward;
};

template <class T, int W, int K>
Rows rows_for(Simd simd) {
  switch (simd) {
    case Simd::kAvx512Bf16:  // planned as kAvx512
    case Simd::kAvx512:
      return {forward_avx512<T, W, K>, backward_avx512<T, W, K>};
    case Simd::kAvx2:
      return {forward_avx2<T, W, K>, backward_avx2<T, W, K>};
    case Simd::kBaseline:
      break;
  }
  return {forward_baseline<T, W, K>, backward_baseline<T, W, K>};
}

// 2 x 2 windows without padding, the common case, unrolled.
template <class T, int W>
Rows rows_for(const MaxPoolLoops& p) {
  return p.k == 2 && p.pad == 0 ? rows_for<T, W, 2>(p.simd) : rows_for<T, W, 0>(p.simd);
}

// A register's lanes a vector (fewer where a pixel's run is shorter, as
// AVX2's nChw8c is on AVX-512): wider vectors than the registers are split
// into many instructions, narrower ones leave lanes idle.
template <class T>
Rows rows_of(const MaxPoolLoops& p) {
  const int64_t bytes = simd_bytes(p.simd);
  const int64_t lanes = std::min<int64_t>(bytes / sizeof(T), std::max<int64_t>(p.in.block, 4));
  constexpr int kMost = 64 / sizeof(T);
  if (lanes >= kMost) return rows_for<T, kMost>(p);
  if (lanes >= kMost / 2) return rows_for<T, kMost / 2>(p);
  return rows_for<T, kMost / 4>(p);
}

Rows rows(const MaxPoolLoops& p) { return p.bf16() ? rows_of<uint16_t>(p) : rows_of<float>(p); }

}  // namespace

std::optional<MaxPoolLoops> MaxPoolLoops::plan(const dnnl::memory::desc& src, int64_t k, int64_t s,
                                               int64_t pad, Simd simd) {
  const dnnl::memory::format_tag tag = channel_loop_tag(src);
  if (tag == dnnl::memory::format_tag::undef || s < k || k * k > 256) return std::nullopt;
  const dnnl::memory::dims d = src.dims();
  MaxPoolLoops p;
  p.in = channel_blocks(src);
  p.ih = d[2], p.iw = d[3], p.k = k, p.s = s, p.pad = pad;
  p.oh = (d[2] + 2 * pad - k) / s + 1, p.ow = (d[3] + 2 * pad - k) / s + 1;
  p.out = p.in;
  p.out.pixels = p.oh * p.ow;
  p.covers_input = s == k && pad == 0 && p.oh * k == p.ih && p.ow * k == p.iw;
  p.dst = dnnl::memory::desc({d[0], d[1], p.oh, p.ow}, src.data_type(), tag);
  // Max pooling converts nothing, so AVX512-BF16 adds nothing to AVX-512.
  p.simd = simd == Simd::kAvx512Bf16 ? Simd::kAvx512 : simd;
  return p;
}

void MaxPoolLoops::forward(const void* x, void* y, uint8_t* where) const {
  KernelTimer timer;
  const ForwardRow row = rows(*this).forward;
#pragma omp parallel for collapse(3) schedule(static)
  for (int64_t n = 0; n < in.samples; ++n) {
    for (int64_t b = 0; b < in.blocks; ++b) {
      for (int64_t r = 0; r < oh; ++r) row(*this, x, y, where, n, b, r);
    }
  }
}

void MaxPoolLoops::backward(const void* dy, const uint8_t* where, void* dx) const {
  KernelTimer timer;
  if (!covers_input) {
    std::memset(dx, 0, static_cast<size_t>(in.elements()) * (bf16() ? 2 : 4));
  }
  const BackwardRow row = rows(*this).backward;
#pragma omp parallel for collapse(3) schedule(static)
  for (int64_t n = 0; n < in.samples; ++n) {
    for (int64_t b = 0; b < in.blocks; ++b) {
      for (int64_t r = 0; r < oh; ++r) row(*this, dy, where, dx, n, b, r);
    }
  }
}

}  // namespace dptrain
