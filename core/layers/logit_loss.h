// What SoftmaxCrossEntropy and SigmoidCrossEntropy share: an (N, K) blob of
// logits and the labels in, a plain copy of the logits to read, a plain
// gradient to write, and per sample a prediction and K scores (the
// probabilities) out.
#pragma once

#include <algorithm>
#include <vector>

#include "core/engine.h"
#include "core/layer.h"
#include "core/primitive.h"

namespace dptrain {

class LogitLoss : public LossLayer {
 public:
  using LossLayer::LossLayer;

  float loss() const override { return loss_; }
  int64_t correct() const override { return correct_; }
  const std::vector<int32_t>& predictions() const override { return predictions_; }
  const float* scores() const override { return scores_.data(); }

 protected:
  // Checks the bottoms (logits of rank 2, then the labels), binds the
  // copies and defines the scalar top. The scores are sized at the first
  // forward (prepare()), after the net's memory check: a net refused for
  // its size must not fail here first.
  void setup_logits(const std::vector<Blob*>& bottoms, Blob* top, SetupContext& ctx) {
    check_bottoms(bottoms, 2);
    Blob& logits = *bottoms[0];
    check_rank(logits, {2});
    check_label_bottom(*bottoms[1]);
    batch_ = logits.dims()[0];
    width_ = logits.dims()[1];
    const dnnl::memory::desc plain = plain_desc(logits.dims());
    logits_ = Relayout::input(logits.data, plain);
    if (logits.needs_grad) grad_ = Relayout::output(plain, logits.diff);
    labels_ = bottoms[1];
    state_ = &ctx.state();
    ctx.define_top(
        top, dnnl::memory::desc({1}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::a));
    predictions_.assign(static_cast<size_t>(batch_), 0);
  }

  // At the start of forward: the logits in plain layout, the scores sized.
  void prepare() {
    logits_.run();
    cpu_stream().wait();
    if (scores_.empty()) scores_.resize(static_cast<size_t>(batch_ * width_));
  }
  const float* logits() const {
    return static_cast<const float*>(logits_.memory().get_data_handle());
  }
  const int32_t* labels() const {
    return static_cast<const int32_t*>(labels_->data.get_data_handle());
  }
  float* gradient() { return static_cast<float*>(grad_.memory().get_data_handle()); }
  int64_t valid() const { return std::min(state_->valid, batch_); }

  Relayout logits_, grad_;
  const Blob* labels_ = nullptr;
  const NetState* state_ = nullptr;
  int64_t batch_ = 0, width_ = 0;
  float loss_ = 0.f;
  int64_t correct_ = 0;
  std::vector<int32_t> predictions_;
  std::vector<float> scores_;
};

}  // namespace dptrain
