// Which samples each rank trains on: the union over ranks of a step is the
// one-process global batch for either sampler, and the balanced sampler's
// batches are P classes of K distinct samples each, drawn from the seed.
#include "dist/distributed_sampler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "core/error.h"

namespace dptrain {
namespace {

using ::testing::HasSubstr;

std::vector<int32_t> cycling_labels(int64_t n, int classes) {
  std::vector<int32_t> y(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    y[static_cast<size_t>(i)] = static_cast<int32_t>((i * 7) % classes);
  return y;
}

// Step s's global batch as ranks 0..N-1 see it, concatenated.
std::vector<int64_t> union_of_ranks(int ranks, int64_t step, int64_t epoch,
                                    const std::vector<int32_t>* labels, int p) {
  std::vector<int64_t> out;
  for (int r = 0; r < ranks; ++r) {
    const DistributedSampler s = labels ? DistributedSampler(*labels, 5, 60, r, ranks, 9, p)
                                        : DistributedSampler(1000, 60, r, ranks, true, 9);
    const std::vector<int64_t> mine = s.epoch_indices(epoch);
    const int64_t b = s.local_batch();
    out.insert(out.end(), mine.begin() + step * b, mine.begin() + (step + 1) * b);
  }
  return out;
}

TEST(DistributedSampler, RanksSplitTheOneProcessGlobalBatch) {
  const std::vector<int32_t> labels = cycling_labels(1000, 5);
  for (const std::vector<int32_t>* l :
       {static_cast<const std::vector<int32_t>*>(nullptr), &labels}) {
    for (int64_t step : {0, 7}) {
      const std::vector<int64_t> one = union_of_ranks(1, step, 2, l, 3);
      for (int ranks : {2, 3, 4}) EXPECT_EQ(union_of_ranks(ranks, step, 2, l, 3), one) << ranks;
    }
  }
}

TEST(DistributedSampler, BalancedBatchesArePClassesOfKDistinctSamples) {
  const std::vector<int32_t> labels = cycling_labels(1000, 5);
  const DistributedSampler s(labels, 5, 60, 0, 1, 9, 3);
  EXPECT_EQ(s.steps_per_epoch(), 1000 / 60);
  const std::vector<int64_t> epoch = s.epoch_indices(0);
  ASSERT_EQ(epoch.size(), static_cast<size_t>(s.steps_per_epoch() * 60));
  std::set<std::vector<int64_t>> batches;
  for (int64_t step = 0; step < s.steps_per_epoch(); ++step) {
    const std::vector<int64_t> batch(epoch.begin() + step * 60, epoch.begin() + (step + 1) * 60);
    batches.insert(batch);
    EXPECT_EQ(std::set<int64_t>(batch.begin(), batch.end()).size(), 60u) << "repeats";
    std::vector<int32_t> blocks;
    for (size_t i = 0; i < batch.size(); ++i) {
      const int32_t c = labels[static_cast<size_t>(batch[i])];
      if (i % 20 == 0) blocks.push_back(c);
      EXPECT_EQ(c, blocks.back()) << "step " << step << ": sample " << i << " is of another class";
    }
    EXPECT_EQ(std::set<int32_t>(blocks.begin(), blocks.end()).size(), 3u);
  }
  EXPECT_EQ(batches.size(), static_cast<size_t>(s.steps_per_epoch()));
  // The same seed and epoch, the same batches; another epoch, others.
  EXPECT_EQ(DistributedSampler(labels, 5, 60, 0, 1, 9, 3).epoch_indices(0), epoch);
  EXPECT_NE(s.epoch_indices(1), epoch);
  EXPECT_NE(DistributedSampler(labels, 5, 60, 0, 1, 10, 3).epoch_indices(0), epoch);
}

TEST(DistributedSampler, BalancedSamplerRefusesImpossibleBatches) {
  const std::vector<int32_t> labels = cycling_labels(100, 5);
  auto error = [&](int64_t batch, int p, const std::vector<int32_t>& y) {
    try {
      DistributedSampler(y, 5, batch, 0, 1, 1, p);
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_THAT(error(60, 7, labels), HasSubstr("data.classes_per_batch 7"));
  EXPECT_THAT(error(60, 0, labels), HasSubstr("data.classes_per_batch 0"));
  EXPECT_THAT(error(60, 8, labels), HasSubstr("[1, 5]"));
  // 40 per class of 5 classes of 20 samples each: too few.
  EXPECT_THAT(error(80, 2, labels),
              HasSubstr("class 0 has 20 training samples, fewer than the 40"));
}

}  // namespace
}  // namespace dptrain
