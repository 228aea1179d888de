// What the loops of our own (max pooling, batch normalization) share: the
// instruction sets they are compiled for, the one this CPU runs best, and
// GCC vector extensions a register's width of lanes at a time. The build
// targets the x86-64 baseline; each loop is inlined into functions
// compiled for AVX-512, AVX2 and the baseline alike (GCC's target
// attribute), and the CPU picks one at run time.
//
// Vectors pass only between functions inlined into one another, so the ABI
// GCC warns of (wide vectors returned by baseline code) never applies: a
// file that uses them silences -Wpsabi.
#pragma once

#include <cstring>

namespace dptrain {

enum class Simd { kBaseline, kAvx2, kAvx512 };

// The widest this CPU runs.
inline Simd best_simd() {
  static const Simd best = __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")
                               ? Simd::kAvx512
                           : __builtin_cpu_supports("avx2") ? Simd::kAvx2
                                                            : Simd::kBaseline;
  return best;
}

inline const char* simd_name(Simd simd) {
  switch (simd) {
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
  return simd == Simd::kAvx512 ? 64 : simd == Simd::kAvx2 ? 32 : 16;
}

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
#pragma GCC diagnostic pop

// The target attributes of the functions each instruction set's copy of a
// loop is inlined into.
#define DPTRAIN_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))
#define DPTRAIN_TARGET_AVX2 __attribute__((target("avx2")))

}  // namespace dptrain
