// Which samples each rank trains on. Every epoch is one permutation of the
// training set derived from (seed, epoch) alone; step s of the epoch is the
// global batch perm[s*B, (s+1)*B), and rank r takes its r-th contiguous
// slice of B/N samples. The union over ranks of any step is therefore the
// same global batch whatever N is, which is what makes N ranks equivalent
// to one.
//
// Balanced (data.sampler BALANCED): step s of an epoch draws P classes and
// then K = B/P distinct samples of each from (seed, epoch, s) alone; the
// global batch is the P blocks of K in the order drawn, split the same way.
#pragma once

#include <cstdint>
#include <vector>

namespace dptrain {

class DistributedSampler {
 public:
  // drop_last: drop the final partial global batch; otherwise fill it up
  // with samples from the start of the permutation. Throws UserError when
  // the global batch is not divisible by the ranks or exceeds the data.
  DistributedSampler(int64_t dataset_size, int64_t global_batch, int rank, int ranks,
                     bool drop_last, uint64_t seed);
  // The balanced sampler over `labels` (in [0, classes)), P classes per
  // batch. Throws UserError when P does not divide the batch, exceeds the
  // classes, or a class has fewer than K samples.
  DistributedSampler(const std::vector<int32_t>& labels, int classes, int64_t global_batch,
                     int rank, int ranks, uint64_t seed, int classes_per_batch);

  int64_t steps_per_epoch() const { return steps_; }
  int64_t local_batch() const { return local_batch_; }
  // This rank's dataset indices for the epoch, step after step.
  std::vector<int64_t> epoch_indices(int64_t epoch) const;

 private:
  std::vector<int64_t> balanced_batch(int64_t epoch, int64_t step) const;

  int64_t size_, global_batch_, local_batch_, steps_;
  int rank_;
  uint64_t seed_;
  int classes_per_batch_ = 0;                   // 0: the shuffle sampler
  std::vector<std::vector<int64_t>> by_class_;  // balanced: indices per class
};

// The contiguous part of [0, size) that `rank` evaluates; each sample is
// counted by exactly one rank.
std::vector<int64_t> eval_shard(int64_t size, int rank, int ranks);

}  // namespace dptrain
