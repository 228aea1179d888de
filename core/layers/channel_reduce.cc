// ChannelMean and ChannelMax: each pixel's mean or maximum over the
// channels, N x C x H x W to N x 1 x H x W (CBAM's spatial attention reads
// both). Both directions are loops over each pixel's channels
// (channel_blocks.h: oneDNN 2.6's reduction is slow at this, and it has no
// backward): the mean spreads dy / C over the channels, the maximum routes
// dy to the first channel holding it.
#include "core/engine.h"
#include "core/error.h"
#include "core/layer.h"
#include "core/layers/channel_blocks.h"
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
    max_ = type() == "ChannelMax";
    const memory::desc src = channel_loop_layout(bottom.desc());
    blocks_ = channel_blocks(src);
    src_ = Relayout::input(bottom.data, src);
    ctx.define_top(top, plain_desc({in[0], 1, in[2], in[3]}));
    top_ = top;
    if (bottom.needs_grad) diff_src_ = Relayout::output(src, bottom.diff);
  }

  void forward(bool) override {
    src_.run();
    cpu_stream().wait();
    const float* x = static_cast<const float*>(src_.memory().get_data_handle());
    float* y = top_->data_ptr();
    if (max_) {
      max_over_channels(blocks_, x, y);
    } else {
      sum_over_channels(blocks_, x, y, 1.f / static_cast<float>(blocks_.channels));
    }
  }

  void backward() override {
    cpu_stream().wait();
    const float* x = static_cast<const float*>(src_.memory().get_data_handle());
    const float* y = top_->data_ptr();
    const float* dy = top_->diff_ptr();
    float* dx = static_cast<float*>(diff_src_.memory().get_data_handle());
    const ChannelBlocks c = blocks_;
    const float inv = 1.f / static_cast<float>(c.channels);
    {
      KernelTimer timer;
#pragma omp parallel for collapse(2) schedule(static)
      for (int64_t n = 0; n < c.samples; ++n) {
        for (int64_t p = 0; p < c.pixels; ++p) {
          const float g = dy[n * c.pixels + p], top = y[n * c.pixels + p];
          bool routed = false;
          for (int64_t b = 0; b < c.blocks; ++b) {
            const float* v = x + c.at(n, b, p);
            float* d = dx + c.at(n, b, p);
            const int64_t w = c.width(b);
            for (int64_t i = 0; i < c.block; ++i) {
              if (i >= w) {
                d[i] = 0.f;  // a padded block's lanes
              } else if (!max_) {
                d[i] = g * inv;
              } else {
                const bool here = !routed && v[i] == top;
                d[i] = here ? g : 0.f;
                routed = routed || here;
              }
            }
          }
        }
      }
    }
    diff_src_.run();
  }

  std::string describe() const override {
    return "loop over " + layout_name(src_.memory().get_desc());
  }
  bool backward_reads_bottoms() const override { return max_; }
  bool backward_reads_top() const override { return max_; }

 private:
  bool max_ = false;
  ChannelBlocks blocks_;
  const Blob* top_ = nullptr;
  Relayout src_, diff_src_;
};

}  // namespace

std::unique_ptr<Layer> make_channel_reduce(const LayerSpec& spec) {
  return std::make_unique<ChannelReduceLayer>(spec);
}

}  // namespace dptrain
