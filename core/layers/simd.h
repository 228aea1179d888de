// What the loops of our own (max pooling, batch normalization, the ReLU
// gradient of a residual block) share: the instruction sets they are
// compiled for, the one this CPU runs best, GCC vector extensions a
// register's width of lanes at a time, and those lanes read from and
// written to f32 or bf16. The build
// targets the x86-64 baseline; each loop is inlined into functions
// compiled for AVX-512, AVX2 and the baseline alike (GCC's target
// attribute), and the loops that write bf16 into one for AVX-512 with
// AVX512-BF16's conversion too; the CPU picks one at run time.
//
// Vectors pass only between functions inlined into one another, so the ABI
// GCC warns of (wide vectors returned by baseline code) never applies: a
// file that uses them silences -Wpsabi.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

namespace dptrain {

// A CPU that runs one of these runs every one before it.
enum class Simd { kBaseline, kAvx2, kAvx512, kAvx512Bf16 };

// The best this CPU runs.
inline Simd best_simd() {
  static const Simd best = [] {
    if (__builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) {
      return __builtin_cpu_supports("avx512bf16") ? Simd::kAvx512Bf16 : Simd::kAvx512;
    }
    return __builtin_cpu_supports("avx2") ? Simd::kAvx2 : Simd::kBaseline;
  }();
  return best;
}

// Every instruction set this CPU runs, the baseline first: each copy of a
// loop that can be tested here.
inline std::vector<Simd> runnable_simds() {
  std::vector<Simd> simds = {Simd::kBaseline};
  if (best_simd() != Simd::kBaseline) simds.push_back(Simd::kAvx2);
  if (best_simd() >= Simd::kAvx512) simds.push_back(Simd::kAvx512);
  if (best_simd() == Simd::kAvx512Bf16) simds.push_back(Simd::kAvx512Bf16);
  return simds;
}

inline const char* simd_name(Simd simd) {
  switch (simd) {
    case Simd::kAvx512Bf16:
      return "avx512bf16";
    case Simd::kAvx512:
      return "avx512";
    case Simd::kAvx2:
      return "avx2";
    case Simd::kBaseline:
      break;
  }
  return "sse2";
}

// Bytes of one register.
inline int simd_bytes(Simd simd) {
  return simd >= Simd::kAvx512 ? 64 : simd == Simd::kAvx2 ? 32 : 16;
}

// bf16 that the loops of Simd::kAvx512Bf16 write with AVX512-BF16's
// conversion; uint16_t is bf16 converted by shifts and adds.
struct NativeBf16 {
  uint16_t bits;
};

// W lanes of E as one vector: lowered to whatever registers the function
// it is inlined into is compiled for.
template <class E, int W>
struct VecOf {
  typedef E type __attribute__((vector_size(sizeof(E) * W)));
};

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
template <class V, class T>
[[gnu::always_inline]] inline V load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class V, class T>
[[gnu::always_inline]] inline void store(T* p, const V& v) {
  std::memcpy(p, &v, sizeof v);
}

// L lanes of float (a plain float for L = 1) read from and written to
// elements of T: f32, or bf16 as its bits (uint16_t, or NativeBf16 in
// functions compiled for AVX512-BF16 only).
template <class T, int L>
struct Lanes {
  using F = std::conditional_t<L == 1, float, typename VecOf<float, L>::type>;
  using U = std::conditional_t<L == 1, uint32_t, typename VecOf<uint32_t, L>::type>;
  using S = std::conditional_t<L == 1, int32_t, typename VecOf<int32_t, L>::type>;

  [[gnu::always_inline]] static F get(const T* p) {
    if constexpr (std::is_same_v<T, float>) {
      return load<F>(p);
    } else {
      U u;
      if constexpr (L == 1) {
        uint16_t bits;
        std::memcpy(&bits, p, sizeof bits);
        u = static_cast<uint32_t>(bits) << 16;
      } else if constexpr (L == 16) {
        // Each bf16 as the high half of a 32-bit lane, zeros below: one
        // permute. GCC 12 widens 16 halves to 32 bits as two halves and
        // joins them (five instructions), in every loop over bf16.
        const auto w = interleave_below(load<typename VecOf<uint16_t, L>::type>(p),
                                        std::make_index_sequence<2 * L>());
        std::memcpy(&u, &w, sizeof u);
      } else {
        u = __builtin_convertvector(load<typename VecOf<uint16_t, L>::type>(p), U) << 16;
      }
      F f;
      std::memcpy(&f, &u, sizeof f);
      return f;
    }
  }

  // v's lanes each above a zero: (0, v0, 0, v1, ...).
  template <size_t... I>
  [[gnu::always_inline]] static auto interleave_below(const typename VecOf<uint16_t, L>::type& v,
                                                      std::index_sequence<I...>) {
    const typename VecOf<uint16_t, L>::type zero{};
    return __builtin_shufflevector(zero, v, (I % 2 ? L + I / 2 : I / 2)...);
  }

  [[gnu::always_inline]] static void put(T* p, const F& v) {
    if constexpr (std::is_same_v<T, float>) {
      store(p, v);
    } else if constexpr (std::is_same_v<T, NativeBf16>) {
      // One instruction where the shifts and adds below take eight: in
      // cache, bf16 passes ran at half the bytes per second of f32 ones.
      // Inline assembly, as GCC inlines no intrinsic into these loops,
      // which take their target from the function they are inlined into.
      // It rounds as below, but reads a subnormal (below 1.2e-38) as zero.
      // Fewer than 8 lanes (a float is an xmm register's first) convert
      // from and into an xmm register.
      constexpr int kOut = L < 8 ? 8 : L;
      typename VecOf<uint16_t, kOut>::type out;
      asm("vcvtneps2bf16 %1, %0" : "=v"(out) : "v"(v));
      std::memcpy(p, &out, L * sizeof(uint16_t));
    } else {
      U u;
      std::memcpy(&u, &v, sizeof u);
      // Round to nearest even; a NaN stays a (quiet) NaN.
      const U rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
      const U quiet = (u >> 16) | 0x40u;
      if constexpr (L == 1) {
        *p = static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
      } else {
        const U nan = reinterpret_cast<U>((u & 0x7fffffffu) > 0x7f800000u);
        store(p, __builtin_convertvector((rounded & ~nan) | (quiet & nan),
                                         typename VecOf<uint16_t, L>::type));
      }
    }
  }

  // v where `where` > 0, else 0.
  [[gnu::always_inline]] static F cut(const F& v, const F& where) {
    if constexpr (L == 1) {
      return where > 0.f ? v : 0.f;
    } else {
      return reinterpret_cast<F>(reinterpret_cast<S>(v) & reinterpret_cast<S>(where > 0.f));
    }
  }
};
#pragma GCC diagnostic pop

// The target attributes of the functions each instruction set's copy of a
// loop is inlined into.
#define DPTRAIN_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))
#define DPTRAIN_TARGET_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define DPTRAIN_TARGET_AVX2 __attribute__((target("avx2")))

}  // namespace dptrain
