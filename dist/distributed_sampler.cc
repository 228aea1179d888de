#include "dist/distributed_sampler.h"

#include <algorithm>
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

DistributedSampler::DistributedSampler(const std::vector<int32_t>& labels, int classes,
                                       int64_t global_batch, int rank, int ranks, uint64_t seed,
                                       int classes_per_batch)
    : DistributedSampler(static_cast<int64_t>(labels.size()), global_batch, rank, ranks, true,
                         seed) {
  const int p = classes_per_batch;
  if (p < 1 || p > classes || global_batch % p != 0) {
    throw UserError("data.classes_per_batch " + std::to_string(p) + " must be in [1, " +
                    std::to_string(classes) + "] (the classes) and divide data.batch_size " +
                    std::to_string(global_batch));
  }
  classes_per_batch_ = p;
  by_class_.resize(static_cast<size_t>(classes));
  for (size_t i = 0; i < labels.size(); ++i) {
    by_class_[static_cast<size_t>(labels[i])].push_back(static_cast<int64_t>(i));
  }
  const int64_t k = global_batch / p;
  for (int c = 0; c < classes; ++c) {
    if (static_cast<int64_t>(by_class_[static_cast<size_t>(c)].size()) < k) {
      throw UserError("data.sampler BALANCED: class " + std::to_string(c) + " has " +
                      std::to_string(by_class_[static_cast<size_t>(c)].size()) +
                      " training samples, fewer than the " + std::to_string(k) +
                      " a batch takes of each (data.batch_size / data.classes_per_batch)");
    }
  }
}

std::vector<int64_t> DistributedSampler::balanced_batch(int64_t epoch, int64_t step) const {
  Rng rng(derive_seed(seed_, RandomStream::kBalanced, static_cast<uint64_t>(epoch),
                      static_cast<uint64_t>(step)));
  std::vector<int64_t> classes(by_class_.size());
  std::iota(classes.begin(), classes.end(), 0);
  const auto p = static_cast<size_t>(classes_per_batch_);
  for (size_t i = 0; i < p; ++i) {
    std::swap(classes[i], classes[i + rng.below(classes.size() - i)]);
  }
  const int64_t k = global_batch_ / classes_per_batch_;
  std::vector<int64_t> batch;
  batch.reserve(static_cast<size_t>(global_batch_));
  std::vector<int64_t> chosen;
  for (size_t i = 0; i < p; ++i) {
    const std::vector<int64_t>& members = by_class_[static_cast<size_t>(classes[i])];
    // Floyd's algorithm: k distinct positions among members.size().
    const auto n = static_cast<int64_t>(members.size());
    chosen.clear();
    for (int64_t j = n - k; j < n; ++j) {
      const auto t = static_cast<int64_t>(rng.below(static_cast<uint64_t>(j + 1)));
      chosen.push_back(std::find(chosen.begin(), chosen.end(), t) == chosen.end() ? t : j);
    }
    for (int64_t c : chosen) batch.push_back(members[static_cast<size_t>(c)]);
  }
  return batch;
}

std::vector<int64_t> DistributedSampler::epoch_indices(int64_t epoch) const {
  if (classes_per_batch_ > 0) {
    std::vector<int64_t> mine;
    mine.reserve(static_cast<size_t>(steps_ * local_batch_));
    for (int64_t s = 0; s < steps_; ++s) {
      const std::vector<int64_t> batch = balanced_batch(epoch, s);
      mine.insert(mine.end(), batch.begin() + rank_ * local_batch_,
                  batch.begin() + (rank_ + 1) * local_batch_);
    }
    return mine;
  }
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
