// ChannelMean and ChannelMax: each pixel's mean or maximum over the
// channels, N x C x H x W to N x 1 x H x W (CBAM's spatial attention reads
// both). Forward is oneDNN's reduction primitive, whose optimized kernels
// in 2.6 reduce only the innermost dimensions: the input is brought to
// channels-last and reduced as an N x H x W x C tensor (its bytes), which
// leaves exactly the N x 1 x H x W output. Backward is written here (oneDNN
// 2.6 has no backward reduction): the mean spreads dy / C over the
// channels, the maximum routes dy to the first channel holding it.
#include "core/engine.h"
#include "core/error.h"
#include "core/layer.h"
#include "core/layers/layers.h"
#include "core/primitive.h"

namespace dptrain {
namespace {

using dnnl::memory;

class ChannelReduceLayer : public Layer {
 public:
  using Layer::Layer;

  void setup(const std::vector<Blob*>& bottoms, Blob* top, SetupContext& ctx) override {
    check_bottoms(bottoms, 1);
    Blob& bottom = *bottoms[0];
    check_rank(bottom, {4});
    if (ctx.state().compute_type != memory::data_type::f32) {
      throw UserError(error_prefix() + "runs on f32 activations only (precision: FP32)");
    }
    const memory::dims in = bottom.dims();
    n_ = in[0], c_ = in[1], hw_ = in[2] * in[3];
    max_ = type() == "ChannelMax";
    using tag = memory::format_tag;
    const memory::desc src(in, memory::data_type::f32, tag::nhwc),
        dst = plain_desc({in[0], 1, in[2], in[3]});
    src_ = Relayout::input(bottom.data, src);
    ctx.define_top(top, dst);
    top_ = top;
    const memory::desc last({in[0], in[2], in[3], in[1]}, memory::data_type::f32, tag::abcd),
        last_dst({in[0], in[2], in[3], 1}, memory::data_type::f32, tag::abcd);
    const dnnl::reduction::primitive_desc pd(
        dnnl::reduction::desc(
            max_ ? dnnl::algorithm::reduction_max : dnnl::algorithm::reduction_mean, last, last_dst,
            0.f, 0.f),
        default_attr(), cpu_engine());
    forward_ = BoundPrimitive(dnnl::reduction(pd), {{DNNL_ARG_SRC, ctx.view(src_.memory(), last)},
                                                    {DNNL_ARG_DST, ctx.view(top->data, last_dst)},
                                                    {DNNL_ARG_SCRATCHPAD, ctx.scratchpad(pd)}});
    describe_ = pd.impl_info_str();
    if (bottom.needs_grad) diff_src_ = Relayout::output(src, bottom.diff);
  }

  void forward(bool) override {
    src_.run();
    forward_.run();
  }

  void backward() override {
    cpu_stream().wait();
    const float* x = static_cast<const float*>(src_.memory().get_data_handle());
    const float* y = top_->data_ptr();
    const float* dy = top_->diff_ptr();
    float* dx = static_cast<float*>(diff_src_.memory().get_data_handle());
    const int64_t c_count = c_, hw = hw_;
    const float inv = 1.f / static_cast<float>(c_count);
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t n = 0; n < n_; ++n) {
      for (int64_t p = 0; p < hw; ++p) {
        const float g = dy[n * hw + p];
        bool routed = false;
        for (int64_t c = 0; c < c_count; ++c) {
          const int64_t at = (n * hw + p) * c_count + c;  // channels-last
          if (!max_) {
            dx[at] = g * inv;
          } else {
            const bool here = !routed && x[at] == y[n * hw + p];
            dx[at] = here ? g : 0.f;
            routed = routed || here;
          }
        }
      }
    }
    diff_src_.run();
  }

  std::string describe() const override { return describe_; }
  bool backward_reads_bottoms() const override { return max_; }
  bool backward_reads_top() const override { return max_; }

 private:
  bool max_ = false;
  int64_t n_ = 0, c_ = 0, hw_ = 0;
  const Blob* top_ = nullptr;
  Relayout src_, diff_src_;
  BoundPrimitive forward_;
  std::string describe_;
};

}  // namespace

std::unique_ptr<Layer> make_channel_reduce(const LayerSpec& spec) {
  return std::make_unique<ChannelReduceLayer>(spec);
}

}  // namespace dptrain
