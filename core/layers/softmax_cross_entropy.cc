// Softmax cross-entropy over the valid rows of the batch, with optional
// label smoothing. Computed from log-softmax (max subtracted first) so it
// neither overflows nor takes the log of zero. The gradient of the mean
// loss is (softmax - target) / valid, times the net's loss scale.
#include <cmath>

#include "core/engine.h"
#include "core/error.h"
#include "core/layer.h"
#include "core/layers/layers.h"
#include "core/layers/logit_loss.h"
#include "core/primitive.h"

namespace dptrain {
namespace {

using dnnl::memory;

class SoftmaxCrossEntropyLayer : public LogitLoss {
 public:
  using LogitLoss::LogitLoss;

  void setup(const std::vector<Blob*>& bottoms, Blob* top, SetupContext& ctx) override {
    setup_logits(bottoms, top, ctx);
    smoothing_ = spec_.loss().label_smoothing();
    if (smoothing_ < 0.f || smoothing_ >= 1.f) {
      throw UserError(error_prefix() + "loss.label_smoothing must be in [0, 1)");
    }
    classes_ = static_cast<int>(width_);
  }

  void forward(bool) override {
    prepare();
    const float* x = logits();
    const int32_t* y = labels();
    const int64_t valid = this->valid();
    const int k = classes_;
    double total = 0;
    int64_t correct = 0;
    for (int64_t i = 0; i < batch_; ++i) {
      const float* row = x + i * k;
      int best = 0;
      for (int c = 1; c < k; ++c) best = row[c] > row[best] ? c : best;
      predictions_[static_cast<size_t>(i)] = best;
      double sum = 0;
      for (int c = 0; c < k; ++c) sum += std::exp(static_cast<double>(row[c] - row[best]));
      float* p = scores_.data() + i * k;
      for (int c = 0; c < k; ++c)
        p[c] = static_cast<float>(std::exp(static_cast<double>(row[c] - row[best])) / sum);
      if (i >= valid) continue;
      if (y[i] < 0 || y[i] >= k) {
        throw UserError(error_prefix() + "label " + std::to_string(y[i]) + " is outside [0, " +
                        std::to_string(k) + ")");
      }
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
    const float* x = logits();
    const int32_t* y = labels();
    float* g = gradient();
    const int64_t valid = this->valid();
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

  Kind kind() const override { return Kind::kClassifier; }
  int classes() const override { return classes_; }
  int score_width() const override { return classes_; }

 private:
  float smoothing_ = 0.f;
  int classes_ = 0;
};

}  // namespace

std::unique_ptr<Layer> make_softmax_cross_entropy(const LayerSpec& spec) {
  return std::make_unique<SoftmaxCrossEntropyLayer>(spec);
}

}  // namespace dptrain
