// Dropout (inverted): in training each element is kept with probability
// 1 - ratio and scaled by 1 / (1 - ratio), so evaluation is the identity.
//
// The mask is a pure function of (seed, layer, step, global sample
// position, element): each sample's elements are drawn in logical (plain)
// order, in fixed-size chunks each from its own generator keyed by the
// sample's position in the global batch. So the mask depends neither on
// the thread count, nor on the rank count or the layout oneDNN picked for
// this batch size, and a resumed run draws the same masks. The plain mask
// (0 or the scale) is reordered once into the blob's layout, where padding
// becomes 0, and the data is multiplied by it.
#include <cstring>
#include <sstream>
#include <vector>

#include "core/engine.h"
#include "core/error.h"
#include "core/layer.h"
#include "core/layers/layers.h"
#include "core/primitive.h"
#include "core/random.h"

namespace dptrain {
namespace {

constexpr int64_t kChunk = 4096;  // elements per generator

// FNV-1a: a hash of the layer name that is the same everywhere, so two
// Dropout layers of one net draw different masks.
uint64_t name_hash(const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (const char ch : name) {
    h ^= static_cast<unsigned char>(ch);
    h *= 0x100000001b3ULL;
  }
  return h;
}

class DropoutLayer : public Layer {
 public:
  using Layer::Layer;

  void setup(const std::vector<Blob*>& bottoms, Blob* top, SetupContext& ctx) override {
    check_bottoms(bottoms, 1);
    ratio_ = spec_.dropout().ratio();
    if (!(ratio_ >= 0.f && ratio_ < 1.f)) {
      throw UserError(error_prefix() + "dropout.ratio must be in [0, 1), got " +
                      std::to_string(ratio_));
    }
    bottom_ = bottoms[0];
    if (bottom_->desc().data_type() != dnnl::memory::data_type::f32) {
      throw UserError(error_prefix() + "runs on f32 activations only (precision: FP32)");
    }
    top_ = top;
    state_ = &ctx.state();
    ctx.define_top(top, bottom_->desc());
    count_ = static_cast<int64_t>(bottom_->desc().get_size() / sizeof(float));
    const dnnl::memory::dims dims = bottom_->desc().dims();
    samples_ = dims[0];
    plain_mask_ = dnnl::memory(plain_desc(dims), cpu_engine());
    if (plain_mask_.get_desc() == bottom_->desc()) {
      mask_ = plain_mask_;
    } else {
      mask_ = dnnl::memory(bottom_->desc(), cpu_engine());
      to_layout_ = make_reorder(plain_mask_, mask_);
    }
  }

  void forward(bool training) override {
    cpu_stream().wait();
    const float* x = bottom_->data_ptr();
    float* y = top_->data_ptr();
    if (!training) {
      std::memcpy(y, x, static_cast<size_t>(count_) * sizeof(float));
      return;
    }
    draw_mask();
    const float* m = static_cast<const float*>(mask_.get_data_handle());
    const int64_t count = count_;
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < count; ++i) y[i] = x[i] * m[i];
  }

  void backward() override {
    const float* dy = top_->diff_ptr();
    float* dx = bottom_->diff_ptr();
    const float* m = static_cast<const float*>(mask_.get_data_handle());
    const int64_t count = count_;
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < count; ++i) dx[i] = dy[i] * m[i];
  }

  bool backward_reads_bottoms() const override { return false; }  // the mask suffices
  bool backward_reads_top() const override { return false; }

  std::string describe() const override {
    std::ostringstream out;
    out << "ratio " << ratio_;
    return out.str();
  }

 private:
  float ratio_ = 0.f;
  int64_t count_ = 0;
  const Blob* bottom_ = nullptr;
  const Blob* top_ = nullptr;
  const NetState* state_ = nullptr;
  int64_t samples_ = 0;
  dnnl::memory plain_mask_, mask_;  // the same memory when the blob is plain
  BoundPrimitive to_layout_;

  void draw_mask() {
    const float ratio = ratio_;
    const float scale = 1.f / (1.f - ratio_);
    const uint64_t layer_seed =
        derive_seed(state_->seed, RandomStream::kDropout, name_hash(name()));
    const auto step = static_cast<uint64_t>(state_->step);
    const auto first = static_cast<uint64_t>(state_->sample_offset);
    const int64_t per_sample =
        static_cast<int64_t>(plain_mask_.get_desc().get_size() / sizeof(float)) / samples_;
    const int64_t chunks = (per_sample + kChunk - 1) / kChunk;
    float* mask = static_cast<float*>(plain_mask_.get_data_handle());
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t n = 0; n < samples_; ++n) {
      for (int64_t k = 0; k < chunks; ++k) {
        Rng rng(derive_seed(layer_seed, RandomStream::kDropout, step,
                            first + static_cast<uint64_t>(n), static_cast<uint64_t>(k)));
        const int64_t end = std::min(per_sample, (k + 1) * kChunk);
        float* row = mask + n * per_sample;
        for (int64_t i = k * kChunk; i < end; ++i) row[i] = rng.uniform() >= ratio ? scale : 0.f;
      }
    }
    if (to_layout_) {
      to_layout_.run();
      cpu_stream().wait();
    }
  }
};

}  // namespace

std::unique_ptr<Layer> make_dropout(const LayerSpec& spec) {
  return std::make_unique<DropoutLayer>(spec);
}

}  // namespace dptrain
