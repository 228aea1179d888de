// The background batch loader: order and padding of batches, normalisation,
// augmentation (correct, deterministic, independent of where a sample is
// loaded), restarts, errors and shutdown.
#include "core/batch_loader.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <set>
#include <thread>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "core/random.h"

namespace dptrain {
namespace {

using ::testing::HasSubstr;

// n samples of C x H x W whose pixels are a fixed function of (sample, pixel)
// and whose labels are sample % 10.
Dataset make_dataset(int64_t n, int c, int h, int w) {
  Dataset d;
  d.channels = c;
  d.height = h;
  d.width = w;
  d.classes = 10;
  d.pixels.resize(static_cast<size_t>(n * d.sample_size()));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t p = 0; p < d.sample_size(); ++p) {
      d.pixels[static_cast<size_t>(i * d.sample_size() + p)] =
          static_cast<uint8_t>((i * 37 + p * 11 + 1) % 256);
    }
    d.labels.push_back(static_cast<int32_t>(i % 10));
  }
  return d;
}

Augmentation augmentation(int crop_padding, bool flip) {
  Augmentation a;
  a.set_crop_padding(crop_padding);
  a.set_horizontal_flip(flip);
  return a;
}

std::vector<int64_t> iota(int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = i;
  return v;
}

// Sample i of d as the loader outputs it without augmentation.
std::vector<float> plain(const Dataset& d, int64_t i, const Normalization& norm = {}) {
  std::vector<float> out(static_cast<size_t>(d.sample_size()));
  const int64_t plane = int64_t{d.height} * d.width;
  for (int64_t p = 0; p < d.sample_size(); ++p) {
    auto c = static_cast<size_t>(p / plane);
    float mean = norm.mean.empty() ? 0.0f : norm.mean.size() == 1 ? norm.mean[0] : norm.mean[c];
    float std = norm.std.empty() ? 1.0f : norm.std.size() == 1 ? norm.std[0] : norm.std[c];
    float pixel = d.pixels[static_cast<size_t>(i * d.sample_size() + p)];
    out[static_cast<size_t>(p)] = (pixel / 255.0f - mean) / std;
  }
  return out;
}

// Reference augmentation: pad the normalised image, crop at (oy, ox), then
// mirror if asked. Written independently of the loader's clipped loops.
std::vector<float> shifted(const Dataset& d, int64_t i, int pad, int oy, int ox, bool flip) {
  std::vector<float> base = plain(d, i);
  const int h = d.height, w = d.width, ph = h + 2 * pad, pw = w + 2 * pad;
  std::vector<float> out(base.size());
  for (int c = 0; c < d.channels; ++c) {
    std::vector<float> padded(static_cast<size_t>(ph * pw), 0.0f);  // pixel 0 normalises to 0 here
    for (int y = 0; y < h; ++y) {
      for (int x = 0; x < w; ++x) {
        padded[static_cast<size_t>((y + pad) * pw + x + pad)] =
            base[static_cast<size_t>((c * h + y) * w + x)];
      }
    }
    for (int y = 0; y < h; ++y) {
      for (int x = 0; x < w; ++x) {
        int cx = flip ? w - 1 - x : x;
        out[static_cast<size_t>((c * h + y) * w + x)] =
            padded[static_cast<size_t>((y + oy) * pw + cx + ox)];
      }
    }
  }
  return out;
}

std::vector<float> row(const Batch& b, int64_t r, int64_t sample_size) {
  return std::vector<float>(b.images + r * sample_size, b.images + (r + 1) * sample_size);
}

// Every image of a pass, in order, as raw bytes.
std::vector<float> drain(BatchLoader& loader, int64_t sample_size) {
  std::vector<float> all;
  while (const Batch* b = loader.next()) {
    all.insert(all.end(), b->images, b->images + b->count * sample_size);
  }
  return all;
}

TEST(BatchLoaderTest, BatchesCoverTheIndicesInOrder) {
  Dataset d = make_dataset(30, 2, 3, 4);
  std::vector<int64_t> indices = {29, 3, 17, 0, 8, 8, 21, 5, 12, 1, 19, 26, 2};
  BatchLoader loader(d, {}, augmentation(0, false), 5, 2, 1);
  EXPECT_EQ(loader.next(), nullptr);  // nothing started yet
  loader.start(0, indices, false);
  ASSERT_EQ(loader.batches_in_pass(), 3);
  for (int64_t b = 0; b < 3; ++b) {
    const Batch* batch = loader.next();
    ASSERT_NE(batch, nullptr);
    EXPECT_EQ(batch->index, b);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(batch->images) % 64, 0u);
    const int64_t count = b < 2 ? 5 : 3;
    EXPECT_EQ(batch->count, count);
    for (int64_t r = 0; r < 5; ++r) {
      if (r < count) {
        int64_t i = indices[static_cast<size_t>(b * 5 + r)];
        EXPECT_EQ(batch->labels[r], i % 10);
        EXPECT_EQ(row(*batch, r, 24), plain(d, i)) << "batch " << b << " row " << r;
      } else {  // padding of the partial last batch
        EXPECT_EQ(batch->labels[r], -1);
        EXPECT_EQ(row(*batch, r, 24), std::vector<float>(24, 0.0f));
      }
    }
  }
  EXPECT_EQ(loader.next(), nullptr);
  EXPECT_EQ(loader.next(), nullptr);
}

TEST(BatchLoaderTest, PaddingIsZeroEvenInReusedBuffers) {
  Dataset d = make_dataset(10, 1, 2, 2);
  BatchLoader loader(d, {}, augmentation(0, false), 4, 0, 1);  // one buffer, reused
  loader.start(0, iota(8), false);
  while (loader.next() != nullptr) {
  }
  loader.start(1, {9}, false);
  const Batch* b = loader.next();
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->count, 1);
  for (int64_t r = 1; r < 4; ++r) {
    EXPECT_EQ(b->labels[r], -1);
    EXPECT_EQ(row(*b, r, 4), std::vector<float>(4, 0.0f));
  }
}

TEST(BatchLoaderTest, NormalisationPerChannel) {
  Dataset d = make_dataset(6, 3, 2, 2);
  for (const Normalization& norm :
       {Normalization{}, Normalization{{0.5f}, {0.25f}}, Normalization{{0.1f, 0.2f, 0.3f}, {}},
        Normalization{{0.1f, 0.2f, 0.3f}, {0.5f, 2.0f, 4.0f}}}) {
    BatchLoader loader(d, norm, augmentation(0, false), 6, 1, 1);
    loader.start(0, iota(6), false);
    const Batch* b = loader.next();
    ASSERT_NE(b, nullptr);
    for (int64_t i = 0; i < 6; ++i) {
      std::vector<float> got = row(*b, i, 12), want = plain(d, i, norm);
      for (size_t p = 0; p < got.size(); ++p) EXPECT_FLOAT_EQ(got[p], want[p]);
    }
  }
  // Spot check of the formula itself: pixel 255, mean 0.5, std 0.25 -> 2.
  Dataset white = make_dataset(1, 1, 1, 1);
  white.pixels[0] = 255;
  BatchLoader loader(white, Normalization{{0.5f}, {0.25f}}, augmentation(0, false), 1, 0, 1);
  loader.start(0, {0}, false);
  EXPECT_FLOAT_EQ(loader.next()->images[0], 2.0f);
}

TEST(BatchLoaderTest, NormalizationFromSpec) {
  DataSpec spec;
  EXPECT_TRUE(Normalization::from_spec(spec, 3).mean.empty());
  spec.add_mean(0.5f);
  spec.add_std(0.2f);
  EXPECT_EQ(Normalization::from_spec(spec, 3).mean, std::vector<float>{0.5f});
  spec.add_mean(0.4f);
  try {
    Normalization::from_spec(spec, 3);
    ADD_FAILURE() << "2 means for 3 channels accepted";
  } catch (const UserError& e) {
    EXPECT_THAT(e.what(), HasSubstr("data.mean"));
  }
  spec.add_mean(0.3f);
  EXPECT_EQ(Normalization::from_spec(spec, 3).mean.size(), 3u);
  spec.set_std(0, 0.0f);
  try {
    Normalization::from_spec(spec, 3);
    ADD_FAILURE() << "std 0 accepted";
  } catch (const UserError& e) {
    EXPECT_THAT(e.what(), HasSubstr("data.std"));
  }
  spec.set_std(0, -1.0f);
  EXPECT_THROW(Normalization::from_spec(spec, 3), UserError);
}

TEST(BatchLoaderTest, RejectsBadArguments) {
  Dataset d = make_dataset(4, 1, 2, 2);
  EXPECT_THROW(BatchLoader(d, {}, augmentation(0, false), 0, 1, 1), UserError);
  EXPECT_THROW(BatchLoader(d, {}, augmentation(0, false), 2, -1, 1), UserError);
  EXPECT_THROW(BatchLoader(d, {}, augmentation(-1, false), 2, 1, 1), UserError);
  EXPECT_THROW(BatchLoader(d, {}, augmentation(0, false), 2, 1, 1, 0), UserError);
  EXPECT_THROW(BatchLoader(d, Normalization{{0.1f, 0.2f}, {}}, augmentation(0, false), 2, 1, 1),
               UserError);
}

TEST(BatchLoaderTest, AugmentationIsAPaddedCropAndFlip) {
  const int pad = 2;
  Dataset d = make_dataset(200, 2, 5, 4);
  BatchLoader loader(d, {}, augmentation(pad, true), 16, 2, 42);
  loader.start(3, iota(200), true);
  std::set<std::tuple<int, int, bool>> seen;
  int64_t i = 0;
  while (const Batch* b = loader.next()) {
    for (int64_t r = 0; r < b->count; ++r, ++i) {
      std::vector<float> got = row(*b, r, 40);
      bool matched = false;
      for (int oy = 0; oy <= 2 * pad && !matched; ++oy) {
        for (int ox = 0; ox <= 2 * pad && !matched; ++ox) {
          for (bool flip : {false, true}) {
            if (got == shifted(d, i, pad, oy, ox, flip)) {
              seen.insert({oy, ox, flip});
              matched = true;
              break;
            }
          }
        }
      }
      EXPECT_TRUE(matched) << "sample " << i << " is no padded crop / flip of the original";
    }
  }
  EXPECT_EQ(i, 200);
  // 200 draws from 50 outcomes: nearly all of them occur, both flips among them.
  EXPECT_GE(seen.size(), 40u);
}

TEST(BatchLoaderTest, PaddingUsesTheNormalisedValueOfPixelZero) {
  Dataset d = make_dataset(64, 1, 3, 3);
  for (uint8_t& p : d.pixels) p = 255;
  Normalization norm{{0.5f}, {0.25f}};
  BatchLoader loader(d, norm, augmentation(2, false), 64, 0, 9);
  loader.start(0, iota(64), true);
  const Batch* b = loader.next();
  std::set<float> values(b->images, b->images + 64 * 9);
  // Only image (2.0) and padding ((0 - 0.5) / 0.25 = -2.0); some crop shows padding.
  EXPECT_EQ(values, (std::set<float>{-2.0f, 2.0f}));
}

TEST(BatchLoaderTest, AugmentationOnlyWhenStartSaysSo) {
  Dataset d = make_dataset(20, 1, 4, 4);
  BatchLoader loader(d, {}, augmentation(2, true), 20, 1, 5);
  loader.start(0, iota(20), false);
  const Batch* b = loader.next();
  for (int64_t i = 0; i < 20; ++i) EXPECT_EQ(row(*b, i, 16), plain(d, i));
}

TEST(BatchLoaderTest, AugmentationIsDeterministic) {
  Dataset d = make_dataset(50, 3, 6, 6);
  const int64_t s = d.sample_size();
  auto run = [&](uint64_t seed, int64_t epoch, int threads = 1) {
    BatchLoader loader(d, Normalization{{0.5f}, {0.3f}}, augmentation(2, true), 8, 2, seed,
                       threads);
    loader.start(epoch, iota(50), true);
    return drain(loader, s);
  };
  std::vector<float> a = run(11, 4);
  std::vector<float> b = run(11, 4, 3);  // rows filled by three threads
  ASSERT_EQ(a.size(), static_cast<size_t>(50 * s));
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
  EXPECT_NE(a, run(11, 5));  // another epoch
  EXPECT_NE(a, run(12, 4));  // another seed
}

// The property the distributed trainer relies on: a sample's augmented
// image depends on (seed, epoch, sample) only, not on its batch, its
// position, the batch size, the other samples or the loader.
TEST(BatchLoaderTest, AugmentationIndependentOfWhereTheSampleIsLoaded) {
  Dataset d = make_dataset(40, 3, 6, 6);
  const int64_t s = d.sample_size();
  const int64_t sample = 13;
  const Augmentation aug = augmentation(2, true);

  BatchLoader first(d, {}, aug, 4, 2, 77);
  first.start(6, {sample, 1, 2, 3}, true);  // batch 0, row 0
  std::vector<float> in_batch0 = row(*first.next(), 0, s);

  std::vector<int64_t> later;  // other samples, then ours at batch 5, row 2 with batch size 3
  for (int64_t i = 0; i < 17; ++i) later.push_back(20 + i);
  later.push_back(sample);
  BatchLoader second(d, {}, aug, 3, 1, 77);
  second.start(6, later, true);
  const Batch* b = nullptr;
  for (int k = 0; k <= 5; ++k) b = second.next();
  ASSERT_NE(b, nullptr);
  ASSERT_EQ(b->index, 5);
  std::vector<float> in_batch5 = row(*b, 2, s);
  EXPECT_EQ(std::memcmp(in_batch0.data(), in_batch5.data(), in_batch0.size() * sizeof(float)), 0);
  EXPECT_NE(in_batch0, plain(d, sample));  // it was augmented at all

  // The same loader in another epoch augments it differently.
  first.start(7, {sample}, true);
  EXPECT_NE(row(*first.next(), 0, s), in_batch0);
}

TEST(BatchLoaderTest, BatchStaysValidUntilTheNextCall) {
  Dataset d = make_dataset(100, 1, 8, 8);
  for (int prefetch : {0, 1, 3}) {
    BatchLoader loader(d, {}, augmentation(0, false), 4, prefetch, 1);
    loader.start(0, iota(100), false);
    for (int64_t k = 0; k < 25; ++k) {
      const Batch* b = loader.next();
      ASSERT_NE(b, nullptr);
      // Give the producer every chance to (wrongly) overwrite this buffer.
      if (k % 8 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      for (int64_t r = 0; r < 4; ++r) {
        ASSERT_EQ(b->labels[r], (k * 4 + r) % 10);
        ASSERT_EQ(row(*b, r, 64), plain(d, k * 4 + r)) << "prefetch " << prefetch;
      }
    }
    EXPECT_EQ(loader.next(), nullptr);
  }
}

TEST(BatchLoaderTest, StartDiscardsTheOldPass) {
  Dataset d = make_dataset(100, 1, 4, 4);
  BatchLoader loader(d, {}, augmentation(0, false), 4, 3, 1);
  loader.start(0, iota(100), false);
  ASSERT_NE(loader.next(), nullptr);
  std::this_thread::sleep_for(std::chrono::milliseconds(10));  // let it prefetch
  std::vector<int64_t> second = {50, 51, 52, 53, 54, 99};
  loader.start(1, second, false);
  EXPECT_EQ(loader.batches_in_pass(), 2);
  const Batch* b = loader.next();
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->index, 0);
  EXPECT_EQ(b->count, 4);
  EXPECT_EQ(row(*b, 0, 16), plain(d, 50));
  b = loader.next();
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->index, 1);
  EXPECT_EQ(b->count, 2);
  EXPECT_EQ(b->labels[1], 99 % 10);
  EXPECT_EQ(loader.next(), nullptr);

  // Twice in a row without consuming, and an empty pass.
  loader.start(2, iota(100), false);
  loader.start(3, {7}, false);
  b = loader.next();
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->count, 1);
  EXPECT_EQ(b->labels[0], 7);
  EXPECT_EQ(loader.next(), nullptr);
  loader.start(4, {}, false);
  EXPECT_EQ(loader.batches_in_pass(), 0);
  EXPECT_EQ(loader.next(), nullptr);
}

TEST(BatchLoaderTest, ProducerErrorsAreRethrownFromNext) {
  Dataset d = make_dataset(10, 1, 2, 2);
  for (int threads : {1, 2, 3}) {
    BatchLoader loader(d, {}, augmentation(0, false), 4, 3, 1, threads);
    // 10 and 11 are outside the dataset; the first in the batch is named.
    loader.start(0, {0, 1, 2, 3, 4, 10, 11, 6}, false);
    ASSERT_NE(loader.next(), nullptr);
    try {
      loader.next();
      ADD_FAILURE() << "no error for an index outside the dataset";
    } catch (const std::out_of_range& e) {
      EXPECT_THAT(e.what(), HasSubstr("index 10"));
    }
    EXPECT_THROW(loader.next(), std::out_of_range);
    // A new pass recovers.
    loader.start(1, {1}, false);
    ASSERT_NE(loader.next(), nullptr);
  }
}

// Runs `f` on another thread; fails (and ends the process) if it hangs.
template <typename F>
void expect_returns(F f, const char* what) {
  auto done = std::async(std::launch::async, f);
  if (done.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
    std::fprintf(stderr, "hung: %s\n", what);
    std::_Exit(1);
  }
  done.get();
}

TEST(BatchLoaderTest, DestructorStopsMidEpoch) {
  Dataset d = make_dataset(1000, 1, 8, 8);
  expect_returns(
      [&] {
        BatchLoader loader(d, {}, augmentation(1, true), 2, 2, 1);
        loader.start(0, iota(1000), true);
        ASSERT_NE(loader.next(), nullptr);
        std::this_thread::sleep_for(
            std::chrono::milliseconds(20));  // producer blocks on a full ring
      },
      "destroy with a full ring");
  expect_returns(
      [&] {
        BatchLoader loader(d, {}, augmentation(0, false), 2, 0, 1);
        loader.start(0, iota(1000), false);  // destroyed before any next()
      },
      "destroy right after start");
  expect_returns([&] { BatchLoader loader(d, {}, augmentation(0, false), 2, 2, 1); },
                 "destroy without start");
}

// Many passes with random interleavings of start() and next(): every batch
// handed out is the right one. (Also the test to run under TSan.)
TEST(BatchLoaderTest, RandomRestartsStress) {
  Dataset d = make_dataset(64, 1, 3, 3);
  for (int threads : {1, 3}) {
    BatchLoader loader(d, {}, augmentation(0, false), 3, 2, 1, threads);
    Rng rng(123);
    for (int64_t pass = 0; pass < 300; ++pass) {
      std::vector<int64_t> indices(rng.below(40));
      for (int64_t& i : indices) i = static_cast<int64_t>(rng.below(64));
      loader.start(pass, indices, false);
      const auto take =
          static_cast<int64_t>(rng.below(static_cast<uint64_t>(loader.batches_in_pass()) + 2));
      for (int64_t k = 0; k < take; ++k) {
        const Batch* b = loader.next();
        if (k >= loader.batches_in_pass()) {
          ASSERT_EQ(b, nullptr);
          continue;
        }
        ASSERT_NE(b, nullptr);
        ASSERT_EQ(b->index, k);
        for (int64_t r = 0; r < b->count; ++r) {
          int64_t i = indices[static_cast<size_t>(k * 3 + r)];
          ASSERT_EQ(b->labels[r], i % 10);
          ASSERT_EQ(row(*b, r, 9), plain(d, i));
        }
      }
    }
  }
}

}  // namespace
}  // namespace dptrain
