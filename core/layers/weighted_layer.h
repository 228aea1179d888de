// What Convolution and InnerProduct share: weights and an optional bias,
// an optional fused activation, and the same three primitives (forward,
// backward-data, backward-weights) bound to the same tensors. A subclass
// validates shapes and chooses the primitive descriptors; this class
// declares the parameters, binds and runs them.
#pragma once

#include <optional>
#include <string>

#include "core/layer.h"
#include "core/layers/matmul_weight_grad.h"
#include "core/primitive.h"

namespace dptrain {

class WeightedLayer : public Layer {
 public:
  using Layer::Layer;

  bool fuse_activation(const Activation& act) override;
  void forward(bool training) override;
  void backward() override;
  std::string describe() const override { return describe_; }
  // The fused activation's gradient is taken from the output.
  bool backward_reads_top() const override { return activation_.has_value(); }
  Work work() const override { return {multiply_adds_, multiply_adds_ * (backward_data_ ? 2 : 1)}; }

 protected:
  // Forward attributes: the shared scratchpad and the fused activation.
  dnnl::primitive_attr forward_attr() const;
  // Convolution and Deconvolution: UserError for options that make no
  // layer over `in_channels` (sizes, stride, padding, dilation, groups).
  void check_convolution(const ConvolutionParam& p, int64_t in_channels) const;

  struct Primitives {
    dnnl::primitive_desc forward;
    dnnl::primitive_desc backward_weights;  // empty when `weight_grad_matmul` is set
    dnnl::primitive_desc backward_data;     // empty when the bottom needs no gradient
    // A convolution's weight gradient as a matmul, instead.
    std::optional<MatmulWeightGrad::Plan> weight_grad_matmul = std::nullopt;
  };
  // weights_plain: the user-facing layout; export_dims: the shape written to
  // weight files; multiply_adds: of one forward over the batch.
  void bind(Blob& bottom, Blob* top, SetupContext& ctx, const Primitives& pds,
            const dnnl::memory::desc& weights_plain, const dnnl::memory::dims& export_dims,
            const ParamInit& init, bool bias, int64_t multiply_adds);

  std::optional<Activation> activation_;

 private:
  Param* weights_ = nullptr;
  Param* bias_ = nullptr;
  Relayout fwd_weights_, src_, bww_src_, bww_diff_dst_, diff_weights_, bwd_weights_, bwd_diff_dst_,
      diff_src_;
  BoundPrimitive forward_, activation_backward_, backward_weights_, backward_data_;
  MatmulWeightGrad matmul_weight_grad_;
  std::string describe_;
  int64_t multiply_adds_ = 0;
};

}  // namespace dptrain
