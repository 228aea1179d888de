// Softmax cross-entropy over the valid rows of the batch, with optional
// label smoothing. Computed from log-softmax (max subtracted first) so it
// neither overflows nor takes the log of zero. The gradient of the mean
// loss is (softmax - target) / valid, times the net's loss scale.
#include <cmath>

#include "core/engine.h"
#include "core/error.h"
#include "core/layer.h"
#include "core/layers/layers.h"
#include "core/primitive.h"

namespace dptrain {
namespace {

using dnnl::memory;

class SoftmaxCrossEntropyLayer : public LossLayer {
 public:
  using LossLayer::LossLayer;

  void setup(const std::vector<Blob*>& bottoms, Blob* top, SetupContext& ctx) override {
    check_bottoms(bottoms, 2);
    Blob& logits = *bottoms[0];
    check_rank(logits, {2});
    if (bottoms[1]->name != "label") {
      throw UserError(error_prefix() + "second bottom must be 'label', not '" + bottoms[1]->name +
                      "'");
    }
    smoothing_ = spec_.loss().label_smoothing();
    if (smoothing_ < 0.f || smoothing_ >= 1.f) {
      throw UserError(error_prefix() + "loss.label_smoothing must be in [0, 1)");
    }
    const memory::dims d = logits.dims();
    batch_ = d[0];
    classes_ = static_cast<int>(d[1]);
    const memory::desc plain(d, memory::data_type::f32, memory::format_tag::nc);
    logits_ = Relayout::input(logits.data, plain);
    labels_ = bottoms[1];
    state_ = &ctx.state();
    if (logits.needs_grad) {
      grad_ = Relayout::output(plain, logits.diff);
    }
    ctx.define_top(top, memory::desc({1}, memory::data_type::f32, memory::format_tag::a));
    predictions_.assign(static_cast<size_t>(batch_), 0);
  }

  void forward(bool) override {
    logits_.run();
    cpu_stream().wait();
    const float* x = static_cast<const float*>(logits_.memory().get_data_handle());
    const int32_t* y = static_cast<const int32_t*>(labels_->data.get_data_handle());
    const int64_t valid = std::min(state_->valid, batch_);
    const int k = classes_;
    double total = 0;
    int64_t correct = 0;
    for (int64_t i = 0; i < batch_; ++i) {
      const float* row = x + i * k;
      int best = 0;
      for (int c = 1; c < k; ++c) best = row[c] > row[best] ? c : best;
      predictions_[static_cast<size_t>(i)] = best;
      if (i >= valid) continue;
      if (y[i] < 0 || y[i] >= k) {
        throw UserError(error_prefix() + "label " + std::to_string(y[i]) + " is outside [0, " +
                        std::to_string(k) + ")");
      }
      double sum = 0;
      for (int c = 0; c < k; ++c) sum += std::exp(static_cast<double>(row[c] - row[best]));
      const double log_z = static_cast<double>(row[best]) + std::log(sum);
      double mean_log_p = 0;
      for (int c = 0; c < k; ++c) mean_log_p += static_cast<double>(row[c]) - log_z;
      mean_log_p /= k;
      const double log_p_y = static_cast<double>(row[y[i]]) - log_z;
      total -= (1.0 - smoothing_) * log_p_y + smoothing_ * mean_log_p;
      correct += best == y[i];
    }
    loss_ = valid > 0 ? static_cast<float>(total / static_cast<double>(valid)) : 0.f;
    correct_ = correct;
  }

  void backward() override {
    const float* x = static_cast<const float*>(logits_.memory().get_data_handle());
    const int32_t* y = static_cast<const int32_t*>(labels_->data.get_data_handle());
    float* g = static_cast<float*>(grad_.memory().get_data_handle());
    const int64_t valid = std::min(state_->valid, batch_);
    const int k = classes_;
    const float scale = valid > 0 ? state_->loss_scale / static_cast<float>(valid) : 0.f;
    const float off = smoothing_ / static_cast<float>(k);
    for (int64_t i = 0; i < batch_; ++i) {
      const float* row = x + i * k;
      float* grow = g + i * k;
      if (i >= valid) {
        for (int c = 0; c < k; ++c) grow[c] = 0.f;
        continue;
      }
      float max = row[0];
      for (int c = 1; c < k; ++c) max = std::max(max, row[c]);
      float sum = 0;
      for (int c = 0; c < k; ++c) sum += (grow[c] = std::exp(row[c] - max));
      for (int c = 0; c < k; ++c) {
        const float target = off + (c == y[i] ? 1.f - smoothing_ : 0.f);
        grow[c] = (grow[c] / sum - target) * scale;
      }
    }
    grad_.run();
  }

  float loss() const override { return loss_; }
  int64_t correct() const override { return correct_; }
  const std::vector<int32_t>& predictions() const override { return predictions_; }
  int classes() const override { return classes_; }

 private:
  Relayout logits_, grad_;
  const Blob* labels_ = nullptr;
  const NetState* state_ = nullptr;
  float smoothing_ = 0.f;
  int64_t batch_ = 0;
  int classes_ = 0;
  float loss_ = 0.f;
  int64_t correct_ = 0;
  std::vector<int32_t> predictions_;
};

}  // namespace

std::unique_ptr<Layer> make_softmax_cross_entropy(const LayerSpec& spec) {
  return std::make_unique<SoftmaxCrossEntropyLayer>(spec);
}

}  // namespace dptrain
