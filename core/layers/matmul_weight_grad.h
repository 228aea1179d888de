// A convolution's weight gradient as one matmul over the patches of its
// input (im2col), for convolutions without groups or bias over
// channels-last tensors. A channels-last tensor is a pixels x channels
// matrix: with the patches laid out as one row of k x k x channels per
// output pixel, dW[oc][kh][kw][ic] is dy^T times the patches. A 1x1
// convolution without padding or stride reads its input in place; a
// stride, a padding or a larger kernel first gathers the patches into a
// buffer of the layer's own (k x k times the strided input's size).
//
// oneDNN 2.6's AMX convolution backward-weights kernel takes 1.6-4x as
// long as its AMX matmul on ResNet-50's 1x1 shapes (32x1024x14x14 -> 256:
// 8.1 against 2.8 ms, bf16, two threads), and up to 4x on its strided 3x3
// ones, where the gather costs a fraction of that; on its 3x3 ones
// without stride the two are level, gather included, and the
// convolution's own kernel stays.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "core/layer.h"
#include "core/primitive.h"

namespace dptrain {

class MatmulWeightGrad {
 public:
  struct Plan {
    dnnl::matmul::primitive_desc matmul;
    dnnl::memory::desc src, diff_dst;  // the convolution's, channels-last
    int64_t kernel = 1, stride = 1, pad = 0;
  };
  // The matmul for a k x k convolution with `stride` and `pad` reading
  // `src` and writing `dst`; nothing unless both are channels-last, the
  // strided patches are a view oneDNN takes (a stride that divides the
  // padded input), and oneDNN has an optimized matmul.
  static std::optional<Plan> plan(const dnnl::memory::desc& src, const dnnl::memory::desc& dst,
                                  int64_t kernel, int64_t stride, int64_t pad);

  MatmulWeightGrad() = default;
  // Binds the plan to the convolution's input `src` and output gradient
  // `diff_dst` (in the plan's layouts), writing the f32 gradient into
  // `grad` (o x i x k x k, any layout).
  MatmulWeightGrad(const Plan& plan, const dnnl::memory& src, const dnnl::memory& diff_dst,
                   const dnnl::memory& grad, SetupContext& ctx);

  void run() const;
  explicit operator bool() const { return static_cast<bool>(matmul_); }

 private:
  dnnl::memory padded_;               // the input with a zero border
  BoundPrimitive pad_;                // the input into it
  std::vector<BoundPrimitive> taps_;  // one gather per kernel position
  BoundPrimitive matmul_, to_grad_;
};

}  // namespace dptrain
