#include "core/layers/weighted_layer.h"

#include "core/engine.h"
#include "core/error.h"

namespace dptrain {

using dnnl::memory;

bool WeightedLayer::fuse_activation(const Activation& act) {
  activation_ = act;
  fused_ = act.type;
  return true;
}

dnnl::primitive_attr WeightedLayer::forward_attr() const {
  dnnl::primitive_attr attr = default_attr();
  if (activation_) {
    dnnl::post_ops ops;
    ops.append_eltwise(1.f, activation_->forward, activation_->alpha, 0.f);
    attr.set_post_ops(ops);
  }
  return attr;
}

void WeightedLayer::bind(Blob& bottom, Blob* top, SetupContext& ctx, const Primitives& pds,
                         const memory::desc& weights_plain, const memory::dims& export_dims,
                         const ParamInit& init, bool bias, int64_t multiply_adds) {
  multiply_adds_ = multiply_adds;
  const auto& fwd = pds.forward;
  // The master weights are f32 in the forward's layout; with bf16
  // activations the primitives read a bf16 copy, refreshed each forward.
  weights_ =
      ctx.add_param("weight", weights_plain, with_type(fwd.weights_desc(), memory::data_type::f32),
                    export_dims, init);
  params_.push_back(weights_);
  fwd_weights_ = Relayout::input(weights_->value, fwd.weights_desc());
  if (bias) {
    bias_ = ctx.add_param("bias", fwd.weights_desc(1), fwd.weights_desc(1),
                          fwd.weights_desc(1).dims(), {});
    params_.push_back(bias_);
  }
  ctx.define_top(top, fwd.dst_desc());
  src_ = Relayout::input(bottom.data, fwd.src_desc());
  forward_ = BoundPrimitive(dnnl::primitive(fwd), {{DNNL_ARG_SRC, src_.memory()},
                                                   {DNNL_ARG_WEIGHTS, fwd_weights_.memory()},
                                                   {DNNL_ARG_BIAS, bias ? bias_->value : memory()},
                                                   {DNNL_ARG_DST, top->data},
                                                   {DNNL_ARG_SCRATCHPAD, ctx.scratchpad(fwd)}});
  describe_ = "fwd " + std::string(fwd.impl_info_str()) + " src " + layout_name(fwd.src_desc()) +
              " wei " + layout_name(fwd.weights_desc());

  if (activation_) activation_backward_ = fused_activation_backward(*activation_, *top, ctx);

  if (pds.weight_grad_matmul) {
    bww_diff_dst_ = Relayout::input(top->diff, pds.weight_grad_matmul->diff_dst);
    matmul_weight_grad_ = MatmulWeightGrad(*pds.weight_grad_matmul, src_.memory(),
                                           bww_diff_dst_.memory(), weights_->grad, ctx);
    describe_ += " bwd_w matmul " + std::string(pds.weight_grad_matmul->matmul.impl_info_str());
  } else {
    const auto& bww = pds.backward_weights;
    bww_src_ = Relayout::input(src_.memory(), bww.src_desc());
    bww_diff_dst_ = Relayout::input(top->diff, bww.diff_dst_desc());
    diff_weights_ = Relayout::output(bww.diff_weights_desc(), weights_->grad);
    backward_weights_ =
        BoundPrimitive(dnnl::primitive(bww), {{DNNL_ARG_SRC, bww_src_.memory()},
                                              {DNNL_ARG_DIFF_DST, bww_diff_dst_.memory()},
                                              {DNNL_ARG_DIFF_WEIGHTS, diff_weights_.memory()},
                                              {DNNL_ARG_DIFF_BIAS, bias ? bias_->grad : memory()},
                                              {DNNL_ARG_SCRATCHPAD, ctx.scratchpad(bww)}});
    describe_ += " bwd_w " + std::string(bww.impl_info_str());
  }

  const auto& bwd = pds.backward_data;
  if (!bwd) return;
  bwd_weights_ = Relayout::input(fwd_weights_.memory(), bwd.weights_desc());
  bwd_diff_dst_ = Relayout::input(top->diff, bwd.diff_dst_desc());
  diff_src_ = Relayout::output(bwd.diff_src_desc(), bottom.diff);
  backward_data_ =
      BoundPrimitive(dnnl::primitive(bwd), {{DNNL_ARG_DIFF_DST, bwd_diff_dst_.memory()},
                                            {DNNL_ARG_WEIGHTS, bwd_weights_.memory()},
                                            {DNNL_ARG_DIFF_SRC, diff_src_.memory()},
                                            {DNNL_ARG_SCRATCHPAD, ctx.scratchpad(bwd)}});
  describe_ += " bwd_d " + std::string(bwd.impl_info_str());
}

void WeightedLayer::forward(bool) {
  fwd_weights_.run();
  src_.run();
  forward_.run();
}

void WeightedLayer::backward() {
  if (activation_backward_) activation_backward_.run();
  if (backward_data_) {
    bwd_weights_.run();
    bwd_diff_dst_.run();
    backward_data_.run();
    diff_src_.run();
  }
  bww_src_.run();
  bww_diff_dst_.run();
  if (matmul_weight_grad_) {
    matmul_weight_grad_.run();
  } else {
    backward_weights_.run();
    diff_weights_.run();
  }
}

void WeightedLayer::check_convolution(const ConvolutionParam& p, int64_t in_channels) const {
  const int64_t oc = p.num_output(), g = p.group();
  if (oc <= 0) throw UserError(error_prefix() + "convolution.num_output must be > 0");
  if (p.kernel_size() <= 0) throw UserError(error_prefix() + "convolution.kernel_size must be > 0");
  if (p.stride() <= 0 || p.pad() < 0 || p.dilation() <= 0) {
    throw UserError(error_prefix() + "needs stride >= 1, pad >= 0, dilation >= 1");
  }
  if (g <= 0 || in_channels % g != 0 || oc % g != 0) {
    throw UserError(error_prefix() + "group " + std::to_string(g) + " must divide the " +
                    std::to_string(in_channels) + " input and " + std::to_string(oc) +
                    " output channels");
  }
}

}  // namespace dptrain
