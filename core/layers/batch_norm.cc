// BatchNorm: oneDNN batch normalization with a learned per-channel scale
// and shift, running statistics for evaluation (PyTorch's rule: momentum is
// the weight of the current batch, running_var takes the unbiased batch
// variance), and an optional fused ReLU. Over channels-last tensors (bf16
// on AMX) loops of our own run it instead (batch_norm_loops.h), 1.4x as
// fast as oneDNN's kernel there.
//
// Synchronized BatchNorm (batch_norm.sync) normalizes with the statistics
// of the global batch: forward sums per-channel sums and sums of squares
// over the replicas and runs the primitive with those as given statistics;
// backward is computed by hand (oneDNN has no cross-replica variant): the
// per-channel sums of dy and dy * xhat in double over the replicas, which
// are the scale and shift gradients and give the input gradient its
// batch-statistics correction. It takes this path on one replica
// too, so that one process computes exactly what N replicas do: oneDNN's own
// statistics are summed in float and differ from these (summed in double)
// by about 1e-4 on large batches.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <type_traits>
#include <vector>

#include "core/engine.h"
#include "core/error.h"
#include "core/layer.h"
#include "core/layers/batch_norm_loops.h"
#include "core/layers/layers.h"
#include "core/primitive.h"

namespace dptrain {
namespace {

using dnnl::memory;
using dt = memory::data_type;
using tag = memory::format_tag;

constexpr int64_t kMaxBlock = 16;

// Walks a 2-d or 4-d tensor in the layouts batch normalization runs on,
// plain in any dimension order or blocked over channels (nChw8c, nChw16c),
// a group of channels at a time: the channels of one block, which lie
// side by side in memory, or one channel of a plain layout.
class ChannelGroups {
 public:
  ChannelGroups() = default;
  explicit ChannelGroups(const memory::desc& md) {
    const dnnl_memory_desc_t& d = md.data;
    const auto& blk = d.format_desc.blocking;
    const bool channel_blocks_only =
        blk.inner_nblks == 0 || (blk.inner_nblks == 1 && blk.inner_idxs[0] == 1);
    block_ = blk.inner_nblks == 1 ? blk.inner_blks[0] : 1;
    if (d.format_kind != dnnl_blocked || !channel_blocks_only || block_ > kMaxBlock ||
        (d.ndims != 2 && d.ndims != 4)) {
      throw std::logic_error("synchronized BatchNorm: unsupported layout " + layout_name(md));
    }
    n_ = d.dims[0];
    channels_ = d.dims[1];
    offset0_ = d.offset0;
    stride_n_ = blk.strides[0];
    stride_group_ = blk.strides[1];
    if (d.ndims == 4) {
      h_ = d.dims[2];
      w_ = d.dims[3];
      stride_h_ = blk.strides[2];
      stride_w_ = blk.strides[3];
    }
  }

  int64_t groups() const { return (channels_ + block_ - 1) / block_; }
  int64_t first_channel(int64_t g) const { return g * block_; }
  int64_t lanes(int64_t g) const { return std::min(block_, channels_ - g * block_); }

  // Calls f(at, lanes) for every position (n, h, w) of group g: the
  // group's channels there are at buffer indices at .. at + lanes - 1. Full
  // blocks pass `lanes` as a compile-time constant, so that loops over the
  // lanes vectorize.
  template <class F>
  void for_each(int64_t g, F&& f) const {
    switch (lanes(g)) {
      case 1:
        return walk(g, f, std::integral_constant<int64_t, 1>());
      case 8:
        return walk(g, f, std::integral_constant<int64_t, 8>());
      case 16:
        return walk(g, f, std::integral_constant<int64_t, 16>());
      default:
        return walk(g, f, lanes(g));
    }
  }

 private:
  template <class F, class Lanes>
  void walk(int64_t g, F& f, Lanes lanes_g) const {
    const int64_t base = offset0_ + g * stride_group_;
    for (int64_t n = 0; n < n_; ++n) {
      for (int64_t h = 0; h < h_; ++h) {
        for (int64_t w = 0; w < w_; ++w) {
          f(base + n * stride_n_ + h * stride_h_ + w * stride_w_, lanes_g);
        }
      }
    }
  }

  int64_t block_ = 1, n_ = 0, channels_ = 0, h_ = 1, w_ = 1;
  int64_t offset0_ = 0, stride_n_ = 0, stride_group_ = 0, stride_h_ = 0, stride_w_ = 0;
};

float* ptr(const memory& m) { return static_cast<float*>(m.get_data_handle()); }

class BatchNormLayer : public Layer, public FoldableOutput {
 public:
  using Layer::Layer;

  bool fuse_activation(const Activation& act) override {
    if (act.type != "ReLU") return false;
    relu_ = true;
    fused_ = act.type;
    return true;
  }

  void setup(const std::vector<Blob*>& bottoms, Blob* top, SetupContext& ctx) override {
    check_bottoms(bottoms, 1);
    Blob& bottom = *bottoms[0];
    check_rank(bottom, {2, 4});
    const BatchNormParam& p = spec_.batch_norm();
    eps_ = p.eps();
    momentum_ = p.momentum();
    if (!(eps_ > 0.f)) throw UserError(error_prefix() + "batch_norm.eps must be > 0");
    if (!(momentum_ >= 0.f && momentum_ <= 1.f)) {
      throw UserError(error_prefix() + "batch_norm.momentum must be in [0, 1]");
    }
    sync_ = p.sync();
    if (sync_ && bottom.desc().data_type() != dt::f32) {
      throw UserError(error_prefix() +
                      "batch_norm.sync runs on f32 activations only "
                      "(precision: FP32)");
    }
    ReplicaReducer* reducer = ctx.state().replica_reducer;
    if (sync_ && reducer != nullptr && reducer->replicas() > 1) reducer_ = reducer;

    const memory::desc data = bottom.desc();
    const memory::dims dims = data.dims();
    channels_ = dims[1];
    local_count_ = 1;
    for (size_t i = 0; i < dims.size(); ++i) local_count_ *= i == 1 ? 1 : dims[i];
    bottom_ = &bottom;
    top_ = top;

    const memory::desc vec({channels_}, dt::f32, tag::a);
    scale_ = ctx.add_param("scale", vec, vec, {channels_}, {ParamInit::Kind::kOne});
    shift_ = ctx.add_param("shift", vec, vec, {channels_}, {ParamInit::Kind::kZero});
    params_ = {scale_, shift_};
    running_mean_ =
        ctx.add_param("running_mean", vec, vec, {channels_}, {ParamInit::Kind::kZero}, false);
    running_var_ =
        ctx.add_param("running_var", vec, vec, {channels_}, {ParamInit::Kind::kOne}, false);

    // The input gradient overwrites the output's unless an Add would share
    // the latter with its other bottoms: then it is written apart, and
    // backward only reads the output's gradient. The synchronized path
    // always writes it apart.
    const bool in_place = !sync_ && !ctx.top_gradient_shared();
    if (!sync_) loops_ = BatchNormLoops::plan(data, omp_get_max_threads());
    if (loops_) {
      define_top(top, data, in_place, ctx);
      mean_ = memory(vec, cpu_engine());
      var_ = memory(vec, cpu_engine());
      diff_src_ = bottom.needs_grad ? bottom.diff : memory();
      describe_ = "loop over " + layout_name(data) + ", " + simd_name(loops_->simd());
      // Written apart, the input gradient lands on lines memory must first
      // fetch; over the input, which nothing reads after this backward, on
      // lines just read (ResNet-50 bf16 on channels-last tensors: these
      // backwards moved 25 GB/s where the in-place ones moved 35).
      if (!in_place && bottom.needs_grad && ctx.may_overwrite(bottom)) {
        ctx.store_gradient_over_values(&bottom);
        describe_ += ", input gradient over its input";
      }
      // Its own ReLU would come before an Add's sum.
      if (!relu_) top->foldable = this;
      return;
    }

    using Fwd = dnnl::batch_normalization_forward;
    using Bwd = dnnl::batch_normalization_backward;
    using prop = dnnl::prop_kind;
    const auto base =
        dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift |
        (relu_ ? dnnl::normalization_flags::fuse_norm_relu : dnnl::normalization_flags::none);
    const auto global = base | dnnl::normalization_flags::use_global_stats;
    auto& eng = cpu_engine();

    // Training: batch statistics computed by the primitive, or (synchronized)
    // given to it.
    const Fwd::primitive_desc fwd({prop::forward_training, data, eps_, sync_ ? global : base},
                                  default_attr(), eng);
    define_top(top, fwd.dst_desc(), in_place, ctx);
    mean_ = memory(fwd.mean_desc(), eng);
    var_ = memory(fwd.variance_desc(), eng);
    if (relu_) workspace_ = memory(fwd.workspace_desc(), eng);
    forward_ = BoundPrimitive(Fwd(fwd), {{DNNL_ARG_SRC, bottom.data},
                                         {DNNL_ARG_DST, top->data},
                                         {DNNL_ARG_MEAN, mean_},
                                         {DNNL_ARG_VARIANCE, var_},
                                         {DNNL_ARG_SCALE, scale_->value},
                                         {DNNL_ARG_SHIFT, shift_->value},
                                         {DNNL_ARG_WORKSPACE, workspace_},
                                         {DNNL_ARG_SCRATCHPAD, ctx.scratchpad(fwd)}});
    // Evaluation: the running statistics.
    const Fwd::primitive_desc eval({prop::forward_inference, data, eps_, global}, default_attr(),
                                   eng);
    eval_ = BoundPrimitive(Fwd(eval), {{DNNL_ARG_SRC, bottom.data},
                                       {DNNL_ARG_DST, top->data},
                                       {DNNL_ARG_MEAN, running_mean_->value},
                                       {DNNL_ARG_VARIANCE, running_var_->value},
                                       {DNNL_ARG_SCALE, scale_->value},
                                       {DNNL_ARG_SHIFT, shift_->value},
                                       {DNNL_ARG_SCRATCHPAD, ctx.scratchpad(eval)}});
    describe_ =
        "fwd " + std::string(fwd.impl_info_str()) + " eval " + std::string(eval.impl_info_str());

    if (sync_) {
      // The synchronized path computes the gradients itself (backward()).
      diff_src_ = bottom.needs_grad ? bottom.diff : memory();
    } else {
      // The gradient of the input goes to a private buffer when the bottom
      // needs none: oneDNN computes it together with those of scale and
      // shift.
      diff_src_ = bottom.needs_grad ? bottom.diff : memory(data, eng);
      const Bwd::primitive_desc bwd({prop::backward, top->desc(), data, eps_, base}, default_attr(),
                                    eng, fwd);
      backward_ = BoundPrimitive(Bwd(bwd), {{DNNL_ARG_SRC, bottom.data},
                                            {DNNL_ARG_MEAN, mean_},
                                            {DNNL_ARG_VARIANCE, var_},
                                            {DNNL_ARG_DIFF_DST, top->diff},
                                            {DNNL_ARG_SCALE, scale_->value},
                                            {DNNL_ARG_SHIFT, shift_->value},
                                            {DNNL_ARG_WORKSPACE, workspace_},
                                            {DNNL_ARG_DIFF_SRC, diff_src_},
                                            {DNNL_ARG_DIFF_SCALE, scale_->grad},
                                            {DNNL_ARG_DIFF_SHIFT, shift_->grad},
                                            {DNNL_ARG_SCRATCHPAD, ctx.scratchpad(bwd)}});
      describe_ += " bwd " + std::string(bwd.impl_info_str());
    }

    if (sync_) {
      groups_ = ChannelGroups(data);
      sums_.assign(static_cast<size_t>(2 * channels_ + 1), 0.0);
      describe_ += " sync x" + std::to_string(reducer_ ? reducer_->replicas() : 1);
    }
  }

  void forward(bool training) override {
    if (loops_) {
      loops_forward(training);
      return;
    }
    if (!training) {
      eval_.run();
      return;
    }
    if (sync_) global_statistics();
    forward_.run();
    cpu_stream().wait();
    update_running_statistics();
  }

  void backward() override {
    if (loops_) {
      loops_backward();
      return;
    }
    if (!sync_) {
      backward_.run();
      return;
    }
    // The synchronized path computes every gradient itself (oneDNN's would
    // be overwritten), so the primitive is not run.
    cpu_stream().wait();
    if (relu_) {
      synchronized_sums(std::true_type());
    } else {
      synchronized_sums(std::false_type());
    }
    if (bottom_->needs_grad) synchronized_input_gradient();
  }

  std::string describe() const override {
    std::string d = describe_;
    if (top_->folded) d += ", normalization folded into its reader";
    if (top_->gradient_sums_taken) d += ", its gradient sums taken by its reader";
    return d;
  }
  void add_to(const void* other, void* out, bool relu) const override {
    cpu_stream().wait();
    loops_->add_normalized(bottom_->data.get_data_handle(), other, out, relu);
  }
  void add_to(const FoldableOutput& other, void* out, bool relu) const override {
    const BatchNormLayer& o = same_kind(other);
    cpu_stream().wait();
    loops_->add_normalized(bottom_->data.get_data_handle(), *o.loops_,
                           o.bottom_->data.get_data_handle(), out, relu);
  }
  void take_gradient_sums(void* dy, const void* other, const void* cut,
                          const FoldableOutput* second) const override {
    const BatchNormLayer* o = second ? &same_kind(*second) : nullptr;
    cpu_stream().wait();
    loops_->take_gradient_sums(
        dy, other, cut, bottom_->data.get_data_handle(), ptr(mean_), o ? &*o->loops_ : nullptr,
        o ? o->bottom_->data.get_data_handle() : nullptr, o ? ptr(o->mean_) : nullptr);
  }
  bool takes_gradient_sums_faster() const override {
    return loops_ && loops_->takes_gradient_sums_faster();
  }
  // Only the synchronized path's ReLU cut reads the output (oneDNN's uses
  // the workspace, the loops' the input).
  bool backward_reads_top() const override { return sync_ && relu_; }

 private:
  static const BatchNormLayer& same_kind(const FoldableOutput& other) {
    const auto* o = dynamic_cast<const BatchNormLayer*>(&other);
    if (o == nullptr || !o->loops_) throw std::logic_error("folded with another kind of output");
    return *o;
  }

  void define_top(Blob* top, const memory::desc& md, bool in_place, SetupContext& ctx) {
    ctx.define_top(top, md, in_place ? bottom_ : nullptr);
    top->gradient_shareable = !in_place;
  }

  void loops_forward(bool training) {
    cpu_stream().wait();
    const void* x = bottom_->data.get_data_handle();
    void* y = top_->folded ? nullptr : top_->data.get_data_handle();
    const float *gamma = ptr(scale_->value), *beta = ptr(shift_->value);
    if (!training) {
      loops_->forward_inference(x, y, gamma, beta, ptr(running_mean_->value),
                                ptr(running_var_->value), eps_, relu_);
      return;
    }
    loops_->forward_training(x, y, gamma, beta, eps_, relu_, ptr(mean_), ptr(var_));
    update_running_statistics();
  }

  void loops_backward() {
    cpu_stream().wait();
    loops_->backward(bottom_->data.get_data_handle(), top_->diff.get_data_handle(),
                     diff_src_ ? diff_src_.get_data_handle() : nullptr, ptr(scale_->value),
                     ptr(shift_->value), ptr(mean_), ptr(var_), eps_, relu_, ptr(scale_->grad),
                     ptr(shift_->grad), top_->gradient_sums_taken);
  }

  // Mean and (biased) variance of the global batch into mean_ and var_,
  // summed in double on each replica and over the replicas, so that the
  // statistics of N replicas round to the same floats as one replica's.
  // The sums are taken around the running mean, which every replica holds
  // identically (broadcast at the start, then updated from the same global
  // statistics) and which tracks the batch mean, so that E[x^2] - E[x]^2
  // does not cancel catastrophically.
  void global_statistics() {
    cpu_stream().wait();
    const float* x = ptr(bottom_->data);
    const float* shift = ptr(running_mean_->value);
    const int64_t c_count = channels_, groups = groups_.groups();
#pragma omp parallel for schedule(static)
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t c0 = groups_.first_channel(g);
      double k[kMaxBlock], s1[kMaxBlock] = {}, s2[kMaxBlock] = {};
      for (int64_t l = 0; l < groups_.lanes(g); ++l) k[l] = shift[c0 + l];
      groups_.for_each(g, [&](int64_t at, auto lanes) {
        const float* xr = x + at;
        for (int64_t l = 0; l < lanes; ++l) {
          const double d = static_cast<double>(xr[l]) - k[l];
          s1[l] += d;
          s2[l] += d * d;
        }
      });
      for (int64_t l = 0; l < groups_.lanes(g); ++l) {
        sums_[static_cast<size_t>(c0 + l)] = s1[l];
        sums_[static_cast<size_t>(c_count + c0 + l)] = s2[l];
      }
    }
    sums_[static_cast<size_t>(2 * c_count)] = static_cast<double>(local_count_);
    if (reducer_) reducer_->sum(sums_.data(), sums_.size());
    global_count_ = sums_[static_cast<size_t>(2 * c_count)];
    float* mean = ptr(mean_);
    float* var = ptr(var_);
    for (int64_t c = 0; c < c_count; ++c) {
      const double m1 = sums_[static_cast<size_t>(c)] / global_count_;
      const double m2 = sums_[static_cast<size_t>(c_count + c)] / global_count_;
      mean[c] = static_cast<float>(static_cast<double>(shift[c]) + m1);
      var[c] = static_cast<float>(std::max(m2 - m1 * m1, 0.0));
    }
  }

  void update_running_statistics() {
    const double count = sync_ ? global_count_ : static_cast<double>(local_count_);
    const float unbias = count > 1 ? static_cast<float>(count / (count - 1)) : 1.f;
    const float* mean = ptr(mean_);
    const float* var = ptr(var_);
    float* rmean = ptr(running_mean_->value);
    float* rvar = ptr(running_var_->value);
    for (int64_t c = 0; c < channels_; ++c) {
      rmean[c] = (1.f - momentum_) * rmean[c] + momentum_ * mean[c];
      rvar[c] = (1.f - momentum_) * rvar[c] + momentum_ * var[c] * unbias;
    }
  }

  // The sums over the global batch of dy and dy * xhat (dy cut by a fused
  // ReLU where the output is 0), in double on each replica and over the
  // replicas, as the statistics are: the gradients of shift and scale. Each
  // replica's dy carries its share of the mean loss, so the sums are
  // `replicas` times the one-process gradient; each replica keeps that
  // gradient (sum / replicas), which the gradient reducer's average leaves
  // as it is. (oneDNN's float sums over each replica's part would round
  // differently for each rank count, and these sums often nearly cancel.)
  template <class ReluCut>
  void synchronized_sums(ReluCut relu_cut) {
    const int64_t c_count = channels_, groups = groups_.groups();
    const float* x = ptr(bottom_->data);
    const float* y = ptr(top_->data);
    const float* dy = ptr(top_->diff);
    const float* mean = ptr(mean_);
    const float* var = ptr(var_);
    // sum(dy * xhat) = inv_std * (sum(dy * x) - mean * sum(dy)): two
    // products per element, in double.
#pragma omp parallel for schedule(static)
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t c0 = groups_.first_channel(g);
      double s_dy[kMaxBlock] = {}, s_dyx[kMaxBlock] = {};
      groups_.for_each(g, [&](int64_t at, auto lanes) {
        for (int64_t l = 0; l < lanes; ++l) {
          const float gl = relu_cut ? dy[at + l] * static_cast<float>(y[at + l] > 0.f) : dy[at + l];
          s_dy[l] += gl;
          s_dyx[l] += static_cast<double>(gl) * x[at + l];
        }
      });
      for (int64_t l = 0; l < groups_.lanes(g); ++l) {
        const double inv_std = 1 / std::sqrt(static_cast<double>(var[c0 + l]) + eps_);
        sums_[static_cast<size_t>(c0 + l)] = s_dy[l];
        sums_[static_cast<size_t>(c_count + c0 + l)] =
            inv_std * (s_dyx[l] - mean[c0 + l] * s_dy[l]);
      }
    }
    if (reducer_) reducer_->sum(sums_.data(), static_cast<size_t>(2 * c_count));
    const double replicas = reducer_ ? reducer_->replicas() : 1;
    float* dshift = ptr(shift_->grad);
    float* dscale = ptr(scale_->grad);
    for (int64_t c = 0; c < c_count; ++c) {
      dshift[c] = static_cast<float>(sums_[static_cast<size_t>(c)] / replicas);
      dscale[c] = static_cast<float>(sums_[static_cast<size_t>(c_count + c)] / replicas);
    }
  }

  // The input gradient with the terms that flow through the statistics,
  // from the sums over all replicas (synchronized_sums):
  //   dx = gamma * inv_std * (dy - sum(dy) / M - xhat * sum(dy * xhat) / M).
  void synchronized_input_gradient() {
    const int64_t c_count = channels_, groups = groups_.groups();
    const float* x = ptr(bottom_->data);
    const float* y = ptr(top_->data);
    const float* dy = ptr(top_->diff);
    float* dx = ptr(diff_src_);
    const float* gamma = ptr(scale_->value);
    const float* mean = ptr(mean_);
    const float* var = ptr(var_);
    const double m = global_count_;
    const bool relu = relu_;
#pragma omp parallel for schedule(static)
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t c0 = groups_.first_channel(g);
      // dx = a * dy' + b + k * x, per channel.
      float a[kMaxBlock], b[kMaxBlock], k[kMaxBlock];
      for (int64_t l = 0; l < groups_.lanes(g); ++l) {
        const int64_t c = c0 + l;
        const float inv_std = 1.f / std::sqrt(var[c] + eps_);
        const auto mean_dy = static_cast<float>(sums_[static_cast<size_t>(c)] / m);
        const auto mean_dy_xhat = static_cast<float>(sums_[static_cast<size_t>(c_count + c)] / m);
        a[l] = gamma[c] * inv_std;
        k[l] = -a[l] * inv_std * mean_dy_xhat;
        b[l] = -a[l] * mean_dy - k[l] * mean[c];
      }
      auto input_gradient = [&](auto relu_cut) {
        groups_.for_each(g, [&](int64_t at, auto lanes) {
          const float* __restrict xr = x + at;
          const float* __restrict yr = y + at;
          const float* __restrict dyr = dy + at;
          float* __restrict dxr = dx + at;
          for (int64_t l = 0; l < lanes; ++l) {
            // With the fused ReLU, the gradient is cut where the output is 0.
            const float gl = relu_cut ? dyr[l] * static_cast<float>(yr[l] > 0.f) : dyr[l];
            dxr[l] = a[l] * gl + b[l] + k[l] * xr[l];
          }
        });
      };
      if (relu) {
        input_gradient(std::true_type());
      } else {
        input_gradient(std::false_type());
      }
    }
  }

  bool relu_ = false;
  bool sync_ = false;
  float eps_ = 0.f, momentum_ = 0.f;
  int64_t channels_ = 0, local_count_ = 0;
  double global_count_ = 0;
  ReplicaReducer* reducer_ = nullptr;
  const Blob* bottom_ = nullptr;
  const Blob* top_ = nullptr;
  Param *scale_ = nullptr, *shift_ = nullptr, *running_mean_ = nullptr, *running_var_ = nullptr;
  memory mean_, var_, workspace_, diff_src_;
  BoundPrimitive forward_, eval_, backward_;
  ChannelGroups groups_;
  std::vector<double> sums_;
  std::optional<BatchNormLoops> loops_;  // channels-last
  std::string describe_;
};

}  // namespace

std::unique_ptr<Layer> make_batch_norm(const LayerSpec& spec) {
  return std::make_unique<BatchNormLayer>(spec);
}

}  // namespace dptrain
