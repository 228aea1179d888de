// Mul: the elementwise product of two blobs, one of them broadcast along
// the axes where its size is 1 (numpy's rule), as attention blocks scale a
// feature map by channel weights (N x C x 1 x 1) or a spatial map
// (N x 1 x H x W). One bottom must have the output's shape. Forward is
// oneDNN's binary primitive; backward is too: d full = dy * small
// (broadcast), d small = the sum of dy * full over the broadcast axes
// (binary, then oneDNN's sum reduction).
#include "core/engine.h"
#include "core/error.h"
#include "core/layer.h"
#include "core/layers/channel_blocks.h"
#include "core/layers/layers.h"
#include "core/primitive.h"

namespace dptrain {
namespace {

using dnnl::memory;

class MulLayer : public Layer {
 public:
  using Layer::Layer;

  void setup(const std::vector<Blob*>& bottoms, Blob* top, SetupContext& ctx) override {
    check_bottoms(bottoms, 2);
    if (ctx.state().compute_type != memory::data_type::f32) {
      throw UserError(error_prefix() + "runs on f32 activations only (precision: FP32)");
    }
    Blob* full = bottoms[0];
    Blob* small = bottoms[1];
    const memory::dims a = full->dims(), b = small->dims();
    bool fits = a.size() == b.size();
    bool a_full = fits, b_full = fits;
    for (size_t i = 0; fits && i < a.size(); ++i) {
      fits = a[i] == b[i] || a[i] == 1 || b[i] == 1;
      a_full = a_full && a[i] >= b[i];
      b_full = b_full && b[i] >= a[i];
    }
    if (!fits || (!a_full && !b_full)) {
      throw UserError(error_prefix() + "cannot multiply " + dims_text(a) + " by " + dims_text(b) +
                      ": one must have the other's sizes, or 1, on every axis");
    }
    if (!a_full) std::swap(full, small);
    auto& eng = cpu_engine();
    using Binary = dnnl::binary;
    // The product keeps the full bottom's layout (a channel-blocked feature
    // map stays blocked for the layers after it); the small one is read in
    // its own layout, or plain, whichever oneDNN has a fast kernel for.
    const memory::desc full_md = layout_like(full->desc(), full->dims());
    const memory::desc small_own = layout_like(small->desc(), small->dims());
    const memory::desc small_plain = plain_desc(small->dims());
    auto mul_with = [&](const memory::desc& f, const memory::desc& sm) {
      return [&, f, sm] {
        return Binary::primitive_desc(Binary::desc(dnnl::algorithm::binary_mul, f, sm, f),
                                      default_attr(), eng);
      };
    };
    const auto mul = first_fast<Binary::primitive_desc>(
        mul_with(full_md, small_own), mul_with(full_md, small_plain),
        mul_with(plain_desc(full->dims()), small_plain));
    const memory::desc out_md = mul.dst_desc();
    full_ = Relayout::input(full->data, mul.src_desc(0));
    small_ = Relayout::input(small->data, mul.src_desc(1));
    ctx.define_top(top, out_md);
    forward_ = BoundPrimitive(Binary(mul), {{DNNL_ARG_SRC_0, full_.memory()},
                                            {DNNL_ARG_SRC_1, small_.memory()},
                                            {DNNL_ARG_DST, top->data},
                                            {DNNL_ARG_SCRATCHPAD, ctx.scratchpad(mul)}});
    describe_ = std::string(mul.impl_info_str()) + " " + layout_name(out_md);
    if (full->needs_grad) {
      diff_full_ = Relayout::output(out_md, full->diff);
      backward_full_ = BoundPrimitive(Binary(mul), {{DNNL_ARG_SRC_0, top->diff},
                                                    {DNNL_ARG_SRC_1, small_.memory()},
                                                    {DNNL_ARG_DST, diff_full_.memory()},
                                                    {DNNL_ARG_SCRATCHPAD, ctx.scratchpad(mul)}});
    }
    if (small->needs_grad) {
      const Binary::primitive_desc product(
          Binary::desc(dnnl::algorithm::binary_mul, out_md, out_md, out_md), default_attr(), eng);
      product_ = memory(out_md, eng);
      backward_product_ =
          BoundPrimitive(Binary(product), {{DNNL_ARG_SRC_0, top->diff},
                                           {DNNL_ARG_SRC_1, full_.memory()},
                                           {DNNL_ARG_DST, product_},
                                           {DNNL_ARG_SCRATCHPAD, ctx.scratchpad(product)}});
      setup_small_gradient(full->dims(), small, ctx);
    }
  }

  void forward(bool) override {
    full_.run();
    small_.run();
    forward_.run();
  }

  void backward() override {
    if (backward_full_) {
      backward_full_.run();
      diff_full_.run();
    }
    if (backward_product_) {
      backward_product_.run();
      if (move_product_) move_product_.run();
      if (backward_sum_) {
        backward_sum_.run();
      } else {
        cpu_stream().wait();
        const memory& product = move_product_ ? product_moved_ : product_;
        sum_over_channels(channel_sum_, static_cast<const float*>(product.get_data_handle()),
                          static_cast<float*>(diff_small_.memory().get_data_handle()), 1.f);
      }
      diff_small_.run();
    }
  }

  std::string describe() const override { return describe_; }
  bool backward_reads_top() const override { return false; }

 private:
  // d small: product_ (dy * full) summed over the broadcast axes.
  void setup_small_gradient(const memory::dims& f, Blob* small, SetupContext& ctx) {
    auto& eng = cpu_engine();
    const memory::dims sm = small->dims();
    if (f.size() == 4 && sm[1] == 1 && f[1] > 1 && sm[2] == f[2] && sm[3] == f[3]) {
      // A sum over the channels: a loop (channel_blocks.h), on the product
      // in its own layout when the loop reads that one.
      const memory::desc loop = channel_loop_layout(product_.get_desc());
      if (loop != product_.get_desc()) {
        product_moved_ = memory(loop, eng);
        move_product_ = make_reorder(product_, product_moved_);
      }
      channel_sum_ = channel_blocks(loop);
      diff_small_ = Relayout::output(plain_desc(sm), small->diff);
      describe_ += " bwd sum loop over " + layout_name(loop);
      return;
    }
    // Other broadcasts (a channel gate's N x C x 1 x 1) reduce the product
    // in its own layout where that has a fast kernel, else in plain.
    using Reduction = dnnl::reduction;
    auto sum_of = [&](const memory::desc& src, const memory::desc& dst) {
      return [&, src, dst] {
        return Reduction::primitive_desc(
            Reduction::desc(dnnl::algorithm::reduction_sum, src, dst, 0.f, 0.f), default_attr(),
            eng);
      };
    };
    const auto sum = first_fast<Reduction::primitive_desc>(
        sum_of(product_.get_desc(), layout_like(product_.get_desc(), sm)),
        sum_of(plain_desc(f), plain_desc(sm)));
    memory sum_src = product_;
    if (sum.src_desc() != product_.get_desc()) {
      product_moved_ = memory(sum.src_desc(), eng);
      move_product_ = make_reorder(product_, product_moved_);
      sum_src = product_moved_;
    }
    diff_small_ = Relayout::output(sum.dst_desc(), small->diff);
    backward_sum_ = BoundPrimitive(Reduction(sum), {{DNNL_ARG_SRC, sum_src},
                                                    {DNNL_ARG_DST, diff_small_.memory()},
                                                    {DNNL_ARG_SCRATCHPAD, ctx.scratchpad(sum)}});
    describe_ += " bwd sum " + std::string(sum.impl_info_str());
  }

  Relayout full_, small_, diff_full_, diff_small_;
  memory product_, product_moved_;
  ChannelBlocks channel_sum_;  // the channel sum's loop, when it runs one
  BoundPrimitive forward_, backward_full_, backward_product_, move_product_, backward_sum_;
  std::string describe_;
};

}  // namespace

std::unique_ptr<Layer> make_mul(const LayerSpec& spec) { return std::make_unique<MulLayer>(spec); }

}  // namespace dptrain
