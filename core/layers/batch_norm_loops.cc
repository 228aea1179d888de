#include "core/layers/batch_norm_loops.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "core/layers/channel_blocks.h"
#include "core/primitive.h"

// Vectors pass between inlined functions only (simd.h).
#pragma GCC diagnostic ignored "-Wpsabi"

namespace dptrain {

// One thread's share of a pass: its pixels' rows of `channels` elements.
struct BatchNormPass {
  int64_t channels = 0;
  const void* x = nullptr;
  const void* dy = nullptr;
  const void* other = nullptr;  // added to the normalized x
  void* out = nullptr;
  // Per channel: the sums' centre (k), or the coefficients of out; the
  // forward's (y = ya * x + yb), whose sign is the fused ReLU's cut.
  const float *a = nullptr, *b = nullptr, *k = nullptr, *ya = nullptr, *yb = nullptr;
  float* chunk = nullptr;  // 2 x channels
  double* sums = nullptr;  // 2 x channels, this thread's
};

namespace {

constexpr int64_t kChunk = 32;  // pixels summed in float before double

enum Kind { kStatistics, kGradientSums, kNormalize, kNormalizeAdd, kInputGradient };

// Calls body<L>(c) for the channels of a row: a vector of W at a time,
// then the last ones one by one.
template <int W, class Body>
[[gnu::always_inline]] inline void for_channels(int64_t channels, Body&& body) {
  const int64_t vectors = channels - channels % W;
  for (int64_t c = 0; c < vectors; c += W) body.template operator()<W>(c);
  for (int64_t c = vectors; c < channels; ++c) body.template operator()<1>(c);
}

template <class T, int W, Kind K, bool Relu>
[[gnu::always_inline]] inline void run_pass(const BatchNormPass& p, int64_t q0, int64_t q1) {
  const int64_t c_count = p.channels;
  const T* x = static_cast<const T*>(p.x);
  const T* dy = static_cast<const T*>(p.dy);
  // g: dy, cut where the fused ReLU's input was not positive, which x
  // gives again (reading y back would cost a pass over memory).
  auto g_at = [&]<int L>(int64_t at, int64_t c, const typename Lanes<T, L>::F& xv) {
    using In = Lanes<T, L>;
    using F = typename In::F;
    if constexpr (Relu) {
      return In::cut(In::get(dy + at), load<F>(p.ya + c) * xv + load<F>(p.yb + c));
    } else {
      return In::get(dy + at);
    }
  };
  if constexpr (K == kStatistics || K == kGradientSums) {
    float* s1 = p.chunk;
    float* s2 = p.chunk + c_count;
    for (int64_t q = q0; q < q1; q += kChunk) {
      std::fill(p.chunk, p.chunk + 2 * c_count, 0.f);
      const int64_t end = std::min(q + kChunk, q1);
      for (int64_t r = q; r < end; ++r) {
        for_channels<W>(c_count, [&]<int L>(int64_t c) {
          using In = Lanes<T, L>;
          using F = typename In::F;
          const int64_t at = r * c_count + c;
          const F xv = In::get(x + at);
          const F d = xv - load<F>(p.k + c);
          F first, second;
          if constexpr (K == kStatistics) {
            first = d;
            second = d * d;
          } else {
            first = g_at.template operator()<L>(at, c, xv);
            second = first * d;
          }
          store(s1 + c, load<F>(s1 + c) + first);
          store(s2 + c, load<F>(s2 + c) + second);
        });
      }
      for (int64_t c = 0; c < 2 * c_count; ++c) p.sums[c] += static_cast<double>(p.chunk[c]);
    }
  } else {
    T* out = static_cast<T*>(p.out);
    for (int64_t r = q0; r < q1; ++r) {
      for_channels<W>(c_count, [&]<int L>(int64_t c) {
        using In = Lanes<T, L>;
        using F = typename In::F;
        const int64_t at = r * c_count + c;
        const F a = load<F>(p.a + c), b = load<F>(p.b + c), xv = In::get(x + at);
        if constexpr (K == kNormalize || K == kNormalizeAdd) {
          F v = a * xv + b;
          if constexpr (K == kNormalizeAdd) v += In::get(static_cast<const T*>(p.other) + at);
          In::put(out + at, Relu ? In::cut(v, v) : v);
        } else {
          In::put(out + at, a * g_at.template operator()<L>(at, c, xv) + b + load<F>(p.k + c) * xv);
        }
      });
    }
  }
}

// The passes compiled for each instruction set: the same code, inlined
// into functions of each target.
#define DPTRAIN_BN_PASSES(suffix, target)                                     \
  template <class T, int W, Kind K, bool Relu>                                \
  target void pass_##suffix(const BatchNormPass& p, int64_t q0, int64_t q1) { \
    run_pass<T, W, K, Relu>(p, q0, q1);                                       \
  }
DPTRAIN_BN_PASSES(avx512, DPTRAIN_TARGET_AVX512)
DPTRAIN_BN_PASSES(avx2, DPTRAIN_TARGET_AVX2)
DPTRAIN_BN_PASSES(baseline, )
#undef DPTRAIN_BN_PASSES

// A register's floats a vector.
template <class T, Kind K, bool Relu>
BatchNormPassFn pass_for(Simd simd) {
  switch (simd) {
    case Simd::kAvx512:
      return pass_avx512<T, 16, K, Relu>;
    case Simd::kAvx2:
      return pass_avx2<T, 8, K, Relu>;
    case Simd::kBaseline:
      break;
  }
  return pass_baseline<T, 4, K, Relu>;
}

template <Kind K>
BatchNormPassFn pass_for(Simd simd, bool bf16, bool relu) {
  if (bf16) return relu ? pass_for<uint16_t, K, true>(simd) : pass_for<uint16_t, K, false>(simd);
  return relu ? pass_for<float, K, true>(simd) : pass_for<float, K, false>(simd);
}

}  // namespace

std::optional<BatchNormLoops> BatchNormLoops::plan(const dnnl::memory::desc& data, int threads,
                                                   Simd simd) {
  using dt = dnnl::memory::data_type;
  if (channel_loop_tag(data) != dnnl::memory::format_tag::nhwc ||
      (data.data_type() != dt::f32 && data.data_type() != dt::bf16)) {
    return std::nullopt;
  }
  const dnnl::memory::dims d = data.dims();
  BatchNormLoops l;
  l.pixels_ = d[0] * d[2] * d[3];
  l.channels_ = d[1];
  l.bf16_ = data.data_type() == dt::bf16;
  l.threads_ = std::max(threads, 1);
  l.simd_ = simd;
  const auto sums = static_cast<size_t>(2 * l.channels_);
  l.chunk_slot_ = static_cast<int64_t>(AlignedArray<float>::whole_lines(sums));
  l.partial_slot_ = static_cast<int64_t>(AlignedArray<double>::whole_lines(sums));
  l.chunk_ = AlignedArray<float>(static_cast<size_t>(l.chunk_slot_ * l.threads_));
  l.partial_ = AlignedArray<double>(static_cast<size_t>(l.partial_slot_ * l.threads_));
  for (auto* v : {&l.centre_, &l.a_, &l.b_, &l.k_, &l.ya_, &l.yb_})
    v->resize(static_cast<size_t>(l.channels_));
  return l;
}

void BatchNormLoops::forward_training(const void* x, void* y, const float* gamma, const float* beta,
                                      float eps, bool relu, float* mean, float* var) const {
  KernelTimer timer;
  float* centre = centre_.data();
  if (bf16_) {
    for (int64_t c = 0; c < channels_; ++c) {
      centre[c] = Lanes<uint16_t, 1>::get(static_cast<const uint16_t*>(x) + c);
    }
  } else {
    std::memcpy(centre, x, static_cast<size_t>(channels_) * sizeof(float));
  }
  BatchNormPass p;
  p.x = x;
  p.k = centre;
  run(pass_for<kStatistics>(simd_, bf16_, false), p);
  const auto count = static_cast<double>(pixels_);
  for (int64_t c = 0; c < channels_; ++c) {
    const double m1 = sum(0, c) / count, m2 = sum(1, c) / count;
    mean[c] = static_cast<float>(static_cast<double>(centre[c]) + m1);
    var[c] = static_cast<float>(std::max(m2 - m1 * m1, 0.0));
  }
  normalize(x, y, gamma, beta, mean, var, eps, relu);
}

void BatchNormLoops::forward_inference(const void* x, void* y, const float* gamma,
                                       const float* beta, const float* mean, const float* var,
                                       float eps, bool relu) const {
  KernelTimer timer;
  normalize(x, y, gamma, beta, mean, var, eps, relu);
}

void BatchNormLoops::normalize(const void* x, void* y, const float* gamma, const float* beta,
                               const float* mean, const float* var, float eps, bool relu) const {
  coefficients(gamma, beta, mean, var, eps, ya_.data(), yb_.data());
  if (y != nullptr) apply(x, nullptr, y, relu);
}

void BatchNormLoops::add_normalized(const void* x, const void* other, void* out, bool relu) const {
  KernelTimer timer;
  apply(x, other, out, relu);
}

void BatchNormLoops::apply(const void* x, const void* other, void* out, bool relu) const {
  BatchNormPass p;
  p.x = x;
  p.other = other;
  p.out = out;
  p.a = ya_.data();
  p.b = yb_.data();
  run(other ? pass_for<kNormalizeAdd>(simd_, bf16_, relu)
            : pass_for<kNormalize>(simd_, bf16_, relu),
      p);
}

void BatchNormLoops::coefficients(const float* gamma, const float* beta, const float* mean,
                                  const float* var, float eps, float* a, float* b) const {
  for (int64_t c = 0; c < channels_; ++c) {
    const double ac = gamma[c] / std::sqrt(static_cast<double>(var[c]) + eps);
    a[c] = static_cast<float>(ac);
    b[c] = static_cast<float>(beta[c] - ac * mean[c]);
  }
}

// With xhat = (x - mean) * inv_std and M pixels: dbeta = sum(g), dgamma =
// sum(g * xhat), and dx = gamma * inv_std * (g - dbeta / M - xhat * dgamma
// / M), which is a * g + b + k * x per channel.
void BatchNormLoops::backward(const void* x, const void* dy, void* dx, const float* gamma,
                              const float* beta, const float* mean, const float* var, float eps,
                              bool relu, float* dgamma, float* dbeta) const {
  KernelTimer timer;
  if (relu) coefficients(gamma, beta, mean, var, eps, ya_.data(), yb_.data());
  BatchNormPass p;
  p.x = x;
  p.dy = dy;
  p.k = mean;
  p.ya = ya_.data();
  p.yb = yb_.data();
  run(pass_for<kGradientSums>(simd_, bf16_, relu), p);
  const auto count = static_cast<double>(pixels_);
  for (int64_t c = 0; c < channels_; ++c) {
    const auto i = static_cast<size_t>(c);
    const double inv_std = 1 / std::sqrt(static_cast<double>(var[c]) + eps);
    const double sum_g = sum(0, c), sum_g_xhat = sum(1, c) * inv_std;
    dbeta[c] = static_cast<float>(sum_g);
    dgamma[c] = static_cast<float>(sum_g_xhat);
    const double a = gamma[c] * inv_std;
    const double k = -a * inv_std * sum_g_xhat / count;
    a_[i] = static_cast<float>(a);
    k_[i] = static_cast<float>(k);
    b_[i] = static_cast<float>(-a * sum_g / count - k * mean[c]);
  }
  if (dx == nullptr) return;
  p.out = dx;
  p.a = a_.data();
  p.b = b_.data();
  p.k = k_.data();
  run(pass_for<kInputGradient>(simd_, bf16_, relu), p);
}

void BatchNormLoops::run(BatchNormPassFn fn, const BatchNormPass& shared) const {
  std::fill(partial_.data(), partial_.data() + partial_.size(), 0.0);
#pragma omp parallel num_threads(threads_)
  {
    const int t = omp_get_thread_num(), n = omp_get_num_threads();
    BatchNormPass p = shared;
    p.channels = channels_;
    p.chunk = chunk_.data() + chunk_slot_ * t;
    p.sums = partial_.data() + partial_slot_ * t;
    fn(p, pixels_ * t / n, pixels_ * (t + 1) / n);
  }
}

double BatchNormLoops::sum(int which, int64_t c) const {
  double s = 0;
  for (int t = 0; t < threads_; ++t) {
    s += partial_.data()[partial_slot_ * t + which * channels_ + c];
  }
  return s;
}

}  // namespace dptrain
