// TripletLoss: the loss of an embedding (an (N, D) blob, L2-normalised by
// the layer below) from triplets mined online (core/triplet_mining.h) with
// squared Euclidean distances.
//
// In training, mining runs over the global batch: the embeddings and
// labels of every replica are gathered, so each replica mines the same
// triplets and computes the same loss L, the mean of the active terms by
// the mining's normaliser. Each replica then seeds the gradient of its own
// rows only, times the replica count (cancelling the 1/replicas in the
// trainer's loss scale): the gradient reducer sums over replicas, so the
// step's gradient is the one-process gradient of L at the same global
// batch. An evaluation batch is mined on its own (no
// collective: ranks may evaluate different numbers of batches).
//
// The gradient is linear in the embeddings: with C (G x G) collecting each
// active triplet's coefficients, dE = C E, one small matrix product.
#include <algorithm>

#include "core/engine.h"
#include "core/error.h"
#include "core/layer.h"
#include "core/layers/layers.h"
#include "core/primitive.h"
#include "core/triplet_mining.h"

namespace dptrain {
namespace {

using dnnl::memory;

class TripletLossLayer : public LossLayer {
 public:
  using LossLayer::LossLayer;

  void setup(const std::vector<Blob*>& bottoms, Blob* top, SetupContext& ctx) override {
    check_bottoms(bottoms, 2);
    Blob& embedding = *bottoms[0];
    check_rank(embedding, {2});
    check_label_bottom(*bottoms[1]);
    const TripletLossParam& p = spec_.triplet_loss();
    margin_ = p.margin();
    mining_ = p.mining();
    if (!(margin_ >= 0.f)) throw UserError(error_prefix() + "triplet_loss.margin must be >= 0");
    batch_ = embedding.dims()[0];
    dim_ = embedding.dims()[1];
    const memory::desc plain = plain_desc(embedding.dims());
    src_ = Relayout::input(embedding.data, plain);
    if (embedding.needs_grad) grad_ = Relayout::output(plain, embedding.diff);
    labels_ = bottoms[1];
    state_ = &ctx.state();
    ctx.define_top(top, memory::desc({1}, memory::data_type::f32, memory::format_tag::a));
    predictions_.assign(static_cast<size_t>(batch_), 0);
    const ReplicaReducer* r = state_->replica_reducer;
    const int64_t global = batch_ * (r ? r->replicas() : 1);
    all_.resize(static_cast<size_t>(global * dim_));
    all_labels_.resize(static_cast<size_t>(global));
    dist_.resize(static_cast<size_t>(global * global));
    coef_.resize(dist_.size());
  }

  void forward(bool training) override {
    src_.run();
    cpu_stream().wait();
    if (!state_->compute_loss && !training) return;
    const float* x = static_cast<const float*>(src_.memory().get_data_handle());
    const int32_t* y = static_cast<const int32_t*>(labels_->data.get_data_handle());
    ReplicaReducer* r = state_->replica_reducer;
    const int64_t valid = std::min(state_->valid, batch_);
    replicas_ = training && r ? r->replicas() : 1;
    offset_ = 0;
    if (replicas_ > 1) {
      r->gather(x, static_cast<size_t>(batch_ * dim_) * sizeof(float), all_.data());
      r->gather(y, static_cast<size_t>(batch_) * sizeof(int32_t), all_labels_.data());
      rows_ = batch_ * replicas_;
      offset_ = r->replica() * batch_;
    } else {
      std::copy(x, x + valid * dim_, all_.begin());
      std::copy(y, y + valid, all_labels_.begin());
      rows_ = valid;
    }
    const int64_t n = rows_, k = dim_;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double sq = 0;
        for (int64_t c = 0; c < k; ++c) {
          const double diff = static_cast<double>(all_[static_cast<size_t>(i * k + c)]) -
                              all_[static_cast<size_t>(j * k + c)];
          sq += diff * diff;
        }
        dist_[static_cast<size_t>(i * n + j)] = sq;
      }
    }
    mine_triplets(dist_, all_labels_.data(), n, mining_, margin_, &mined_);
    double total = 0;
    for (const Triplet& t : mined_.triplets) total += std::max(t.term, 0.0);
    const auto norm = static_cast<double>(mined_.normalizer);
    loss_ = mined_.normalizer > 0 ? static_cast<float>(total / norm) : 0.f;
    active_fraction_ = mined_.candidates > 0 ? static_cast<double>(mined_.active) /
                                                   static_cast<double>(mined_.candidates)
                                             : 0;
    if (!training) return;
    std::fill(coef_.begin(), coef_.begin() + n * n, 0.0);
    const double w = mined_.normalizer > 0 ? 2 / norm : 0;
    auto c = [&](int64_t i, int64_t j) -> double& { return coef_[static_cast<size_t>(i * n + j)]; };
    for (const Triplet& t : mined_.triplets) {
      if (!(t.term > 0)) continue;
      // d/de_a = 2(e_n - e_p), d/de_p = 2(e_p - e_a), d/de_n = 2(e_a - e_n).
      c(t.anchor, t.negative) += w, c(t.anchor, t.positive) -= w;
      c(t.positive, t.positive) += w, c(t.positive, t.anchor) -= w;
      c(t.negative, t.anchor) += w, c(t.negative, t.negative) -= w;
    }
  }

  void backward() override {
    float* g = static_cast<float*>(grad_.memory().get_data_handle());
    const int64_t valid = std::min(state_->valid, batch_);
    const double scale = static_cast<double>(state_->loss_scale) * static_cast<double>(replicas_);
    const int64_t n = rows_, k = dim_;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < batch_; ++i) {
      float* gi = g + i * k;
      if (i >= valid) {
        std::fill(gi, gi + k, 0.f);
        continue;
      }
      const double* ci = coef_.data() + (offset_ + i) * n;
      for (int64_t c = 0; c < k; ++c) {
        double sum = 0;
        for (int64_t j = 0; j < n; ++j) {
          if (ci[j] != 0) sum += ci[j] * all_[static_cast<size_t>(j * k + c)];
        }
        gi[c] = static_cast<float>(sum * scale);
      }
    }
    grad_.run();
  }

  Kind kind() const override { return Kind::kEmbedding; }
  float loss() const override { return loss_; }
  int64_t correct() const override { return 0; }
  const std::vector<int32_t>& predictions() const override { return predictions_; }
  int classes() const override { return 0; }
  const float* scores() const override {
    return static_cast<const float*>(src_.memory().get_data_handle());
  }
  int score_width() const override { return static_cast<int>(dim_); }
  double active_fraction() const override { return active_fraction_; }

 private:
  Relayout src_, grad_;
  const Blob* labels_ = nullptr;
  const NetState* state_ = nullptr;
  float margin_ = 0.f;
  TripletLossParam::Mining mining_ = TripletLossParam::BATCH_ALL;
  int64_t batch_ = 0, dim_ = 0;
  // The batch mined in the last forward: rows_ embeddings (the global
  // batch in training), this replica's at offset_.
  int64_t rows_ = 0, offset_ = 0;
  int replicas_ = 1;
  std::vector<float> all_;
  std::vector<int32_t> all_labels_;
  std::vector<double> dist_, coef_;
  MinedTriplets mined_;
  float loss_ = 0.f;
  double active_fraction_ = 0;
  std::vector<int32_t> predictions_;
};

}  // namespace

std::unique_ptr<Layer> make_triplet_loss(const LayerSpec& spec) {
  return std::make_unique<TripletLossLayer>(spec);
}

}  // namespace dptrain
