// Turns dataset indices into normalised (and optionally augmented) float
// batches on a background thread, a few batches ahead of the trainer.
// A sample's augmentation depends only on (seed, epoch, dataset index), so
// the same sample comes out bit-identical whichever rank, batch or batch
// position loads it: the distributed trainer sees exactly the batches one
// process would.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/dataset.h"
#include "core/dptrain.pb.h"

namespace dptrain {

// Per-channel normalisation: x = (pixel/255 - mean[c]) / std[c]; empty
// mean/std = pixel/255 only; a single value applies to all channels.
struct Normalization {
  std::vector<float> mean, std;
  // Throws UserError if the counts are neither 0, 1 nor `channels`, or a
  // std is <= 0.
  static Normalization from_spec(const DataSpec&, int channels);
  // Channel c's values: the one value for all, or none (0 and 1).
  float mean_of(int c) const;
  float std_of(int c) const;
};

struct Batch {
  // batch_size x C x H x W, NCHW plain, 64-byte aligned; rows >= count are zero.
  float* images = nullptr;
  // batch_size entries; rows >= count are -1.
  int32_t* labels = nullptr;
  // Valid samples (== batch_size except a final partial eval batch).
  int64_t count = 0;
  // Position of this batch in the epoch.
  int64_t index = 0;
};

// One consumer thread calls start() and next(); `data` must outlive the
// loader. All batch memory is allocated in the constructor: a ring of
// prefetch_batches + 1 buffers, one of which the consumer holds.
class BatchLoader {
 public:
  // augment: random crop with padding / horizontal flip as in spec.augment();
  // applied only when start() says so. Throws UserError for a batch_size
  // <= 0, prefetch_batches < 0, crop_padding < 0 or a Normalization that
  // does not fit data.channels.
  BatchLoader(const Dataset& data, const Normalization& norm, const Augmentation& augment,
              int batch_size, int prefetch_batches, uint64_t seed);
  ~BatchLoader();  // stops and joins the thread, also mid-epoch
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  // Starts producing the batches for `indices` (dataset indices, in order):
  // consecutive groups of batch_size; a final partial group becomes a batch
  // with count < batch_size (zero padded). Any batches of a previous pass
  // not yet consumed are discarded.
  void start(int64_t epoch, std::vector<int64_t> indices, bool augment);
  // Blocks until the next batch is ready and returns it; the batch stays
  // valid (not overwritten) until the next call of next() or start().
  // Returns nullptr when the pass is exhausted (or before any start()).
  // An error in the producer (e.g. an index outside the dataset,
  // std::out_of_range) is rethrown here once the batches before it have
  // been handed out.
  const Batch* next();
  int64_t batches_in_pass() const;

 private:
  struct FreeDeleter {
    void operator()(void* p) const;
  };
  struct Slot {
    std::unique_ptr<float, FreeDeleter> images;
    std::unique_ptr<int32_t, FreeDeleter> labels;
    Batch batch;
  };

  void stop_producer();
  void produce();
  void fill(Slot& slot, int64_t batch_index);
  void load_sample(int64_t dataset_index, bool augment, float* out) const;

  const Dataset& data_;
  const int batch_size_;
  const int crop_padding_;
  const bool horizontal_flip_;
  const uint64_t seed_;
  const int64_t sample_floats_;
  std::vector<float> lut_;  // channels x 256: normalised value of each pixel byte
  std::vector<Slot> ring_;

  // The current pass; written by start() only while no producer runs.
  int64_t epoch_ = 0;
  std::vector<int64_t> indices_;
  bool augment_ = false;
  int64_t num_batches_ = 0;

  std::mutex mutex_;
  std::condition_variable slot_freed_;   // producer waits for a free slot
  std::condition_variable batch_ready_;  // consumer waits for a batch
  bool stop_ = false;
  int64_t produced_ = 0;  // batches written in this pass
  int64_t handed_ = 0;    // batches returned by next()
  int64_t released_ = 0;  // batches whose slot may be overwritten
  std::exception_ptr error_;
  std::thread producer_;
};

}  // namespace dptrain
