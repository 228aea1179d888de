// MSELoss and L1Loss: how far the net's output is from a target blob of
// the same shape, by default the input image ("data"), for autoencoders.
// The loss is the mean over the valid samples of the mean over each
// sample's values of (out - target)^2 or |out - target|; its gradient is
// 2 (out - target) or sign(out - target), over valid * values, times the
// net's loss scale (and its negative for a target that needs one).
//
// The scores are each sample's mean squared error per channel, whichever
// the loss: evaluations turn them into test_mse in pixel units.
#include <cmath>

#include "core/engine.h"
#include "core/error.h"
#include "core/layer.h"
#include "core/layers/layers.h"
#include "core/primitive.h"

namespace dptrain {
namespace {

class ReconstructionLossLayer : public LossLayer {
 public:
  using LossLayer::LossLayer;

  void setup(const std::vector<Blob*>& bottoms, Blob* top, SetupContext& ctx) override {
    check_bottoms(bottoms, 2);
    Blob& out = *bottoms[0];
    Blob& target = *bottoms[1];
    if (out.dims() != target.dims()) {
      throw UserError(error_prefix() + "the output '" + user_name(out) + "' is " +
                      dims_text(out.dims()) + " but the target '" + user_name(target) + "' is " +
                      dims_text(target.dims()));
    }
    const dnnl::memory::dims d = out.dims();
    if (d.size() < 2) throw UserError(error_prefix() + "needs a batch of at least 2 dimensions");
    batch_ = d[0];
    channels_ = d[1];
    values_ = 1;
    for (size_t i = 1; i < d.size(); ++i) values_ *= d[i];
    const dnnl::memory::desc plain = plain_desc(d);
    out_ = Relayout::input(out.data, plain);
    target_ = Relayout::input(target.data, plain);
    if (out.needs_grad) out_grad_ = Relayout::output(plain, out.diff);
    if (target.needs_grad) target_grad_ = Relayout::output(plain, target.diff);
    state_ = &ctx.state();
    squared_ = type() == "MSELoss";
    ctx.define_top(
        top, dnnl::memory::desc({1}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::a));
    predictions_.assign(static_cast<size_t>(batch_), 0);
  }

  void forward(bool) override {
    out_.run();
    target_.run();
    cpu_stream().wait();
    if (per_channel_.empty()) per_channel_.resize(static_cast<size_t>(batch_ * channels_));
    const float* o = ptr(out_);
    const float* t = ptr(target_);
    const int64_t valid = std::min(state_->valid, batch_), per = values_ / channels_;
    double total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
    for (int64_t i = 0; i < batch_; ++i) {
      double sample = 0;
      for (int64_t c = 0; c < channels_; ++c) {
        double sq = 0, abs = 0;
        for (int64_t j = 0; j < per; ++j) {
          const int64_t at = i * values_ + c * per + j;
          const double diff = static_cast<double>(o[at]) - t[at];
          sq += diff * diff;
          abs += std::abs(diff);
        }
        per_channel_[static_cast<size_t>(i * channels_ + c)] =
            static_cast<float>(sq / static_cast<double>(per));
        sample += squared_ ? sq : abs;
      }
      if (i < valid) total += sample / static_cast<double>(values_);
    }
    loss_ = valid > 0 ? static_cast<float>(total / static_cast<double>(valid)) : 0.f;
  }

  void backward() override {
    const float* o = ptr(out_);
    const float* t = ptr(target_);
    float* go = out_grad_.memory() ? ptr(out_grad_) : nullptr;
    float* gt = target_grad_.memory() ? ptr(target_grad_) : nullptr;
    const int64_t valid = std::min(state_->valid, batch_);
    const float scale = valid > 0 ? state_->loss_scale / static_cast<float>(valid * values_) : 0.f;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < batch_; ++i) {
      for (int64_t j = i * values_; j < (i + 1) * values_; ++j) {
        const float diff = o[j] - t[j];
        const float g = i >= valid ? 0.f
                        : squared_ ? 2.f * diff * scale
                                   : static_cast<float>((diff > 0) - (diff < 0)) * scale;
        if (go) go[j] = g;
        if (gt) gt[j] = -g;
      }
    }
    if (go) out_grad_.run();
    if (gt) target_grad_.run();
  }

  Kind kind() const override { return Kind::kReconstruction; }
  float loss() const override { return loss_; }
  int64_t correct() const override { return 0; }
  const std::vector<int32_t>& predictions() const override { return predictions_; }
  int classes() const override { return 0; }
  const float* scores() const override { return per_channel_.data(); }
  int score_width() const override { return static_cast<int>(channels_); }

 private:
  static float* ptr(const Relayout& r) { return static_cast<float*>(r.memory().get_data_handle()); }
  // A blob read through a Split ("data/split1") by the name in the config.
  static std::string user_name(const Blob& b) { return b.name.substr(0, b.name.find('/')); }

  Relayout out_, target_, out_grad_, target_grad_;
  const NetState* state_ = nullptr;
  bool squared_ = true;
  int64_t batch_ = 0, channels_ = 0, values_ = 0;
  float loss_ = 0.f;
  std::vector<int32_t> predictions_;
  std::vector<float> per_channel_;
};

}  // namespace

std::unique_ptr<Layer> make_reconstruction_loss(const LayerSpec& spec) {
  return std::make_unique<ReconstructionLossLayer>(spec);
}

}  // namespace dptrain
