#include "dist/distributed_sampler.h"

#include <numeric>
#include <string>

#include "core/error.h"
#include "core/random.h"

namespace dptrain {

DistributedSampler::DistributedSampler(int64_t dataset_size, int64_t global_batch, int rank,
                                       int ranks, bool drop_last, uint64_t seed)
    : size_(dataset_size), global_batch_(global_batch), rank_(rank), seed_(seed) {
  if (global_batch % ranks != 0) {
    throw UserError("data.batch_size " + std::to_string(global_batch) +
                    " (the global batch) is not divisible by the " + std::to_string(ranks) +
                    " ranks");
  }
  if (global_batch > dataset_size) {
    throw UserError("data.batch_size " + std::to_string(global_batch) + " is larger than the " +
                    std::to_string(dataset_size) + " training samples");
  }
  local_batch_ = global_batch / ranks;
  steps_ = drop_last ? size_ / global_batch : (size_ + global_batch - 1) / global_batch;
}

std::vector<int64_t> DistributedSampler::epoch_indices(int64_t epoch) const {
  std::vector<int64_t> perm(static_cast<size_t>(size_));
  std::iota(perm.begin(), perm.end(), 0);
  Rng rng(derive_seed(seed_, RandomStream::kShuffle, static_cast<uint64_t>(epoch)));
  for (size_t i = perm.size() - 1; i > 0; --i) {
    std::swap(perm[i], perm[rng.below(i + 1)]);
  }
  std::vector<int64_t> mine;
  mine.reserve(static_cast<size_t>(steps_ * local_batch_));
  for (int64_t s = 0; s < steps_; ++s) {
    const int64_t first = s * global_batch_ + rank_ * local_batch_;
    for (int64_t i = 0; i < local_batch_; ++i) {
      mine.push_back(perm[static_cast<size_t>((first + i) % size_)]);
    }
  }
  return mine;
}

std::vector<int64_t> eval_shard(int64_t size, int rank, int ranks) {
  const int64_t begin = size * rank / ranks, end = size * (rank + 1) / ranks;
  std::vector<int64_t> shard(static_cast<size_t>(end - begin));
  std::iota(shard.begin(), shard.end(), begin);
  return shard;
}

}  // namespace dptrain
