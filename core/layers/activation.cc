// ReLU, LeakyReLU, ELU, Sigmoid, Tanh as a layer of their own (when they
// cannot be fused into the layer before). Backward uses the output only.
#include "core/engine.h"
#include "core/layer.h"
#include "core/layers/layers.h"
#include "core/primitive.h"

namespace dptrain {
namespace {

class ActivationLayer : public Layer {
 public:
  using Layer::Layer;

  void setup(const std::vector<Blob*>& bottoms, Blob* top, SetupContext& ctx) override {
    check_bottoms(bottoms, 1);
    Blob& bottom = *bottoms[0];
    const Activation act = *activation_of(spec_);
    dnnl::eltwise_forward::primitive_desc fwd_pd(
        {dnnl::prop_kind::forward_training, act.backward, bottom.desc(), act.alpha, 0.f},
        default_attr(), cpu_engine());
    ctx.define_top(top, fwd_pd.dst_desc());
    forward_ = BoundPrimitive(dnnl::eltwise_forward(fwd_pd),
                              {{DNNL_ARG_SRC, bottom.data},
                               {DNNL_ARG_DST, top->data},
                               {DNNL_ARG_SCRATCHPAD, ctx.scratchpad(fwd_pd)}});
    if (!bottom.needs_grad) return;
    dnnl::eltwise_backward::primitive_desc bwd_pd(
        {act.backward, top->desc(), top->desc(), act.alpha, 0.f}, default_attr(), cpu_engine(),
        fwd_pd);
    diff_src_ = Relayout::output(bwd_pd.diff_src_desc(), bottom.diff);
    backward_ = BoundPrimitive(dnnl::eltwise_backward(bwd_pd),
                               {{DNNL_ARG_DST, top->data},
                                {DNNL_ARG_DIFF_DST, top->diff},
                                {DNNL_ARG_DIFF_SRC, diff_src_.memory()},
                                {DNNL_ARG_SCRATCHPAD, ctx.scratchpad(bwd_pd)}});
  }

  void forward(bool) override { forward_.run(); }
  bool backward_reads_bottoms() const override { return false; }  // the output suffices
  void backward() override {
    backward_.run();
    diff_src_.run();
  }

 private:
  BoundPrimitive forward_, backward_;
  Relayout diff_src_;
};

}  // namespace

std::unique_ptr<Layer> make_activation(const LayerSpec& spec) {
  return std::make_unique<ActivationLayer>(spec);
}

}  // namespace dptrain
