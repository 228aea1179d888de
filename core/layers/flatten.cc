// Flatten: {N, C, H, W} in any layout to {N, C*H*W} with the features in
// C, H, W order. The top is a 2-d plain tensor; forward reorders the bottom
// into a 4-d plain view of the top's storage, backward the reverse. (The
// net drops a Flatten in front of an InnerProduct, which reads any layout
// directly.)
#include "core/engine.h"
#include "core/error.h"
#include "core/layer.h"
#include "core/layers/layers.h"
#include "core/primitive.h"

namespace dptrain {
namespace {

using dnnl::memory;

class FlattenLayer : public Layer {
 public:
  using Layer::Layer;

  void setup(const std::vector<Blob*>& bottoms, Blob* top, SetupContext& ctx) override {
    check_bottoms(bottoms, 1);
    Blob& bottom = *bottoms[0];
    const memory::dims in = bottom.dims();
    if (in.size() < 2) {
      throw UserError(error_prefix() + "needs an input with a batch and a feature dimension");
    }
    int64_t features = 1;
    for (size_t i = 1; i < in.size(); ++i) features *= in[i];
    const memory::data_type type = bottom.desc().data_type();
    ctx.define_top(top, plain_desc({in[0], features}, type));
    // The top's storage seen with the bottom's dims.
    const memory::desc unflat = plain_desc(in, type);
    forward_ = make_reorder(bottom.data, ctx.view(top->data, unflat));
    if (bottom.needs_grad) backward_ = make_reorder(ctx.view(top->diff, unflat), bottom.diff);
    describe_ = "reorder " + layout_name(bottom.desc()) + " -> " + layout_name(unflat);
  }

  void forward(bool) override { forward_.run(); }
  void backward() override { backward_.run(); }
  std::string describe() const override { return describe_; }
  bool backward_reads_bottoms() const override { return false; }
  bool backward_reads_top() const override { return false; }

 private:
  BoundPrimitive forward_, backward_;
  std::string describe_;
};

}  // namespace

std::unique_ptr<Layer> make_flatten(const LayerSpec& spec) {
  return std::make_unique<FlattenLayer>(spec);
}

}  // namespace dptrain
