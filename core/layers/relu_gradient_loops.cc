#include "core/layers/relu_gradient_loops.h"

#include <omp.h>

#include <algorithm>
#include <type_traits>

// Vectors pass between inlined functions only (simd.h).
#pragma GCC diagnostic ignored "-Wpsabi"

namespace dptrain {
namespace {

using ReluGradientFn = void (*)(void*, const void* const*, size_t, const void*, int64_t, int64_t);

template <class T, int L>
[[gnu::always_inline]] inline void step(T* d0, const T* const* others, size_t n, const T* y,
                                        int64_t at) {
  using In = Lanes<T, L>;
  typename In::F sum = In::get(d0 + at);
  for (size_t b = 0; b < n; ++b) sum += In::get(others[b] + at);
  In::put(d0 + at, In::cut(sum, In::get(y + at)));
}

template <class T, int W>
[[gnu::always_inline]] inline void run(void* d0, const void* const* others, size_t n, const void* y,
                                       int64_t begin, int64_t end) {
  T* d = static_cast<T*>(d0);
  const T* const* o = reinterpret_cast<const T* const*>(others);
  const T* yy = static_cast<const T*>(y);
  int64_t at = begin;
  for (; at + W <= end; at += W) step<T, W>(d, o, n, yy, at);
  for (; at < end; ++at) step<T, 1>(d, o, n, yy, at);
}

#define DPTRAIN_RELU_GRADIENT(suffix, target)                                            \
  template <class T, int W>                                                              \
  target void run_##suffix(void* d0, const void* const* others, size_t n, const void* y, \
                           int64_t begin, int64_t end) {                                 \
    run<T, W>(d0, others, n, y, begin, end);                                             \
  }
DPTRAIN_RELU_GRADIENT(avx512bf16, DPTRAIN_TARGET_AVX512BF16)
DPTRAIN_RELU_GRADIENT(avx512, DPTRAIN_TARGET_AVX512)
DPTRAIN_RELU_GRADIENT(avx2, DPTRAIN_TARGET_AVX2)
DPTRAIN_RELU_GRADIENT(baseline, )
#undef DPTRAIN_RELU_GRADIENT

template <class T>
ReluGradientFn run_for(Simd simd) {
  switch (simd) {
    case Simd::kAvx512Bf16:
      // Its conversion is its only difference: f32 runs AVX-512's copy.
      if constexpr (std::is_same_v<T, uint16_t>) return run_avx512bf16<NativeBf16, 16>;
      [[fallthrough]];
    case Simd::kAvx512:
      return run_avx512<T, 16>;
    case Simd::kAvx2:
      return run_avx2<T, 8>;
    case Simd::kBaseline:
      break;
  }
  return run_baseline<T, 4>;
}

}  // namespace

void relu_gradient_sum(bool bf16, void* d0, const std::vector<const void*>& others, const void* y,
                       int64_t count, int threads, Simd simd) {
  const ReluGradientFn fn = bf16 ? run_for<uint16_t>(simd) : run_for<float>(simd);
  const size_t elem = bf16 ? 2 : 4;
  // A thread a run of 16 KB at least.
  threads = static_cast<int>(std::min<int64_t>(threads, count * elem / 16384 + 1));
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    // Runs of whole cache lines, so that no two threads write one.
    const int64_t line = 64 / static_cast<int64_t>(elem);
    const int64_t lines = (count + line - 1) / line;
    const int64_t begin = std::min(count, lines * t / nt * line);
    const int64_t end = std::min(count, lines * (t + 1) / nt * line);
    fn(d0, others.data(), others.size(), y, begin, end);
  }
}

}  // namespace dptrain
