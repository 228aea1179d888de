// The weight gradient of a 1x1 convolution without padding, groups or
// bias, over channels-last tensors, as one matmul. A channels-last tensor
// is a pixels x channels matrix, so dW[oc][ic] = sum over pixels p of
// dy[p][oc] * x[p][ic] is dy^T x; a stride first gathers the pixels the
// kernel reads into a dense copy. oneDNN 2.6's AMX convolution
// backward-weights kernel takes 1.6-4x as long as its AMX matmul on
// ResNet-50's 1x1 shapes (32x1024x14x14 -> 256: 8.1 against 2.8 ms, bf16,
// two threads), and those layers carry most of its weight-gradient time.
#pragma once

#include <cstdint>
#include <optional>

#include <oneapi/dnnl/dnnl.hpp>

#include "core/layer.h"
#include "core/primitive.h"

namespace dptrain {

class PointwiseWeightGrad {
 public:
  struct Plan {
    dnnl::matmul::primitive_desc matmul;
    dnnl::memory::desc src, diff_dst;  // the convolution's, channels-last
    int64_t stride = 1;
  };
  // The matmul for a 1x1 convolution reading `src` and writing `dst` with
  // `stride`; nothing unless both are channels-last, the stride divides
  // the input's height and width, and oneDNN has an optimized matmul.
  static std::optional<Plan> plan(const dnnl::memory::desc& src, const dnnl::memory::desc& dst,
                                  int64_t stride);

  PointwiseWeightGrad() = default;
  // Binds the plan to the convolution's input `src` and output gradient
  // `diff_dst` (in the plan's layouts), writing the f32 gradient into
  // `grad` (o x i x 1 x 1, any layout).
  PointwiseWeightGrad(const Plan& plan, const dnnl::memory& src, const dnnl::memory& diff_dst,
                      const dnnl::memory& grad, SetupContext& ctx);

  void run() const;
  explicit operator bool() const { return static_cast<bool>(matmul_); }

 private:
  BoundPrimitive gather_, matmul_, to_grad_;
};

}  // namespace dptrain
