#include "core/batch_loader.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include "core/error.h"
#include "core/image.h"
#include "core/log.h"
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
                         uint64_t seed, int threads)
    : data_(data),
      batch_size_(batch_size),
      crop_padding_(augment.crop_padding()),
      horizontal_flip_(augment.horizontal_flip()),
      seed_(seed),
      sample_floats_(data.sample_size()),
      threads_(threads) {
  if (batch_size <= 0) {
    throw UserError("batch size must be > 0 per rank, got " + std::to_string(batch_size));
  }
  if (prefetch_batches < 0) {
    throw UserError("data.prefetch_batches must be >= 0, got " + std::to_string(prefetch_batches));
  }
  if (crop_padding_ < 0) {
    throw UserError("data.augment.crop_padding must be >= 0, got " + std::to_string(crop_padding_));
  }
  if (threads < 1) {
    throw UserError("data.loader_threads must be >= 1, got " + std::to_string(threads));
  }
  check_normalization(norm, data.channels);
  if (data.from_files) bad_.assign(static_cast<size_t>(data.size()), false);

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
  fill_.skipped.resize(static_cast<size_t>(threads));
  fill_.failed_row.resize(static_cast<size_t>(threads));
  fill_.error.resize(static_cast<size_t>(threads));
  try {
    for (int part = 1; part < threads; ++part)
      helpers_.emplace_back(&BatchLoader::help, this, part);
  } catch (...) {
    stop_helpers();
    throw;
  }
}

BatchLoader::~BatchLoader() {
  stop_producer();
  stop_helpers();
}

void BatchLoader::stop_helpers() {
  {
    std::lock_guard<std::mutex> lock(fill_mutex_);
    fill_.quit = true;
  }
  fill_posted_.notify_all();
  for (std::thread& t : helpers_) t.join();
  helpers_.clear();
}

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
  {
    std::lock_guard<std::mutex> lock(fill_mutex_);
    fill_.slot = &slot;
    fill_.begin = begin;
    fill_.count = count;
    fill_.busy = threads_ - 1;
    ++fill_.generation;
  }
  fill_posted_.notify_all();
  fill_rows(0);
  std::unique_lock<std::mutex> lock(fill_mutex_);
  fill_done_.wait(lock, [&] { return fill_.busy == 0; });
  // The error of the first failing row, whichever thread met it.
  int64_t skipped = 0;
  int first = -1;
  for (int part = 0; part < threads_; ++part) {
    const auto p = static_cast<size_t>(part);
    skipped += fill_.skipped[p];
    if (fill_.error[p] &&
        (first < 0 || fill_.failed_row[p] < fill_.failed_row[static_cast<size_t>(first)])) {
      first = part;
    }
  }
  if (first >= 0) std::rethrow_exception(fill_.error[static_cast<size_t>(first)]);
  float* images = slot.images.get();
  int32_t* labels = slot.labels.get();
  std::fill(labels + count, labels + batch_size_, -1);
  std::memset(images + count * sample_floats_, 0,
              static_cast<size_t>((batch_size_ - count) * sample_floats_) * sizeof(float));
  slot.batch = Batch{images, labels, count, batch_index, skipped};
}

void BatchLoader::help(int part) {
  int64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(fill_mutex_);
      fill_posted_.wait(lock, [&] { return fill_.quit || fill_.generation != seen; });
      if (fill_.quit) return;
      seen = fill_.generation;
    }
    fill_rows(part);
    {
      std::lock_guard<std::mutex> lock(fill_mutex_);
      --fill_.busy;
    }
    fill_done_.notify_one();
  }
}

void BatchLoader::fill_rows(int part) {
  // The fields read here are written only while no part is at work.
  const auto p = static_cast<size_t>(part);
  fill_.skipped[p] = 0;
  fill_.error[p] = nullptr;
  try {
    for (int64_t row = part; row < fill_.count; row += threads_) {
      fill_.failed_row[p] = row;
      if (load_row(fill_.begin + row, row)) ++fill_.skipped[p];
    }
  } catch (...) {
    fill_.error[p] = std::current_exception();
  }
}

bool BatchLoader::load_row(int64_t position, int64_t row) {
  int64_t index = indices_[static_cast<size_t>(position)];
  if (index < 0 || index >= data_.size()) {
    throw std::out_of_range("BatchLoader: index " + std::to_string(index) + " at position " +
                            std::to_string(position) + " of the pass is outside the dataset (" +
                            std::to_string(data_.size()) + " samples)");
  }
  float* out = fill_.slot->images.get() + row * sample_floats_;
  int32_t* label = fill_.slot->labels.get() + row;
  auto rng_for = [&](int64_t i) {
    // The draws depend on nothing but (seed, epoch, sample): see the header.
    return Rng(derive_seed(seed_, RandomStream::kAugment, static_cast<uint64_t>(epoch_),
                           static_cast<uint64_t>(i)));
  };
  if (!data_.from_files) {
    Rng rng = rng_for(index);
    *label = data_.labels[static_cast<size_t>(index)];
    normalise(data_.pixels.data() + index * sample_floats_, augment_, &rng, out);
    return false;
  }
  thread_local std::vector<uint8_t> pixels;
  pixels.resize(static_cast<size_t>(sample_floats_));
  const bool skip = data_.image_folder.bad_images() == ImageFolderSpec::SKIP;
  bool replaced = false;
  // Under SKIP a bad sample gives way to the next readable one of the split.
  for (int64_t tries = 0;; ++tries) {
    if (tries == data_.size()) {
      throw UserError("image folder " + data_.root + ": not one of its " +
                      std::to_string(data_.size()) + " images of this split can be read");
    }
    if (!skip || !known_bad(index)) {
      Rng rng = rng_for(index);
      try {
        decode_sample(index, augment_, &rng, pixels.data());
        *label = data_.labels[static_cast<size_t>(index)];
        normalise(pixels.data(), augment_, &rng, out);
        return replaced;
      } catch (const UserError& e) {
        if (!skip) throw;
        mark_bad(index, e.what());
      }
    }
    replaced = true;
    index = (index + 1) % data_.size();
  }
}

void BatchLoader::decode_sample(int64_t index, bool augment, Rng* rng, uint8_t* out) const {
  thread_local std::vector<uint8_t> bytes;
  const ImageFolderSpec& spec = data_.image_folder;
  const Image image = load_image(data_.file_path(index), data_.channels, &bytes);
  const Box box =
      augment && spec.has_random_resized_crop()
          ? random_resized_box(image.width, image.height, spec.random_resized_crop(), *rng)
          : center_box(image.width, image.height, spec.resize(), data_.width, data_.height);
  resample(image, box, data_.width, data_.height, out);
}

bool BatchLoader::known_bad(int64_t index) {
  std::lock_guard<std::mutex> lock(bad_mutex_);
  return bad_[static_cast<size_t>(index)];
}

void BatchLoader::mark_bad(int64_t index, const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(bad_mutex_);
    if (bad_[static_cast<size_t>(index)]) return;
    bad_[static_cast<size_t>(index)] = true;
  }
  log_warn("skipping an unreadable image (data.image_folder.bad_images: SKIP): " + reason);
}

void BatchLoader::normalise(const uint8_t* src, bool augment, Rng* rng, float* out) const {
  const int channels = data_.channels, height = data_.height, width = data_.width;
  const int64_t plane = int64_t{height} * width;

  if (!augment || (crop_padding_ == 0 && !horizontal_flip_)) {
    for (int c = 0; c < channels; ++c) {
      const float* lut = lut_.data() + c * 256;
      const uint8_t* in = src + c * plane;
      float* dst = out + c * plane;
      for (int64_t p = 0; p < plane; ++p) dst[p] = lut[in[p]];
    }
    return;
  }

  // Output pixel (y, x) of the crop reads source pixel (y + dy, x + dx) of
  // the unpadded image; outside it is padding.
  int dy = 0, dx = 0;
  if (crop_padding_ > 0) {
    const auto span = static_cast<uint64_t>(2 * crop_padding_ + 1);
    dy = static_cast<int>(rng->below(span)) - crop_padding_;
    dx = static_cast<int>(rng->below(span)) - crop_padding_;
  }
  const bool flip = horizontal_flip_ && (rng->next_u64() >> 63) != 0;
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
