// L2Normalize: each sample divided by the L2 norm of all its features,
// y = x / max(||x||, eps). Written by hand on the plain layout (oneDNN has
// no such primitive); a 4-d input is normalized over C*H*W.
//
// Backward: where the norm is above eps, dx = (dy - y * (y . dy)) / ||x||;
// where it is clamped, y = x / eps is linear and dx = dy / eps.
#include <cmath>
#include <vector>

#include "core/engine.h"
#include "core/error.h"
#include "core/layer.h"
#include "core/layers/layers.h"
#include "core/primitive.h"

namespace dptrain {
namespace {

using dnnl::memory;

class L2NormalizeLayer : public Layer {
 public:
  using Layer::Layer;

  void setup(const std::vector<Blob*>& bottoms, Blob* top, SetupContext& ctx) override {
    check_bottoms(bottoms, 1);
    Blob& bottom = *bottoms[0];
    check_rank(bottom, {2, 4});
    eps_ = spec_.l2_normalize().eps();
    if (!(eps_ > 0.f)) throw UserError(error_prefix() + "l2_normalize.eps must be > 0");
    const memory::dims dims = bottom.dims();
    batch_ = dims[0];
    features_ = 1;
    for (size_t i = 1; i < dims.size(); ++i) features_ *= dims[i];
    const memory::desc plain = plain_desc(dims);
    ctx.define_top(top, plain);
    src_ = Relayout::input(bottom.data, plain);
    if (bottom.needs_grad) diff_src_ = Relayout::output(plain, bottom.diff);
    top_ = top;
    scale_.assign(static_cast<size_t>(batch_), 0.f);
    clamped_.assign(static_cast<size_t>(batch_), 0);
    describe_ = src_.needed() ? "reorder " + layout_name(bottom.desc()) + " -> plain" : "";
  }

  void forward(bool) override {
    src_.run();
    cpu_stream().wait();
    const float* x = static_cast<const float*>(src_.memory().get_data_handle());
    float* y = top_->data_ptr();
    const int64_t n = batch_, k = features_;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const float* xi = x + i * k;
      float* yi = y + i * k;
      double sq = 0;
      for (int64_t j = 0; j < k; ++j) sq += static_cast<double>(xi[j]) * xi[j];
      const double norm = std::sqrt(sq);
      const bool clamped = !(norm > static_cast<double>(eps_));
      const auto inv = static_cast<float>(1.0 / (clamped ? static_cast<double>(eps_) : norm));
      scale_[static_cast<size_t>(i)] = inv;
      clamped_[static_cast<size_t>(i)] = clamped;
      for (int64_t j = 0; j < k; ++j) yi[j] = xi[j] * inv;
    }
  }

  void backward() override {
    const float* y = top_->data_ptr();
    const float* dy = top_->diff_ptr();
    float* dx = static_cast<float*>(diff_src_.memory().get_data_handle());
    const int64_t n = batch_, k = features_;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const float* yi = y + i * k;
      const float* dyi = dy + i * k;
      float* dxi = dx + i * k;
      const float inv = scale_[static_cast<size_t>(i)];
      if (clamped_[static_cast<size_t>(i)]) {
        for (int64_t j = 0; j < k; ++j) dxi[j] = dyi[j] * inv;
        continue;
      }
      double dot = 0;
      for (int64_t j = 0; j < k; ++j) dot += static_cast<double>(yi[j]) * dyi[j];
      const auto d = static_cast<float>(dot);
      for (int64_t j = 0; j < k; ++j) dxi[j] = (dyi[j] - yi[j] * d) * inv;
    }
    diff_src_.run();
  }

  std::string describe() const override { return describe_; }

 private:
  float eps_ = 0.f;
  int64_t batch_ = 0, features_ = 0;
  const Blob* top_ = nullptr;
  Relayout src_, diff_src_;
  std::vector<float> scale_;      // 1 / max(||x||, eps) per sample
  std::vector<uint8_t> clamped_;  // whether eps was used
  std::string describe_;
};

}  // namespace

std::unique_ptr<Layer> make_l2_normalize(const LayerSpec& spec) {
  return std::make_unique<L2NormalizeLayer>(spec);
}

}  // namespace dptrain
