// Which samples each rank trains on. Every epoch is one permutation of the
// training set derived from (seed, epoch) alone; step s of the epoch is the
// global batch perm[s*B, (s+1)*B), and rank r takes its r-th contiguous
// slice of B/N samples. The union over ranks of any step is therefore the
// same global batch whatever N is, which is what makes N ranks equivalent
// to one.
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

  int64_t steps_per_epoch() const { return steps_; }
  int64_t local_batch() const { return local_batch_; }
  // This rank's dataset indices for the epoch, step after step.
  std::vector<int64_t> epoch_indices(int64_t epoch) const;

 private:
  int64_t size_, global_batch_, local_batch_, steps_;
  int rank_;
  uint64_t seed_;
};

// The contiguous part of [0, size) that `rank` evaluates; each sample is
// counted by exactly one rank.
std::vector<int64_t> eval_shard(int64_t size, int rank, int ranks);

}  // namespace dptrain
