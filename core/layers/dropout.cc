// Dropout (inverted): in training each element is kept with probability
// 1 - ratio and scaled by 1 / (1 - ratio), so evaluation is the identity.
//
// The mask is a pure function of (seed, layer, step, rank, chunk): elements
// are drawn in fixed-size chunks of the physical buffer, each chunk from its
// own generator, so the mask does not depend on the number of threads and
// a resumed run draws the same masks. Works on the buffer in whatever
// layout the producer chose (padding stays zero: 0 * anything is 0).
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
    top_ = top;
    state_ = &ctx.state();
    ctx.define_top(top, bottom_->desc());
    count_ = static_cast<int64_t>(bottom_->desc().get_size() / sizeof(float));
    mask_.assign(static_cast<size_t>(count_), 0);
  }

  void forward(bool training) override {
    cpu_stream().wait();
    const float* x = bottom_->data_ptr();
    float* y = top_->data_ptr();
    if (!training) {
      std::memcpy(y, x, static_cast<size_t>(count_) * sizeof(float));
      return;
    }
    const float ratio = ratio_;
    const float scale = 1.f / (1.f - ratio_);
    const uint64_t layer_seed =
        derive_seed(state_->seed, RandomStream::kDropout, name_hash(name()));
    const auto step = static_cast<uint64_t>(state_->step);
    const auto rank = static_cast<uint64_t>(state_->rank);
    const int64_t count = count_;
    const int64_t chunks = (count + kChunk - 1) / kChunk;
    uint8_t* mask = mask_.data();
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < chunks; ++k) {
      Rng rng(
          derive_seed(layer_seed, RandomStream::kDropout, step, rank, static_cast<uint64_t>(k)));
      const int64_t end = std::min(count, (k + 1) * kChunk);
      for (int64_t i = k * kChunk; i < end; ++i) {
        const bool keep = rng.uniform() >= ratio;
        mask[i] = keep;
        y[i] = keep ? x[i] * scale : 0.f;
      }
    }
  }

  void backward() override {
    const float* dy = top_->diff_ptr();
    float* dx = bottom_->diff_ptr();
    const float scale = 1.f / (1.f - ratio_);
    const uint8_t* mask = mask_.data();
    const int64_t count = count_;
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < count; ++i) dx[i] = mask[i] ? dy[i] * scale : 0.f;
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
  std::vector<uint8_t> mask_;
};

}  // namespace

std::unique_ptr<Layer> make_dropout(const LayerSpec& spec) {
  return std::make_unique<DropoutLayer>(spec);
}

}  // namespace dptrain
