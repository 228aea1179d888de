#include "core/layers/batch_norm_loops.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <stdexcept>
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
  const void* other = nullptr;  // added to the normalized x (normalized too with oa, ob)
  void* out = nullptr;
  // Per channel: the sums' centre (k), or the coefficients of out; the
  // forward's (y = ya * x + yb), whose sign is the fused ReLU's cut.
  const float *a = nullptr, *b = nullptr, *k = nullptr, *ya = nullptr, *yb = nullptr;
  const float *oa = nullptr, *ob = nullptr;  // other's, where it is normalized too
  double* sums = nullptr;                    // 2 x channels, this thread's
  // The residual Add's ReLU gradient (out, in place): plus other where
  // given, cut where `cut` is not positive; its sums against x and, for a
  // second BatchNorm, against x2 about k2, into sums2.
  const void* cut = nullptr;
  const void* x2 = nullptr;
  const float* k2 = nullptr;
  double* sums2 = nullptr;
};

namespace {

constexpr int64_t kChunk = 32;  // pixels summed in float before double

enum Kind {
  kStatistics,
  kGradientSums,
  kNormalize,
  kNormalizeAdd,
  kNormalizeAddNormalized,
  kInputGradient,
  kAddGradientSums,   // the Add's ReLU gradient and one BatchNorm's sums
  kAddGradientSums2,  // and a second BatchNorm's
};

// Calls body<L>(c) for the channels of a row: a vector of W at a time,
// then the last ones one by one.
template <int W, class Body>
[[gnu::always_inline]] inline void for_channels(int64_t channels, Body&& body) {
  const int64_t vectors = channels - channels % W;
  for (int64_t c = 0; c < vectors; c += W) body.template operator()<W>(c);
  for (int64_t c = vectors; c < channels; ++c) body.template operator()<1>(c);
}

// Calls body<L, N>(c) for N vectors of L channels from c: G vectors of W
// at a time, then single vectors, then the last channels one by one.
template <int W, int G, class Body>
[[gnu::always_inline]] inline void for_channel_groups(int64_t channels, Body&& body) {
  int64_t c = 0;
  for (; c + G * W <= channels; c += G * W) body.template operator()<W, G>(c);
  for (; c + W <= channels; c += W) body.template operator()<W, 1>(c);
  for (; c < channels; ++c) body.template operator()<1, 1>(c);
}

template <class F>
[[gnu::always_inline]] inline float lane(const F& v, int i) {
  if constexpr (std::is_same_v<F, float>) {
    return v;
  } else {
    return v[i];
  }
}

// Every cache line of the Bytes from p, into L2.
template <size_t Bytes, class T>
[[gnu::always_inline]] inline void prefetch(const T* p) {
  for (size_t b = 0; b < Bytes; b += 64)
    __builtin_prefetch(reinterpret_cast<const char*>(p) + b, 0, 2);
}

// The chunk after [q, end) of each tensor (null: none) in its own order,
// as much of it as the row r of a chunk's group of N vectors from c0 reads
// (the sums walk a chunk a group at a time, which the prefetchers do not
// follow).
template <class T, int L, int N>
[[gnu::always_inline]] inline void prefetch_next_chunk(std::initializer_list<const void*> tensors,
                                                       int64_t q, int64_t end, int64_t q1,
                                                       int64_t r, int64_t c0, int64_t c_count) {
  if constexpr (L > 1) {
    constexpr int64_t kBytes = N * L * sizeof(T);
    const int64_t ahead = end * c_count * static_cast<int64_t>(sizeof(T)) +
                          ((c0 / (N * L)) * kChunk + (r - q)) * kBytes;
    if (ahead >= q1 * c_count * static_cast<int64_t>(sizeof(T))) return;
    for (const void* t : tensors) {
      if (t) prefetch<kBytes>(static_cast<const char*>(t) + ahead);
    }
  }
}

template <class T, int W, int G, Kind K, bool Relu>
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
  if constexpr (K == kAddGradientSums || K == kAddGradientSums2) {
    // As kGradientSums walks a chunk, g = (dy + other) cut where the Add's
    // output is not positive written back first, and summed as written
    // (bf16 rounded): the sums kGradientSums would take from it.
    T* g = static_cast<T*>(p.out);
    const T* cut = static_cast<const T*>(p.cut);
    const T* x2 = static_cast<const T*>(p.x2);
    const T* o = static_cast<const T*>(p.other);
    for (int64_t q = q0; q < q1; q += kChunk) {
      const int64_t end = std::min(q + kChunk, q1);
      // Always inlined: left a function of its own (as a sanitizer build
      // left it), the lambda has no target attribute, so no AVX-512
      // register for the bf16 conversion's operand.
      for_channel_groups<W, G>(
          c_count, [&]<int L, int N>(int64_t c0) __attribute__((always_inline)) {
            using In = Lanes<T, L>;
            using F = typename In::F;
            constexpr bool kTwo = K == kAddGradientSums2;
            F s1[N], s2[N], s3[N], k[N], k2[N];
            for (int j = 0; j < N; ++j) {
              s1[j] = s2[j] = s3[j] = F{};
              k[j] = load<F>(p.k + c0 + j * L);
              if constexpr (kTwo) k2[j] = load<F>(p.k2 + c0 + j * L);
            }
            for (int64_t r = q; r < end; ++r) {
              const int64_t at = r * c_count + c0;
              prefetch_next_chunk<T, L, N>(
                  {static_cast<const void*>(g), p.x, static_cast<const void*>(o), p.cut, p.x2}, q,
                  end, q1, r, c0, c_count);
              for (int j = 0; j < N; ++j) {
                const int64_t e = at + j * L;
                F v = In::get(g + e);
                if (o) v += In::get(o + e);
                if constexpr (Relu) v = In::cut(v, In::get(cut + e));
                In::put(g + e, v);
                v = In::get(g + e);
                s1[j] += v;
                s2[j] += v * (In::get(x + e) - k[j]);
                if constexpr (kTwo) s3[j] += v * (In::get(x2 + e) - k2[j]);
              }
            }
            for (int j = 0; j < N; ++j) {
              for (int i = 0; i < L; ++i) {
                const auto c = c0 + j * L + i;
                p.sums[c] += static_cast<double>(lane(s1[j], i));
                p.sums[c_count + c] += static_cast<double>(lane(s2[j], i));
                if constexpr (kTwo) {
                  p.sums2[c] += static_cast<double>(lane(s1[j], i));
                  p.sums2[c_count + c] += static_cast<double>(lane(s3[j], i));
                }
              }
            }
          });
    }
  } else if constexpr (K == kStatistics || K == kGradientSums) {
    // A chunk's rows a group of channels at a time, the group's sums in
    // registers: summed a row at a time through memory, these passes ran
    // at half the speed memory allows (bf16, 32x256x56x56 on two threads:
    // statistics 2.6 -> 1.5 ms, bit for bit the same sums). Walked this
    // way, a chunk's lines are not in the order the prefetchers follow,
    // so the next chunk is fetched into L2 in its own order meanwhile (into
    // L1, it evicted the chunk being summed: f32 ran slower than before).
    for (int64_t q = q0; q < q1; q += kChunk) {
      const int64_t end = std::min(q + kChunk, q1);
      for_channel_groups<W, G>(c_count, [&]<int L, int N>(int64_t c0) {
        using In = Lanes<T, L>;
        using F = typename In::F;
        F s1[N], s2[N], k[N];
        for (int j = 0; j < N; ++j) {
          s1[j] = s2[j] = F{};
          k[j] = load<F>(p.k + c0 + j * L);
        }
        for (int64_t r = q; r < end; ++r) {
          const int64_t at = r * c_count + c0;
          prefetch_next_chunk<T, L, N>({p.x, K == kGradientSums ? p.dy : nullptr}, q, end, q1, r,
                                       c0, c_count);
          for (int j = 0; j < N; ++j) {
            const F xv = In::get(x + at + j * L);
            const F d = xv - k[j];
            if constexpr (K == kStatistics) {
              s1[j] += d;
              s2[j] += d * d;
            } else {
              const F g = g_at.template operator()<L>(at + j * L, c0 + j * L, xv);
              s1[j] += g;
              s2[j] += g * d;
            }
          }
        }
        for (int j = 0; j < N; ++j) {
          for (int i = 0; i < L; ++i) {
            p.sums[c0 + j * L + i] += static_cast<double>(lane(s1[j], i));
            p.sums[c_count + c0 + j * L + i] += static_cast<double>(lane(s2[j], i));
          }
        }
      });
    }
  } else {
    T* out = static_cast<T*>(p.out);
    for (int64_t r = q0; r < q1; ++r) {
      for_channels<W>(c_count, [&]<int L>(int64_t c) {
        using In = Lanes<T, L>;
        using F = typename In::F;
        const int64_t at = r * c_count + c;
        const F a = load<F>(p.a + c), b = load<F>(p.b + c), xv = In::get(x + at);
        if constexpr (K == kNormalize || K == kNormalizeAdd || K == kNormalizeAddNormalized) {
          F v = a * xv + b;
          const T* other = static_cast<const T*>(p.other);
          if constexpr (K == kNormalizeAdd) v += In::get(other + at);
          if constexpr (K == kNormalizeAddNormalized) {
            v += load<F>(p.oa + c) * In::get(other + at) + load<F>(p.ob + c);
          }
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
  template <class T, int W, int G, Kind K, bool Relu>                         \
  target void pass_##suffix(const BatchNormPass& p, int64_t q0, int64_t q1) { \
    run_pass<T, W, G, K, Relu>(p, q0, q1);                                    \
  }
DPTRAIN_BN_PASSES(avx512bf16, DPTRAIN_TARGET_AVX512BF16)
DPTRAIN_BN_PASSES(avx512, DPTRAIN_TARGET_AVX512)
DPTRAIN_BN_PASSES(avx2, DPTRAIN_TARGET_AVX2)
DPTRAIN_BN_PASSES(baseline, )
#undef DPTRAIN_BN_PASSES

// A register's floats a vector, and as many vectors a group of channels
// as leave registers for the sums and coefficients: 32 with AVX-512, 16
// below.
template <class T, Kind K, bool Relu>
BatchNormPassFn pass_for(Simd simd) {
  switch (simd) {
    case Simd::kAvx512Bf16:  // planned as kAvx512 for f32
      if constexpr (std::is_same_v<T, uint16_t>) return pass_avx512bf16<NativeBf16, 16, 4, K, Relu>;
      [[fallthrough]];
    case Simd::kAvx512:
      return pass_avx512<T, 16, 4, K, Relu>;
    case Simd::kAvx2:
      return pass_avx2<T, 8, 2, K, Relu>;
    case Simd::kBaseline:
      break;
  }
  return pass_baseline<T, 4, 2, K, Relu>;
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
  // AVX512-BF16 adds only a conversion to AVX-512, which f32 never makes.
  l.simd_ = simd == Simd::kAvx512Bf16 && !l.bf16_ ? Simd::kAvx512 : simd;
  const auto sums = static_cast<size_t>(2 * l.channels_);
  l.partial_slot_ = static_cast<int64_t>(AlignedArray<double>::whole_lines(sums));
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
  if (y != nullptr) apply(x, nullptr, nullptr, y, relu);
}

void BatchNormLoops::add_normalized(const void* x, const void* other, void* out, bool relu) const {
  KernelTimer timer;
  apply(x, other, nullptr, out, relu);
}

void BatchNormLoops::add_normalized(const void* x, const BatchNormLoops& other_loops,
                                    const void* other_x, void* out, bool relu) const {
  check_same_tensor(other_loops, false);
  KernelTimer timer;
  apply(x, other_x, &other_loops, out, relu);
}

void BatchNormLoops::apply(const void* x, const void* other, const BatchNormLoops* other_loops,
                           void* out, bool relu) const {
  BatchNormPass p;
  p.x = x;
  p.other = other;
  p.out = out;
  p.a = ya_.data();
  p.b = yb_.data();
  if (other_loops) {
    p.oa = other_loops->ya_.data();
    p.ob = other_loops->yb_.data();
  }
  run(other_loops ? pass_for<kNormalizeAddNormalized>(simd_, bf16_, relu)
      : other     ? pass_for<kNormalizeAdd>(simd_, bf16_, relu)
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

void BatchNormLoops::take_gradient_sums(void* dy, const void* other, const void* cut, const void* x,
                                        const float* mean, const BatchNormLoops* second,
                                        const void* second_x, const float* second_mean) const {
  if (second) check_same_tensor(*second, true);
  KernelTimer timer;
  BatchNormPass p;
  p.out = dy;
  p.other = other;
  p.cut = cut;
  p.x = x;
  p.k = mean;
  p.x2 = second_x;
  p.k2 = second_mean;
  const bool relu = cut != nullptr;
  if (second) {
    std::fill(second->partial_.data(), second->partial_.data() + second->partial_.size(), 0.0);
  }
  run(second ? pass_for<kAddGradientSums2>(simd_, bf16_, relu)
             : pass_for<kAddGradientSums>(simd_, bf16_, relu),
      p, second);
}

// With xhat = (x - mean) * inv_std and M pixels: dbeta = sum(g), dgamma =
// sum(g * xhat), and dx = gamma * inv_std * (g - dbeta / M - xhat * dgamma
// / M), which is a * g + b + k * x per channel.
void BatchNormLoops::backward(const void* x, const void* dy, void* dx, const float* gamma,
                              const float* beta, const float* mean, const float* var, float eps,
                              bool relu, float* dgamma, float* dbeta, bool sums_taken) const {
  if (sums_taken && relu) throw std::logic_error("gradient sums taken through a ReLU of its own");
  KernelTimer timer;
  if (relu) coefficients(gamma, beta, mean, var, eps, ya_.data(), yb_.data());
  BatchNormPass p;
  p.x = x;
  p.dy = dy;
  p.k = mean;
  p.ya = ya_.data();
  p.yb = yb_.data();
  if (!sums_taken) run(pass_for<kGradientSums>(simd_, bf16_, relu), p);
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

void BatchNormLoops::run(BatchNormPassFn fn, const BatchNormPass& shared,
                         const BatchNormLoops* second) const {
  std::fill(partial_.data(), partial_.data() + partial_.size(), 0.0);
#pragma omp parallel num_threads(threads_)
  {
    const int t = omp_get_thread_num(), n = omp_get_num_threads();
    BatchNormPass p = shared;
    p.channels = channels_;
    p.sums = partial_.data() + partial_slot_ * t;
    if (second) p.sums2 = second->partial_.data() + second->partial_slot_ * t;
    fn(p, pixels_ * t / n, pixels_ * (t + 1) / n);
  }
}

void BatchNormLoops::check_same_tensor(const BatchNormLoops& other, bool threads) const {
  if (other.pixels_ != pixels_ || other.channels_ != channels_ || other.bf16_ != bf16_ ||
      (threads && other.threads_ != threads_)) {
    throw std::logic_error("BatchNorm loops of different tensors combined");
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
