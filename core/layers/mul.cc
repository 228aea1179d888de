// Mul: the elementwise product of two blobs, one of them broadcast along
// the axes where its size is 1 (numpy's rule), as attention blocks scale a
// feature map by channel weights (N x C x 1 x 1) or a spatial map
// (N x 1 x H x W). One bottom must have the output's shape. Forward is
// oneDNN's binary primitive; backward is too: d full = dy * small
// (broadcast), d small = the sum of dy * full over the broadcast axes
// (binary, then oneDNN's sum reduction). Plain layouts throughout.
#include "core/engine.h"
#include "core/error.h"
#include "core/layer.h"
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
    const memory::desc full_md = plain_desc(full->dims()), small_md = plain_desc(small->dims());
    full_ = Relayout::input(full->data, full_md);
    small_ = Relayout::input(small->data, small_md);
    ctx.define_top(top, full_md);
    auto& eng = cpu_engine();
    using Binary = dnnl::binary;
    const Binary::primitive_desc mul(
        Binary::desc(dnnl::algorithm::binary_mul, full_md, small_md, full_md), default_attr(), eng);
    forward_ = BoundPrimitive(Binary(mul), {{DNNL_ARG_SRC_0, full_.memory()},
                                            {DNNL_ARG_SRC_1, small_.memory()},
                                            {DNNL_ARG_DST, top->data},
                                            {DNNL_ARG_SCRATCHPAD, ctx.scratchpad(mul)}});
    describe_ = mul.impl_info_str();
    if (full->needs_grad) {
      diff_full_ = Relayout::output(full_md, full->diff);
      backward_full_ = BoundPrimitive(Binary(mul), {{DNNL_ARG_SRC_0, top->diff},
                                                    {DNNL_ARG_SRC_1, small_.memory()},
                                                    {DNNL_ARG_DST, diff_full_.memory()},
                                                    {DNNL_ARG_SCRATCHPAD, ctx.scratchpad(mul)}});
    }
    if (small->needs_grad) {
      const Binary::primitive_desc product(
          Binary::desc(dnnl::algorithm::binary_mul, full_md, full_md, full_md), default_attr(),
          eng);
      product_ = memory(full_md, eng);
      backward_product_ =
          BoundPrimitive(Binary(product), {{DNNL_ARG_SRC_0, top->diff},
                                           {DNNL_ARG_SRC_1, full_.memory()},
                                           {DNNL_ARG_DST, product_},
                                           {DNNL_ARG_SCRATCHPAD, ctx.scratchpad(product)}});
      diff_small_ = Relayout::output(small_md, small->diff);
      const memory::dims f = full->dims(), sm = small->dims();
      memory sum_src = product_;
      memory::desc sum_src_md = full_md, sum_dst_md = small_md;
      memory sum_dst = diff_small_.memory();
      if (f.size() == 4 && sm[1] == 1 && f[1] > 1 && sm[2] == f[2] && sm[3] == f[3]) {
        // A sum over the channels: oneDNN 2.6's optimized reductions sum
        // innermost dimensions only, so the product goes channels-last and
        // is summed as an N x H x W x C tensor (N x H x W x 1 is the
        // N x 1 x H x W gradient's bytes).
        using tag = memory::format_tag;
        product_last_ = memory(memory::desc(f, memory::data_type::f32, tag::nhwc), eng);
        to_last_ = make_reorder(product_, product_last_);
        sum_src_md = memory::desc({f[0], f[2], f[3], f[1]}, memory::data_type::f32, tag::abcd);
        sum_dst_md = memory::desc({f[0], f[2], f[3], 1}, memory::data_type::f32, tag::abcd);
        sum_src = ctx.view(product_last_, sum_src_md);
        sum_dst = ctx.view(diff_small_.memory(), sum_dst_md);
      }
      const dnnl::reduction::primitive_desc sum(
          dnnl::reduction::desc(dnnl::algorithm::reduction_sum, sum_src_md, sum_dst_md, 0.f, 0.f),
          default_attr(), eng);
      backward_sum_ =
          BoundPrimitive(dnnl::reduction(sum), {{DNNL_ARG_SRC, sum_src},
                                                {DNNL_ARG_DST, sum_dst},
                                                {DNNL_ARG_SCRATCHPAD, ctx.scratchpad(sum)}});
      describe_ += " bwd sum " + std::string(sum.impl_info_str());
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
      if (to_last_) to_last_.run();
      backward_sum_.run();
      diff_small_.run();
    }
  }

  std::string describe() const override { return describe_; }
  bool backward_reads_top() const override { return false; }

 private:
  Relayout full_, small_, diff_full_, diff_small_;
  memory product_, product_last_;
  BoundPrimitive forward_, backward_full_, backward_product_, to_last_, backward_sum_;
  std::string describe_;
};

}  // namespace

std::unique_ptr<Layer> make_mul(const LayerSpec& spec) { return std::make_unique<MulLayer>(spec); }

}  // namespace dptrain
