#include "core/batch_loader.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include "core/error.h"
#include "core/random.h"

namespace dptrain {

namespace {

constexpr size_t kAlignment = 64;

// Throws unless `values` holds 0, 1 or `channels` entries.
void check_count(const std::vector<float>& values, int channels, const char* field) {
  size_t n = values.size();
  if (n != 0 && n != 1 && n != static_cast<size_t>(channels)) {
    throw UserError(std::string("data.") + field + ": " + std::to_string(n) + " values for " +
                    std::to_string(channels) + " channels (give none, one, or one per channel)");
  }
}

void check_normalization(const Normalization& norm, int channels) {
  check_count(norm.mean, channels, "mean");
  check_count(norm.std, channels, "std");
  for (float m : norm.mean) {
    if (!std::isfinite(m)) throw UserError("data.mean: " + std::to_string(m) + " is not finite");
  }
  for (float s : norm.std) {
    if (!(s > 0.0f) || !std::isfinite(s)) {
      throw UserError("data.std: " + std::to_string(s) + " must be finite and > 0");
    }
  }
}

template <typename T>
T* aligned_array(size_t count) {
  size_t bytes =
      (std::max<size_t>(count * sizeof(T), 1) + kAlignment - 1) / kAlignment * kAlignment;
  void* p = std::aligned_alloc(kAlignment, bytes);
  if (p == nullptr) throw std::bad_alloc();
  return static_cast<T*>(p);
}

}  // namespace

Normalization Normalization::from_spec(const DataSpec& spec, int channels) {
  Normalization norm;
  norm.mean.assign(spec.mean().begin(), spec.mean().end());
  norm.std.assign(spec.std().begin(), spec.std().end());
  check_normalization(norm, channels);
  return norm;
}

void BatchLoader::FreeDeleter::operator()(void* p) const { std::free(p); }

float Normalization::mean_of(int c) const {
  if (mean.empty()) return 0.f;
  return mean.size() == 1 ? mean[0] : mean[static_cast<size_t>(c)];
}

float Normalization::std_of(int c) const {
  if (std.empty()) return 1.f;
  return std.size() == 1 ? std[0] : std[static_cast<size_t>(c)];
}

BatchLoader::BatchLoader(const Dataset& data, const Normalization& norm,
                         const Augmentation& augment, int batch_size, int prefetch_batches,
                         uint64_t seed)
    : data_(data),
      batch_size_(batch_size),
      crop_padding_(augment.crop_padding()),
      horizontal_flip_(augment.horizontal_flip()),
      seed_(seed),
      sample_floats_(data.sample_size()) {
  if (batch_size <= 0) {
    throw UserError("batch size must be > 0 per rank, got " + std::to_string(batch_size));
  }
  if (prefetch_batches < 0) {
    throw UserError("data.prefetch_batches must be >= 0, got " + std::to_string(prefetch_batches));
  }
  if (crop_padding_ < 0) {
    throw UserError("data.augment.crop_padding must be >= 0, got " + std::to_string(crop_padding_));
  }
  check_normalization(norm, data.channels);

  lut_.resize(static_cast<size_t>(data.channels) * 256);
  for (int c = 0; c < data.channels; ++c) {
    const float mean = norm.mean_of(c), std = norm.std_of(c);
    for (int v = 0; v < 256; ++v) {
      lut_[static_cast<size_t>(c) * 256 + static_cast<size_t>(v)] =
          (static_cast<float>(v) / 255.0f - mean) / std;
    }
  }

  ring_.resize(static_cast<size_t>(prefetch_batches) + 1);
  for (Slot& slot : ring_) {
    slot.images.reset(aligned_array<float>(static_cast<size_t>(batch_size * sample_floats_)));
    slot.labels.reset(aligned_array<int32_t>(static_cast<size_t>(batch_size)));
  }
}

BatchLoader::~BatchLoader() { stop_producer(); }

void BatchLoader::stop_producer() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  slot_freed_.notify_all();
  if (producer_.joinable()) producer_.join();
}

void BatchLoader::start(int64_t epoch, std::vector<int64_t> indices, bool augment) {
  stop_producer();
  // No producer runs now: the pass and the counters are ours alone.
  epoch_ = epoch;
  indices_ = std::move(indices);
  augment_ = augment;
  auto n = static_cast<int64_t>(indices_.size());
  num_batches_ = (n + batch_size_ - 1) / batch_size_;
  stop_ = false;
  produced_ = handed_ = released_ = 0;
  error_ = nullptr;
  if (num_batches_ == 0) return;
  try {
    producer_ = std::thread(&BatchLoader::produce, this);
  } catch (...) {
    num_batches_ = 0;
    throw;
  }
}

const Batch* BatchLoader::next() {
  std::unique_lock<std::mutex> lock(mutex_);
  if (handed_ > released_) {  // the caller is done with the batch it holds
    released_ = handed_;
    slot_freed_.notify_one();
  }
  if (handed_ == num_batches_) return nullptr;
  batch_ready_.wait(lock, [&] { return produced_ > handed_ || error_ != nullptr; });
  if (produced_ > handed_) {
    const Batch* batch = &ring_[static_cast<size_t>(handed_) % ring_.size()].batch;
    ++handed_;
    return batch;
  }
  std::rethrow_exception(error_);
}

int64_t BatchLoader::batches_in_pass() const { return num_batches_; }

void BatchLoader::produce() {
  const auto ring = static_cast<int64_t>(ring_.size());
  try {
    for (int64_t b = 0; b < num_batches_; ++b) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        // Batch b reuses the slot of batch b - ring, which must be released.
        slot_freed_.wait(lock, [&] { return stop_ || b < released_ + ring; });
        if (stop_) return;
      }
      fill(ring_[static_cast<size_t>(b % ring)], b);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        produced_ = b + 1;
      }
      batch_ready_.notify_one();
    }
  } catch (...) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      error_ = std::current_exception();
    }
    batch_ready_.notify_one();
  }
}

void BatchLoader::fill(Slot& slot, int64_t batch_index) {
  const int64_t begin = batch_index * batch_size_;
  const int64_t count =
      std::min<int64_t>(batch_size_, static_cast<int64_t>(indices_.size()) - begin);
  float* images = slot.images.get();
  int32_t* labels = slot.labels.get();
  for (int64_t r = 0; r < count; ++r) {
    int64_t index = indices_[static_cast<size_t>(begin + r)];
    if (index < 0 || index >= data_.size()) {
      throw std::out_of_range("BatchLoader: index " + std::to_string(index) + " at position " +
                              std::to_string(begin + r) + " of the pass is outside the dataset (" +
                              std::to_string(data_.size()) + " samples)");
    }
    labels[r] = data_.labels[static_cast<size_t>(index)];
    load_sample(index, augment_, images + r * sample_floats_);
  }
  std::fill(labels + count, labels + batch_size_, -1);
  std::memset(images + count * sample_floats_, 0,
              static_cast<size_t>((batch_size_ - count) * sample_floats_) * sizeof(float));
  slot.batch = Batch{images, labels, count, batch_index};
}

void BatchLoader::load_sample(int64_t dataset_index, bool augment, float* out) const {
  const int channels = data_.channels, height = data_.height, width = data_.width;
  const int64_t plane = int64_t{height} * width;
  const uint8_t* src = data_.pixels.data() + dataset_index * sample_floats_;

  if (!augment || (crop_padding_ == 0 && !horizontal_flip_)) {
    for (int c = 0; c < channels; ++c) {
      const float* lut = lut_.data() + c * 256;
      const uint8_t* in = src + c * plane;
      float* dst = out + c * plane;
      for (int64_t p = 0; p < plane; ++p) dst[p] = lut[in[p]];
    }
    return;
  }

  // The draws depend on nothing but (seed, epoch, sample): see the header.
  Rng rng(derive_seed(seed_, RandomStream::kAugment, static_cast<uint64_t>(epoch_),
                      static_cast<uint64_t>(dataset_index)));
  // Output pixel (y, x) of the crop reads source pixel (y + dy, x + dx) of
  // the unpadded image; outside it is padding.
  int dy = 0, dx = 0;
  if (crop_padding_ > 0) {
    const auto span = static_cast<uint64_t>(2 * crop_padding_ + 1);
    dy = static_cast<int>(rng.below(span)) - crop_padding_;
    dx = static_cast<int>(rng.below(span)) - crop_padding_;
  }
  const bool flip = horizontal_flip_ && (rng.next_u64() >> 63) != 0;
  // With the flip, output x shows crop column width-1-x, i.e. source
  // column width-1-x+dx. Columns [x_begin, x_end) of the output come from
  // the image, the rest is padding.
  const int x_begin = flip ? std::max(0, dx) : std::max(0, -dx);
  const int x_end = flip ? std::min(width, width + dx) : std::min(width, width - dx);

  for (int c = 0; c < channels; ++c) {
    const float* lut = lut_.data() + c * 256;
    const float pad = lut[0];  // the normalised value of a zero pixel
    for (int y = 0; y < height; ++y) {
      float* row = out + c * plane + int64_t{y} * width;
      const int sy = y + dy;
      if (sy < 0 || sy >= height || x_begin >= x_end) {
        std::fill(row, row + width, pad);
        continue;
      }
      const uint8_t* in = src + c * plane + int64_t{sy} * width;
      std::fill(row, row + x_begin, pad);
      if (flip) {
        for (int x = x_begin; x < x_end; ++x) row[x] = lut[in[width - 1 + dx - x]];
      } else {
        for (int x = x_begin; x < x_end; ++x) row[x] = lut[in[x + dx]];
      }
      std::fill(row + x_end, row + width, pad);
    }
  }
}

}  // namespace dptrain
