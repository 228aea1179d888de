// Turns dataset indices into normalised (and optionally augmented) float
// batches on background threads, a few batches ahead of the trainer; an
// image folder's files are read and decoded there, each rank's loader
// touching only the samples of its own shard. A sample's augmentation
// depends only on (seed, epoch, dataset index), so the same sample comes
// out bit-identical whichever rank, batch, batch position or loader thread
// loads it: the distributed trainer sees exactly the batches one process
// would.
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
#include "core/random.h"

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
  // Samples replaced by the next readable one because their image file
  // could not be read (image_folder.bad_images: SKIP).
  int64_t skipped = 0;
};

// One consumer thread calls start() and next(); `data` must outlive the
// loader. All batch memory is allocated in the constructor: a ring of
// prefetch_batches + 1 buffers, one of which the consumer holds. `threads`
// threads fill a batch together (the producer and threads - 1 helpers).
class BatchLoader {
 public:
  // augment: random crop with padding / horizontal flip as in spec.augment();
  // applied only when start() says so (and an image folder's
  // random_resized_crop with it). Throws UserError for a batch_size <= 0,
  // prefetch_batches < 0, crop_padding < 0, threads < 1 or a
  // Normalization that does not fit data.channels.
  BatchLoader(const Dataset& data, const Normalization& norm, const Augmentation& augment,
              int batch_size, int prefetch_batches, uint64_t seed, int threads = 1);
  ~BatchLoader();  // stops and joins the threads, also mid-epoch
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
  // std::out_of_range, or an unreadable image under bad_images: STOP, a
  // UserError naming the file) is rethrown here once the batches before it
  // have been handed out.
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
  void stop_helpers();
  void produce();
  void fill(Slot& slot, int64_t batch_index);
  void help(int part);
  // Rows part, part + threads, ... of the batch being filled.
  void fill_rows(int part);
  // Row `row` of the batch being filled from pass position `position`;
  // returns whether the sample had to be replaced.
  bool load_row(int64_t position, int64_t row);
  // An image folder's sample `index` as uint8 CHW; throws UserError if its
  // file cannot be read or decoded.
  void decode_sample(int64_t index, bool augment, Rng* rng, uint8_t* out) const;
  void normalise(const uint8_t* src, bool augment, Rng* rng, float* out) const;
  // Under SKIP: whether `index` is known unreadable; marks and logs it.
  bool known_bad(int64_t index);
  void mark_bad(int64_t index, const std::string& reason);

  const Dataset& data_;
  const int batch_size_;
  const int crop_padding_;
  const bool horizontal_flip_;
  const uint64_t seed_;
  const int64_t sample_floats_;
  const int threads_;
  std::vector<float> lut_;  // channels x 256: normalised value of each pixel byte
  std::vector<Slot> ring_;

  // The batch being filled, shared by the producer and the helpers.
  struct Fill {
    Slot* slot = nullptr;
    int64_t begin = 0, count = 0;
    int64_t generation = 0;  // bumped per batch; helpers wait for a new one
    int busy = 0;            // helpers still at work on it
    bool quit = false;
    // Per part: replaced samples, and the first failing row and its error.
    std::vector<int64_t> skipped, failed_row;
    std::vector<std::exception_ptr> error;
  };
  Fill fill_;
  std::mutex fill_mutex_;
  std::condition_variable fill_posted_, fill_done_;
  std::vector<std::thread> helpers_;

  std::mutex bad_mutex_;
  std::vector<bool> bad_;  // IMAGE_FOLDER under SKIP: samples known unreadable

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
