// Where one blob feeds several layers, the net gives each reader its own
// branch: a Split whose top shares the blob's storage. The first branch's
// gradient is the blob's own (its reader's backward writes the blob's
// gradient); in backward, which runs every reader before any Split (they
// all follow the producer), each other branch adds its gradient to it, or
// leaves that to the producer where it offers to (Blob::branch_gradients).
#include "core/engine.h"
#include "core/layer.h"
#include "core/layers/layers.h"
#include "core/primitive.h"

namespace dptrain {
namespace {

class SplitLayer : public Layer {
 public:
  using Layer::Layer;

  void setup(const std::vector<Blob*>& bottoms, Blob* top, SetupContext& ctx) override {
    bottom_ = bottoms[0];
    branch_ = bottom_->split_branches++;
    ctx.share_top(top, *bottom_, branch_ == 0);
    top->gradient_shareable = branch_ != 0;
    if (!bottom_->needs_grad || branch_ == 0 || !top->diff) return;
    if (bottom_->producer_sums_branches) {
      bottom_->branch_gradients.push_back(top->diff);
      return;
    }
    dnnl::primitive_attr accumulate = default_attr();
    dnnl::post_ops ops;
    ops.append_sum(1.f);
    accumulate.set_post_ops(ops);
    dnnl::reorder::primitive_desc pd(top->diff, bottom_->diff, accumulate);
    add_ = BoundPrimitive(dnnl::reorder(pd), {{DNNL_ARG_FROM, top->diff},
                                              {DNNL_ARG_TO, bottom_->diff},
                                              {DNNL_ARG_SCRATCHPAD, ctx.scratchpad(pd)}});
  }

  void forward(bool) override {}
  bool backward_reads_bottoms() const override { return false; }
  bool backward_reads_top() const override { return false; }
  void backward() override {
    if (add_) add_.run();
  }

 private:
  Blob* bottom_ = nullptr;
  int branch_ = 0;
  BoundPrimitive add_;
};

}  // namespace

std::unique_ptr<Layer> make_split(const LayerSpec& spec) {
  return std::make_unique<SplitLayer>(spec);
}

}  // namespace dptrain
