// Deconvolution: the transposed convolution (the gradient of a convolution
// with respect to its input, as a layer), for decoders that upsample.
// Kernel, stride, padding, output padding, dilation and groups, optional
// bias, optional fused activation. Weights are stored as PyTorch's
// ConvTranspose2d and ONNX's ConvTranspose hold them: (in, out / group, k, k).
#include "core/engine.h"
#include "core/error.h"
#include "core/layers/layers.h"
#include "core/layers/weighted_layer.h"

namespace dptrain {
namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

class DeconvolutionLayer : public WeightedLayer {
 public:
  using WeightedLayer::WeightedLayer;

  void setup(const std::vector<Blob*>& bottoms, Blob* top, SetupContext& ctx) override {
    check_bottoms(bottoms, 1);
    Blob& bottom = *bottoms[0];
    check_rank(bottom, {4});
    const ConvolutionParam& p = spec_.convolution();
    const memory::dims in = bottom.dims();
    const int64_t n = in[0], ic = in[1], ih = in[2], iw = in[3];
    const int64_t oc = p.num_output(), k = p.kernel_size(), s = p.stride(), pad = p.pad(),
                  dil = p.dilation(), g = p.group(), out_pad = p.output_pad();
    check_convolution(p, ic);
    if (out_pad < 0 || out_pad > pad || (out_pad >= s && out_pad >= dil)) {
      throw UserError(error_prefix() + "convolution.output_pad " + std::to_string(out_pad) +
                      " must be in [0, pad] and below the stride or the dilation");
    }
    const int64_t span = (k - 1) * dil + 1;
    const int64_t oh = (ih - 1) * s - 2 * pad + span + out_pad;
    const int64_t ow = (iw - 1) * s - 2 * pad + span + out_pad;
    if (oh <= 0 || ow <= 0) {
      throw UserError(error_prefix() + "the padding leaves no output (" + std::to_string(oh) + "x" +
                      std::to_string(ow) + ")");
    }
    // As the convolution whose input gradient this is: the output padding
    // is taken off its right padding.
    const memory::dims strides{s, s}, dilates{dil - 1, dil - 1}, pad_l{pad, pad},
        pad_r{pad - out_pad, pad - out_pad};
    const memory::dims wdims =
        g > 1 ? memory::dims{g, oc / g, ic / g, k, k} : memory::dims{oc, ic, k, k};
    const dt act = ctx.state().compute_type;
    const memory::desc any_src({n, ic, ih, iw}, act, tag::any);
    const memory::desc any_dst({n, oc, oh, ow}, act, tag::any);
    const memory::desc any_w(wdims, act, tag::any);
    const memory::desc any_dw(wdims, dt::f32, tag::any);
    const memory::desc b = p.bias() ? memory::desc({oc}, dt::f32, tag::a) : memory::desc();
    const auto algo = dnnl::algorithm::deconvolution_direct;
    const auto attr = forward_attr();
    auto& eng = cpu_engine();

    using Fwd = dnnl::deconvolution_forward;
    auto fwd_with = [&](const memory::desc& src) {
      return [&, src] {
        return Fwd::primitive_desc(Fwd::desc(dnnl::prop_kind::forward_training, algo, src, any_w, b,
                                             any_dst, strides, dilates, pad_l, pad_r),
                                   attr, eng);
      };
    };
    const auto fwd = act == dt::bf16 ? first_fast<Fwd::primitive_desc>(fwd_with(any_src))
                                     : first_fast<Fwd::primitive_desc>(fwd_with(bottom.desc()),
                                                                       fwd_with(any_src));
    using Bww = dnnl::deconvolution_backward_weights;
    auto bww_with = [&](const memory::desc& src, const memory::desc& w, const memory::desc& dst) {
      return [&, src, w, dst] {
        return Bww::primitive_desc(Bww::desc(algo, src, w, b, dst, strides, dilates, pad_l, pad_r),
                                   default_attr(), eng, fwd);
      };
    };
    const auto bww = first_fast<Bww::primitive_desc>(
        bww_with(fwd.src_desc(), with_type(fwd.weights_desc(), dt::f32), fwd.dst_desc()),
        bww_with(any_src, any_dw, any_dst));
    dnnl::primitive_desc bwd;
    if (bottom.needs_grad) {
      using Bwd = dnnl::deconvolution_backward_data;
      auto bwd_with = [&](const memory::desc& src, const memory::desc& dst) {
        return [&, src, dst] {
          return Bwd::primitive_desc(
              Bwd::desc(algo, src, any_w, dst, strides, dilates, pad_l, pad_r), default_attr(), eng,
              fwd);
        };
      };
      bwd = first_fast<Bwd::primitive_desc>(bwd_with(fwd.src_desc(), fwd.dst_desc()),
                                            bwd_with(any_src, any_dst));
    }
    const ParamInit init{ParamInit::Kind::kRandom, p.weight_init(), ic / g * k * k, oc / g * k * k};
    bind(bottom, top, ctx, {fwd, bww, bwd}, {wdims, dt::f32, g > 1 ? tag::giohw : tag::iohw},
         {ic, oc / g, k, k}, init, p.bias(), n * ih * iw * ic * (oc / g) * k * k);
  }
};

}  // namespace

std::unique_ptr<Layer> make_deconvolution(const LayerSpec& spec) {
  return std::make_unique<DeconvolutionLayer>(spec);
}

}  // namespace dptrain
