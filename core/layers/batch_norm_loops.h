// Batch normalization's passes over a channels-last tensor (nhwc), f32 or
// bf16, by loops of our own: oneDNN 2.6's channels-last kernel runs bf16
// no faster than f32 (32x256x56x56 at two threads: 8.2 ms forward and
// 17.6 ms backward in either type), well short of what memory allows, and
// AMX's convolutions leave bf16 activations channels-last.
//
// Each thread takes a contiguous run of pixels. Sums over pixels are taken
// in float over 32 pixels at a time and then in double, and the threads'
// sums are added in thread order: the same figures for the same thread
// count. The statistics are summed around the first pixel's values, so
// that E[x^2] - E[x]^2 does not cancel, and the gradient's around the
// mean. bf16 is read exactly and written rounded to nearest even, as
// oneDNN rounds (where the CPU has AVX512-BF16, by its conversion, which
// as oneDNN's kernels there writes a subnormal as a zero of its sign).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "core/aligned_array.h"
#include "core/layers/simd.h"

namespace dptrain {

// One thread's share of a pass, and a pass compiled for one instruction set.
struct BatchNormPass;
using BatchNormPassFn = void (*)(const BatchNormPass&, int64_t first_pixel, int64_t end_pixel);

class BatchNormLoops {
 public:
  // The loops for `data` (4-d, nhwc, f32 or bf16), or none. `simd` must be
  // one this CPU runs; `threads` run them (and size their partial sums).
  static std::optional<BatchNormLoops> plan(const dnnl::memory::desc& data, int threads,
                                            Simd simd = best_simd());

  // Training: the batch's mean and biased variance of each channel into
  // mean and var, and y = gamma * (x - mean) / sqrt(var + eps) + beta (then
  // max(y, 0) with relu).
  void forward_training(const void* x, void* y, const float* gamma, const float* beta, float eps,
                        bool relu, float* mean, float* var) const;
  // Evaluation: the same with given statistics.
  void forward_inference(const void* x, void* y, const float* gamma, const float* beta,
                         const float* mean, const float* var, float eps, bool relu) const;
  // With y null, either forward only finds y's coefficients, and
  // add_normalized then writes out = y + other (then max(out, 0) with
  // relu), all three in x's layout: the residual Add after a BatchNorm in
  // one pass, y never written nor read back.
  void add_normalized(const void* x, const void* other, void* out, bool relu) const;
  // The same with other the input of another BatchNorm's loops over a
  // tensor of this shape and type, normalized by them (their forward having
  // found the coefficients): both BatchNorms of a residual Add's bottoms
  // folded into its pass.
  void add_normalized(const void* x, const BatchNormLoops& other_loops, const void* other_x,
                      void* out, bool relu) const;
  // From the output's gradient dy (cut where the output is 0 with relu)
  // and forward_training's statistics: the gradients of gamma and beta,
  // and unless dx is null the input's; dx may be dy or x itself (each
  // element read before it is written). With sums_taken, the last pass of
  // these loops was take_gradient_sums, which found the sums this backward
  // needs (this forward's y folded into an Add, no ReLU of its own: relu
  // false).
  void backward(const void* x, const void* dy, void* dx, const float* gamma, const float* beta,
                const float* mean, const float* var, float eps, bool relu, float* dgamma,
                float* dbeta, bool sums_taken = false) const;
  // The residual Add's gradient through its ReLU, in place on dy: dy plus
  // other (where not null: a Split branch's gradient), cut where `cut` (the
  // Add's output) is not positive (no cut where null), in the pass that
  // takes the sums against x and mean that backward then needs; with
  // `second` (loops of the same shape and thread count: a projection
  // shortcut's BatchNorm), its sums against second_x too. One pass where
  // there were two (three with a second).
  void take_gradient_sums(void* dy, const void* other, const void* cut, const void* x,
                          const float* mean, const BatchNormLoops* second = nullptr,
                          const void* second_x = nullptr, const float* second_mean = nullptr) const;

  // Whether take_gradient_sums beats the passes apart: for rows shorter
  // than 2 KB. Longer rows put the 32 rows of a chunk it walks, of each of
  // its four or five tensors, in a few of L1's sets (bf16, two threads:
  // 32x2048x7x7 0.78 ms in one pass, 0.45 apart; 32x256x56x56 7.4 and 9.7).
  bool takes_gradient_sums_faster() const { return channels_ * (bf16_ ? 2 : 4) < 2048; }
  Simd simd() const { return simd_; }

 private:
  // y = a * x + b per channel (then max(y, 0) with relu), a and b from
  // the statistics.
  void normalize(const void* x, void* y, const float* gamma, const float* beta, const float* mean,
                 const float* var, float eps, bool relu) const;
  // out = y (+ other, normalized by other_loops' coefficients where given)
  // by y's coefficients (then max(out, 0) with relu).
  void apply(const void* x, const void* other, const BatchNormLoops* other_loops, void* out,
             bool relu) const;
  // a = gamma / sqrt(var + eps) and b = beta - a * mean per channel.
  void coefficients(const float* gamma, const float* beta, const float* mean, const float* var,
                    float eps, float* a, float* b) const;
  // Runs fn on every thread's pixels, its sums zeroed first (second's
  // thread sums, zeroed by the caller, as sums2).
  void run(BatchNormPassFn fn, const BatchNormPass& pass,
           const BatchNormLoops* second = nullptr) const;
  // Throws unless other's loops are over a tensor of this shape and type
  // (and, with threads, split it between as many threads).
  void check_same_tensor(const BatchNormLoops& other, bool threads) const;
  // Sum `which` (0 or 1) of channel c over the threads, in thread order.
  double sum(int which, int64_t c) const;

  int64_t pixels_ = 0, channels_ = 0;
  bool bf16_ = false;
  int threads_ = 1;
  Simd simd_ = Simd::kBaseline;
  // Each thread's double sums, in a slot of whole cache lines (where the
  // heap put two threads' sums on one line, that line went back and forth
  // between the cores).
  int64_t partial_slot_ = 0;
  AlignedArray<double> partial_;
  mutable std::vector<float> centre_;  // the statistics' centre, per channel
  // Coefficients per channel: of the input gradient, and of the forward.
  mutable std::vector<float> a_, b_, k_, ya_, yb_;
};

}  // namespace dptrain
