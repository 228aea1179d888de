// InnerProduct (fully connected). Reads a 2-d input, or a 4-d one in any
// layout directly, so a Flatten in front of it costs nothing; its weights
// are exported as {outputs, inputs} with inputs in C,H,W order.
#include "core/engine.h"
#include "core/error.h"
#include "core/layers/layers.h"
#include "core/layers/weighted_layer.h"

namespace dptrain {
namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

class InnerProductLayer : public WeightedLayer {
 public:
  using WeightedLayer::WeightedLayer;

  void setup(const std::vector<Blob*>& bottoms, Blob* top, SetupContext& ctx) override {
    check_bottoms(bottoms, 1);
    Blob& bottom = *bottoms[0];
    check_rank(bottom, {2, 4});
    const InnerProductParam& p = spec_.inner_product();
    const int64_t oc = p.num_output();
    if (oc <= 0) throw UserError(error_prefix() + "inner_product.num_output must be > 0");
    const memory::dims in = bottom.dims();
    int64_t inputs = 1;
    std::string shape;
    for (size_t i = 1; i < in.size(); ++i) {
      inputs *= in[i];
      shape += (shape.empty() ? "" : "x") + std::to_string(in[i]);
    }
    if (p.has_num_input() && p.num_input() != inputs) {
      throw UserError(error_prefix() + "expects " + std::to_string(p.num_input()) +
                      " inputs (inner_product.num_input) but '" + bottom.name + "' has " +
                      std::to_string(inputs) + " (" + shape + ")");
    }
    memory::dims wdims = in;
    wdims[0] = oc;
    const dt act = ctx.state().compute_type;
    const memory::desc any_src(in, act, tag::any);
    const memory::desc any_w(wdims, act, tag::any);
    const memory::desc any_dw(wdims, dt::f32, tag::any);  // f32, as the master weights
    const memory::desc any_dst({in[0], oc}, act, tag::any);
    const memory::desc b = p.bias() ? memory::desc({oc}, dt::f32, tag::a) : memory::desc();
    const auto attr = forward_attr();
    auto& eng = cpu_engine();

    using Fwd = dnnl::inner_product_forward;
    auto fwd_with = [&](const memory::desc& src) {
      return [&, src] {
        return Fwd::primitive_desc({dnnl::prop_kind::forward_training, src, any_w, b, any_dst},
                                   attr, eng);
      };
    };
    const auto fwd = first_fast<Fwd::primitive_desc>(fwd_with(bottom.desc()), fwd_with(any_src));

    using Bww = dnnl::inner_product_backward_weights;
    auto bww_with = [&](const memory::desc& src, const memory::desc& w, const memory::desc& dst) {
      return [&, src, w, dst] {
        return Bww::primitive_desc({src, w, b, dst}, default_attr(), eng, fwd);
      };
    };
    const auto bww = first_fast<Bww::primitive_desc>(
        bww_with(fwd.src_desc(), with_type(fwd.weights_desc(), dt::f32), fwd.dst_desc()),
        bww_with(any_src, any_dw, any_dst));

    dnnl::primitive_desc bwd;
    if (bottom.needs_grad) {
      using Bwd = dnnl::inner_product_backward_data;
      auto bwd_with = [&](const memory::desc& src, const memory::desc& w) {
        return [&, src, w] {
          return Bwd::primitive_desc({src, w, fwd.dst_desc()}, default_attr(), eng, fwd);
        };
      };
      bwd = first_fast<Bwd::primitive_desc>(bwd_with(bottom.desc(), fwd.weights_desc()),
                                            bwd_with(any_src, any_w));
    }
    const ParamInit init{ParamInit::Kind::kRandom, p.weight_init(), inputs, oc};
    bind(bottom, top, ctx, {fwd, bww, bwd}, {wdims, dt::f32, in.size() == 4 ? tag::oihw : tag::oi},
         {oc, inputs}, init, p.bias(), in[0] * inputs * oc);
  }
};

}  // namespace

std::unique_ptr<Layer> make_inner_product(const LayerSpec& spec) {
  return std::make_unique<InnerProductLayer>(spec);
}

}  // namespace dptrain
