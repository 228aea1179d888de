// Binary cross-entropy on one logit per sample, labels 0 or 1: the loss of
// logistic regression. Per sample w_y * (max(x, 0) - x*y + log(1 + e^-|x|)),
// which neither overflows nor takes the log of zero for any logit, with
// w_1 = loss.positive_weight and w_0 = 1; the mean over the valid samples
// (as PyTorch's BCEWithLogitsLoss with pos_weight). The gradient is
// w_y * (sigmoid(x) - y) / valid, times the net's loss scale.
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

// 1 / (1 + e^-x) without overflow for either sign.
double sigmoid(double x) {
  if (x >= 0) return 1 / (1 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1 + e);
}

class SigmoidCrossEntropyLayer : public LogitLoss {
 public:
  using LogitLoss::LogitLoss;

  void setup(const std::vector<Blob*>& bottoms, Blob* top, SetupContext& ctx) override {
    setup_logits(bottoms, top, ctx);
    if (width_ != 1) {
      throw UserError(error_prefix() + "needs one logit per sample, not " + std::to_string(width_) +
                      " (InnerProduct num_output: 1)");
    }
    positive_weight_ = spec_.loss().positive_weight();
    if (!(positive_weight_ > 0.f) || !std::isfinite(positive_weight_)) {
      throw UserError(error_prefix() + "loss.positive_weight must be > 0");
    }
  }

  void forward(bool) override {
    prepare();
    const float* x = logits();
    const int32_t* y = labels();
    const int64_t valid = this->valid();
    double total = 0;
    int64_t correct = 0;
    for (int64_t i = 0; i < batch_; ++i) {
      const auto xi = static_cast<double>(x[i]);
      scores_[static_cast<size_t>(i)] = static_cast<float>(sigmoid(xi));
      predictions_[static_cast<size_t>(i)] = xi >= 0;
      if (i >= valid) continue;
      if (y[i] != 0 && y[i] != 1) {
        throw UserError(error_prefix() + "label " + std::to_string(y[i]) +
                        " is not 0 or 1 (data.positive_classes makes a binary task)");
      }
      const double w = y[i] == 1 ? positive_weight_ : 1.0;
      total += w * (std::max(xi, 0.0) - xi * y[i] + std::log1p(std::exp(-std::abs(xi))));
      correct += predictions_[static_cast<size_t>(i)] == y[i];
    }
    loss_ = valid > 0 ? static_cast<float>(total / static_cast<double>(valid)) : 0.f;
    correct_ = correct;
  }

  void backward() override {
    const float* x = logits();
    const int32_t* y = labels();
    float* g = gradient();
    const int64_t valid = this->valid();
    const double scale = valid > 0 ? state_->loss_scale / static_cast<double>(valid) : 0.0;
    for (int64_t i = 0; i < batch_; ++i) {
      if (i >= valid) {
        g[i] = 0.f;
        continue;
      }
      const double w = y[i] == 1 ? positive_weight_ : 1.0;
      g[i] = static_cast<float>(w * (sigmoid(static_cast<double>(x[i])) - y[i]) * scale);
    }
    grad_.run();
  }

  Kind kind() const override { return Kind::kBinary; }
  int classes() const override { return 2; }
  int score_width() const override { return 1; }

 private:
  double positive_weight_ = 1;
};

}  // namespace

std::unique_ptr<Layer> make_sigmoid_cross_entropy(const LayerSpec& spec) {
  return std::make_unique<SigmoidCrossEntropyLayer>(spec);
}

}  // namespace dptrain
