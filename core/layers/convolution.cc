// Convolution: kernel, stride, padding, dilation and groups (group ==
// channels is depthwise), optional bias, optional fused activation.
#include "core/engine.h"
#include "core/error.h"
#include "core/layers/layers.h"
#include "core/layers/weighted_layer.h"

namespace dptrain {
namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

class ConvolutionLayer : public WeightedLayer {
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
                  dil = p.dilation(), g = p.group();
    check_convolution(p, ic);
    const int64_t span = (k - 1) * dil + 1;
    if (ih + 2 * pad < span || iw + 2 * pad < span) {
      throw UserError(error_prefix() + "kernel span " + std::to_string(span) +
                      " is larger than the padded input " + std::to_string(ih + 2 * pad) + "x" +
                      std::to_string(iw + 2 * pad));
    }
    const int64_t oh = (ih + 2 * pad - span) / s + 1, ow = (iw + 2 * pad - span) / s + 1;
    const memory::dims strides{s, s}, dilates{dil - 1, dil - 1}, pad_l{pad, pad};
    // Right padding that makes the output size exact when the stride does
    // not divide the input (the last rows are dropped, as in PyTorch).
    const memory::dims pad_r{(oh - 1) * s + span - ih - pad, (ow - 1) * s + span - iw - pad};
    const memory::dims wdims =
        g > 1 ? memory::dims{g, oc / g, ic / g, k, k} : memory::dims{oc, ic, k, k};
    const dt act = ctx.state().compute_type;
    const memory::desc any_src({n, ic, ih, iw}, act, tag::any);
    const memory::desc any_dst({n, oc, oh, ow}, act, tag::any);
    const memory::desc any_w(wdims, act, tag::any);
    // Weight gradients are f32 whatever the activations: they are reduced
    // and applied to the f32 master weights.
    const memory::desc any_dw(wdims, dt::f32, tag::any);
    const memory::desc b = p.bias() ? memory::desc({oc}, dt::f32, tag::a) : memory::desc();
    const auto attr = forward_attr();
    auto& eng = cpu_engine();
    using alg = dnnl::algorithm;
    const alg direct = alg::convolution_direct, winograd = alg::convolution_winograd;
    // Winograd pads channels to its block of 16: with VGG's 3 input
    // channels it was 8x slower than direct.
    const bool try_winograd = ctx.state().winograd && act == dt::f32 && k == 3 && s == 1 &&
                              dil == 1 && g == 1 && ic % 16 == 0 && oc % 16 == 0;

    // Prefer the layouts already in play (the bottom's for the input, the
    // forward's for backward) so that no reorder runs per step; Winograd
    // before direct where asked for, each pass falling back on its own.
    using Fwd = dnnl::convolution_forward;
    auto fwd_with = [&](alg algo, const memory::desc& src) {
      return [&, algo, src] {
        return Fwd::primitive_desc({dnnl::prop_kind::forward_training, algo, src, any_w, b, any_dst,
                                    strides, dilates, pad_l, pad_r},
                                   attr, eng);
      };
    };
    // In bf16 oneDNN's AMX kernels want channels-last, which only a free
    // choice of layout gets: offered the bottom's blocked layout, it takes
    // an AVX512-BF16 kernel slower than fp32's (convbn_fmnist's conv2: 13x).
    const alg asked = try_winograd ? winograd : direct;
    const auto fwd = act == dt::bf16
                         ? first_fast<Fwd::primitive_desc>(fwd_with(direct, any_src))
                         : first_fast<Fwd::primitive_desc>(
                               fwd_with(asked, bottom.desc()), fwd_with(asked, any_src),
                               fwd_with(direct, bottom.desc()), fwd_with(direct, any_src));
    // The backward passes try Winograd only where the forward got it.
    const alg first =
        std::string(fwd.impl_info_str()).find("wino") != std::string::npos ? winograd : direct;

    using Bww = dnnl::convolution_backward_weights;
    auto bww_with = [&](alg algo, const memory::desc& src, const memory::desc& w,
                        const memory::desc& dst) {
      return [&, algo, src, w, dst] {
        return Bww::primitive_desc({algo, src, w, b, dst, strides, dilates, pad_l, pad_r},
                                   default_attr(), eng, fwd);
      };
    };
    // With few input channels, AVX2's channel-blocked kernel wastes most of
    // its work on padding, and its channels-last one is the fast one.
    // AVX-512's blocked kernel is fast for them too, and reading the
    // gradient in the forward's layout saves a reorder (LeNet's step 14%
    // faster than through channels-last, convbn's 6%).
    const memory::desc nhwc_src({n, ic, ih, iw}, act, tag::nhwc);
    const memory::desc nhwc_dst({n, oc, oh, ow}, act, tag::nhwc);
    const bool few_channels = ic / g < 8 && !has_avx512_core();
    const memory::desc fwd_dw = with_type(fwd.weights_desc(), dt::f32);
    // The weight gradient as a matmul (matmul_weight_grad.h): for 1x1
    // convolutions without padding, and strided ones of 256 channels or
    // more, whose patches a gather costs less than oneDNN's kernel loses
    // (ResNet-50's strided 3x3 layers, bf16 on AMX: 512 channels at 14x14
    // 35 -> 21 ms a backward, 256 at 28x28 21 -> 18; 128 at 56x56 18 -> 28).
    const bool as_matmul =
        g == 1 && dil == 1 && !p.bias() && ((k == 1 && pad == 0) || (s > 1 && ic >= 256));
    const auto weight_grad_matmul =
        as_matmul ? MatmulWeightGrad::plan(fwd.src_desc(), fwd.dst_desc(), k, s, pad)
                  : std::nullopt;
    const auto bww = weight_grad_matmul ? Bww::primitive_desc()
                     : few_channels     ? first_fast<Bww::primitive_desc>(
                                          bww_with(direct, nhwc_src, any_dw, nhwc_dst),
                                          bww_with(direct, fwd.src_desc(), fwd_dw, fwd.dst_desc()),
                                          bww_with(direct, any_src, any_dw, any_dst))
                                    : first_fast<Bww::primitive_desc>(
                                          bww_with(first, fwd.src_desc(), fwd_dw, fwd.dst_desc()),
                                          bww_with(first, any_src, any_dw, any_dst),
                                          bww_with(direct, fwd.src_desc(), fwd_dw, fwd.dst_desc()),
                                          bww_with(direct, any_src, any_dw, any_dst));

    dnnl::primitive_desc bwd;
    if (bottom.needs_grad) {
      using Bwd = dnnl::convolution_backward_data;
      auto bwd_with = [&](alg algo, const memory::desc& src, const memory::desc& dst) {
        return [&, algo, src, dst] {
          return Bwd::primitive_desc({algo, src, any_w, dst, strides, dilates, pad_l, pad_r},
                                     default_attr(), eng, fwd);
        };
      };
      // (bf16: the forward's own layouts, the ones AMX took.)
      const memory::desc& grad_src = act == dt::bf16 ? fwd.src_desc() : bottom.desc();
      bwd = first_fast<Bwd::primitive_desc>(
          bwd_with(first, grad_src, fwd.dst_desc()), bwd_with(first, any_src, any_dst),
          bwd_with(direct, grad_src, fwd.dst_desc()), bwd_with(direct, any_src, any_dst));
    }
    const ParamInit init{ParamInit::Kind::kRandom, p.weight_init(), ic / g * k * k, oc / g * k * k};
    bind(bottom, top, ctx, {fwd, bww, bwd, weight_grad_matmul},
         {wdims, dt::f32, g > 1 ? tag::goihw : tag::oihw}, {oc, ic / g, k, k}, init, p.bias(),
         n * oh * ow * oc * (ic / g) * k * k);
  }
};

}  // namespace

std::unique_ptr<Layer> make_convolution(const LayerSpec& spec) {
  return std::make_unique<ConvolutionLayer>(spec);
}

}  // namespace dptrain
