// MaxPool and AvgPool, and their global forms GlobalMaxPool and
// GlobalAvgPool (one kernel over the whole image, no options; for channel
// attention). Max pooling keeps oneDNN's workspace (where each
// maximum came from) from forward for backward; an evaluation forward runs
// the inference primitive, which writes none.
//
// Max pooling whose windows do not overlap runs loops of its own in
// training (max_pool_loops.h): oneDNN's training kernel is 4x its
// inference kernel.
#include "core/engine.h"
#include "core/error.h"
#include "core/layer.h"
#include "core/layers/layers.h"
#include "core/layers/max_pool_loops.h"
#include "core/primitive.h"

namespace dptrain {
namespace {

using dnnl::memory;

class PoolingLayer : public Layer {
 public:
  using Layer::Layer;

  void setup(const std::vector<Blob*>& bottoms, Blob* top, SetupContext& ctx) override {
    check_bottoms(bottoms, 1);
    Blob& bottom = *bottoms[0];
    check_rank(bottom, {4});
    const PoolingParam& p = spec_.pooling();
    const memory::dims in = bottom.dims();
    // Global pooling: one kernel over the whole image, to N x C x 1 x 1.
    const bool global = type().rfind("Global", 0) == 0;
    const int64_t k = global ? 0 : p.kernel_size(),
                  s = global           ? 1
                      : p.has_stride() ? p.stride()
                                       : k,
                  pad = global ? 0 : p.pad();
    if (!global) {
      if (k <= 0) throw UserError(error_prefix() + "pooling.kernel_size must be > 0");
      if (s <= 0 || pad < 0) throw UserError(error_prefix() + "needs stride >= 1 and pad >= 0");
      if (pad * 2 > k) throw UserError(error_prefix() + "pad must be at most half the kernel");
      if (in[2] + 2 * pad < k || in[3] + 2 * pad < k) {
        throw UserError(error_prefix() + "kernel " + std::to_string(k) +
                        " is larger than the input " + std::to_string(in[2]) + "x" +
                        std::to_string(in[3]));
      }
    }
    const memory::dims kernel = global ? memory::dims{in[2], in[3]} : memory::dims{k, k};
    const int64_t oh = (in[2] + 2 * pad - kernel[0]) / s + 1,
                  ow = (in[3] + 2 * pad - kernel[1]) / s + 1;
    const memory::dims pad_r{(oh - 1) * s + kernel[0] - in[2] - pad,
                             (ow - 1) * s + kernel[1] - in[3] - pad};
    dnnl::algorithm algo = dnnl::algorithm::pooling_max;
    if (type() == "AvgPool" || type() == "GlobalAvgPool") {
      algo = p.exclude_padding() ? dnnl::algorithm::pooling_avg_exclude_padding
                                 : dnnl::algorithm::pooling_avg_include_padding;
    }
    if (algo == dnnl::algorithm::pooling_max && !global) {
      if (auto loops = MaxPoolLoops::plan(bottom.desc(), k, s, pad)) {
        setup_loops(bottom, top, ctx, *loops, pad_r);
        return;
      }
    }
    const memory::desc dst_any({in[0], in[1], oh, ow}, bottom.desc().data_type(),
                               memory::format_tag::any);
    dnnl::pooling_forward::primitive_desc fwd_pd({dnnl::prop_kind::forward_training,
                                                  algo,
                                                  bottom.desc(),
                                                  dst_any,
                                                  {s, s},
                                                  kernel,
                                                  {pad, pad},
                                                  pad_r},
                                                 default_attr(), cpu_engine());
    ctx.define_top(top, fwd_pd.dst_desc());
    if (algo == dnnl::algorithm::pooling_max) {
      workspace_ = memory(fwd_pd.workspace_desc(), cpu_engine());
    }
    forward_ = BoundPrimitive(dnnl::pooling_forward(fwd_pd),
                              {{DNNL_ARG_SRC, bottom.data},
                               {DNNL_ARG_DST, top->data},
                               {DNNL_ARG_WORKSPACE, workspace_},
                               {DNNL_ARG_SCRATCHPAD, ctx.scratchpad(fwd_pd)}});
    setup_inference(bottom, top, ctx, algo, fwd_pd.dst_desc(), s, kernel, pad, pad_r);
    describe_ = fwd_pd.impl_info_str();
    if (!bottom.needs_grad) return;
    dnnl::pooling_backward::primitive_desc bwd_pd(
        {algo, bottom.desc(), top->desc(), {s, s}, kernel, {pad, pad}, pad_r}, default_attr(),
        cpu_engine(), fwd_pd);
    diff_src_ = Relayout::output(bwd_pd.diff_src_desc(), bottom.diff);
    backward_ = BoundPrimitive(dnnl::pooling_backward(bwd_pd),
                               {{DNNL_ARG_DIFF_DST, top->diff},
                                {DNNL_ARG_DIFF_SRC, diff_src_.memory()},
                                {DNNL_ARG_WORKSPACE, workspace_},
                                {DNNL_ARG_SCRATCHPAD, ctx.scratchpad(bwd_pd)}});
  }

  void forward(bool training) override {
    if (!training || !loops_) {
      (training ? forward_ : infer_).run();
      return;
    }
    cpu_stream().wait();
    loops_->forward(bottom_data_.get_data_handle(), top_->data.get_data_handle(), where_.data());
  }
  void backward() override {
    if (!loops_) {
      backward_.run();
      diff_src_.run();
      return;
    }
    cpu_stream().wait();
    loops_->backward(top_->diff.get_data_handle(), where_.data(), bottom_diff_.get_data_handle());
  }
  std::string describe() const override { return describe_; }
  // Max pooling's backward needs only the workspace, average pooling nothing.
  bool backward_reads_bottoms() const override { return false; }
  bool backward_reads_top() const override { return false; }

 private:
  // The primitive an evaluation's forward runs; returns its implementation.
  std::string setup_inference(const Blob& bottom, Blob* top, SetupContext& ctx,
                              dnnl::algorithm algo, const memory::desc& dst, int64_t s,
                              const memory::dims& kernel, int64_t pad, const memory::dims& pad_r) {
    dnnl::pooling_forward::primitive_desc pd({dnnl::prop_kind::forward_inference,
                                              algo,
                                              bottom.desc(),
                                              dst,
                                              {s, s},
                                              kernel,
                                              {pad, pad},
                                              pad_r},
                                             default_attr(), cpu_engine());
    infer_ = BoundPrimitive(dnnl::pooling_forward(pd), {{DNNL_ARG_SRC, bottom.data},
                                                        {DNNL_ARG_DST, top->data},
                                                        {DNNL_ARG_SCRATCHPAD, ctx.scratchpad(pd)}});
    return pd.impl_info_str();
  }

  // The loops' set-up, and the inference primitive for evaluation.
  void setup_loops(const Blob& bottom, Blob* top, SetupContext& ctx, const MaxPoolLoops& loops,
                   const memory::dims& pad_r) {
    ctx.define_top(top, loops.dst);
    const std::string inference =
        setup_inference(bottom, top, ctx, dnnl::algorithm::pooling_max, loops.dst, loops.s,
                        {loops.k, loops.k}, loops.pad, pad_r);
    loops_ = loops;
    where_.assign(loops.where_size(), 0);
    bottom_data_ = bottom.data;
    bottom_diff_ = bottom.diff;
    top_ = top;
    describe_ = "loop over " + layout_name(bottom.desc()) + ", " + simd_name(loops.simd) +
                " (inference " + inference + ")";
  }

  std::optional<MaxPoolLoops> loops_;
  std::vector<uint8_t> where_;
  memory bottom_data_, bottom_diff_;
  Blob* top_ = nullptr;
  memory workspace_;
  BoundPrimitive forward_, infer_, backward_;
  Relayout diff_src_;
  std::string describe_;
};

}  // namespace

std::unique_ptr<Layer> make_pooling(const LayerSpec& spec) {
  return std::make_unique<PoolingLayer>(spec);
}

}  // namespace dptrain
