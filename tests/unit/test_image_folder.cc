// Image-folder datasets: the listing (classes in sorted folder order,
// images at any depth, other files and hidden ones left out, test classes
// checked against train's), decoding into the configured shape, the
// STOP and SKIP policies for unreadable images and empty class folders,
// data-check's report, and pixel-identical samples to the IDX files.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include "core/batch_loader.h"
#include "core/data_check.h"
#include "core/dataset.h"
#include "core/error.h"
#include "core/image.h"
#include "tests/e2e/run_command.h"
#include "tests/unit/image_test_util.h"

namespace dptrain {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::jpeg_bytes;
using testing::pattern;
using testing::TempDir;
using testing::write_bytes;

DataSpec folder_spec(const fs::path& root, int channels, int size) {
  DataSpec d;
  d.set_format(DataSpec::IMAGE_FOLDER);
  d.set_path(root.string());
  d.mutable_image_folder()->set_channels(channels);
  d.mutable_image_folder()->set_height(size);
  d.mutable_image_folder()->set_width(size);
  return d;
}

std::string png(int w, int h, int channels, int seed) {
  return png_bytes(pattern(w, h, channels, seed), w, h, channels);
}

// The folder every test of damage uses: cat/ (PNGs, a truncated JPEG, a
// PNG of another size, a text file, a hidden file), dog/ (JPEGs, one in a
// subfolder), empty/ (nothing), and a test split under val/.
struct Zoo {
  TempDir dir;
  Zoo() {
    const fs::path r = dir.path();
    write_bytes(r / "train/cat/a.png", png(8, 8, 3, 1));
    write_bytes(r / "train/cat/b.png", png(8, 8, 3, 2));
    const std::string jpeg = jpeg_bytes(pattern(8, 8, 3, 3), 8, 8, 3);
    write_bytes(r / "train/cat/c.jpg", jpeg.substr(0, jpeg.size() - 40));
    write_bytes(r / "train/cat/d.PNG", png(20, 12, 3, 4));
    write_bytes(r / "train/cat/notes.txt", "not an image");
    write_bytes(r / "train/cat/.hidden.png", "left out unread");
    write_bytes(r / "train/dog/x.jpeg", jpeg_bytes(pattern(8, 8, 3, 5), 8, 8, 3));
    write_bytes(r / "train/dog/deep/y.jpg", jpeg_bytes(pattern(8, 8, 1, 6), 8, 8, 1));
    fs::create_directories(r / "train/empty");
    fs::create_directories(r / "train/.git");
    write_bytes(r / "val/dog/t.png", png(8, 8, 1, 7));
    write_bytes(r / "val/cat/u.png", png(8, 8, 3, 8));
  }
  DataSpec spec(ImageFolderSpec::BadImagePolicy policy) const {
    DataSpec d = folder_spec(dir.path(), 3, 8);
    d.mutable_image_folder()->set_bad_images(policy);
    d.set_batch_size(2);
    return d;
  }
};

TEST(ImageFolder, ListsClassesAndImagesInSortedOrder) {
  Zoo zoo;
  const DatasetSplits s = load_dataset(zoo.spec(ImageFolderSpec::SKIP), 1);
  EXPECT_THAT(s.class_names, ElementsAre("cat", "dog", "empty"));
  EXPECT_THAT(s.train.files,
              ElementsAre("train/cat/a.png", "train/cat/b.png", "train/cat/c.jpg",
                          "train/cat/d.PNG", "train/dog/deep/y.jpg", "train/dog/x.jpeg"));
  EXPECT_THAT(s.train.labels, ElementsAre(0, 0, 0, 0, 1, 1));
  EXPECT_THAT(s.test.files, ElementsAre("val/cat/u.png", "val/dog/t.png"));
  EXPECT_THAT(s.test.labels, ElementsAre(0, 1));
  EXPECT_THAT(s.ignored_files, ElementsAre("train/cat/notes.txt"));
  EXPECT_THAT(s.empty_classes, ElementsAre("train/empty"));
  EXPECT_EQ(s.train.classes, 3);
  EXPECT_EQ(s.train.channels, 3);
  EXPECT_EQ(s.train.height, 8);
  EXPECT_TRUE(s.train.pixels.empty());
}

TEST(ImageFolder, EmptyClassFolderStopsUnlessSkipped) {
  Zoo zoo;
  try {
    load_dataset(zoo.spec(ImageFolderSpec::STOP), 1);
    ADD_FAILURE() << "an empty class folder was accepted under STOP";
  } catch (const UserError& e) {
    EXPECT_THAT(e.what(), HasSubstr("train/empty holds no images"));
    EXPECT_THAT(e.what(), HasSubstr("bad_images: SKIP"));
  }
}

TEST(ImageFolder, FolderErrorsNameWhatIsWrong) {
  TempDir dir;
  auto message = [&] {
    try {
      load_dataset(folder_spec(dir.path(), 1, 8), 1);
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_THAT(message(), HasSubstr("has no train/ folder"));
  write_bytes(dir.path() / "train/a/x.png", png(8, 8, 1, 1));
  EXPECT_THAT(message(), HasSubstr("neither a test/ nor a val/ folder"));
  write_bytes(dir.path() / "test/b/y.png", png(8, 8, 1, 1));
  EXPECT_THAT(message(), HasSubstr("test/b is not one of the classes in train/"));
  fs::rename(dir.path() / "test/b", dir.path() / "test/a");
  EXPECT_EQ(message(), "no error");
  fs::remove(dir.path() / "test/a/y.png");
  EXPECT_THAT(message(), HasSubstr("test/ holds no images"));
  DataSpec bad = folder_spec(dir.path(), 1, 8);
  bad.mutable_image_folder()->set_resize(4);
  EXPECT_THROW(load_dataset(bad, 1), UserError);
}

// Every batch of one pass over `d` in order, as (label, pixels) rows.
std::vector<std::pair<int32_t, std::vector<float>>> load_all(const Dataset& d, int threads,
                                                             bool augment = false,
                                                             const Augmentation& a = {},
                                                             int64_t* skipped = nullptr) {
  BatchLoader loader(d, Normalization{}, a, 3, 2, 7, threads);
  std::vector<int64_t> all(static_cast<size_t>(d.size()));
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int64_t>(i);
  loader.start(2, all, augment);
  std::vector<std::pair<int32_t, std::vector<float>>> rows;
  while (const Batch* b = loader.next()) {
    if (skipped) *skipped += b->skipped;
    for (int64_t r = 0; r < b->count; ++r) {
      const float* p = b->images + r * d.sample_size();
      rows.emplace_back(b->labels[r], std::vector<float>(p, p + d.sample_size()));
    }
  }
  return rows;
}

TEST(ImageFolder, UnreadableImageStopsTheLoaderNamingItsPath) {
  Zoo zoo;
  const DatasetSplits s = load_dataset(zoo.spec(ImageFolderSpec::SKIP), 1);
  Dataset stop = s.train;
  stop.image_folder.set_bad_images(ImageFolderSpec::STOP);
  for (int threads : {1, 3}) {
    try {
      load_all(stop, threads);
      ADD_FAILURE() << "a truncated JPEG was decoded";
    } catch (const UserError& e) {
      EXPECT_THAT(e.what(), HasSubstr("train/cat/c.jpg: damaged or truncated JPEG"));
    }
  }
}

TEST(ImageFolder, SkippedImageGivesWayToTheNextReadableOne) {
  Zoo zoo;
  const DatasetSplits s = load_dataset(zoo.spec(ImageFolderSpec::SKIP), 1);
  int64_t skipped = 0;
  const auto rows = load_all(s.train, 2, false, {}, &skipped);
  ASSERT_EQ(rows.size(), 6u);
  EXPECT_EQ(skipped, 1);
  // Row 2 (the truncated c.jpg) is d.PNG, as row 3 is: same label, same pixels.
  EXPECT_EQ(rows[2], rows[3]);
  EXPECT_NE(rows[1], rows[2]);
  // d.PNG (20 x 12) arrives at the configured 8 x 8, as resample makes it.
  Image d = decode_image(reinterpret_cast<const uint8_t*>(png(20, 12, 3, 4).data()),
                         png(20, 12, 3, 4).size(), 3, "d");
  std::vector<uint8_t> want(192);
  resample(d, Box{0, 0, 20, 12}, 8, 8, want.data());
  for (size_t i = 0; i < want.size(); ++i) ASSERT_FLOAT_EQ(rows[3].second[i], want[i] / 255.f);
  // The grey JPEG in a subfolder becomes three equal planes.
  const auto& y = rows[4].second;
  for (size_t p = 0; p < 64; ++p) ASSERT_EQ(y[p], y[64 + p]);
}

TEST(ImageFolder, DataCheckReportsEverythingARunWouldMeet) {
  Zoo zoo;
  for (auto policy : {ImageFolderSpec::STOP, ImageFolderSpec::SKIP}) {
    const DataCheck c = check_data(zoo.spec(policy), 1, 2);
    EXPECT_EQ(c.unreadable, 1);
    EXPECT_EQ(c.empty_classes, 1);
    EXPECT_EQ(c.run_would_stop, policy == ImageFolderSpec::STOP);
    EXPECT_THAT(c.report, HasSubstr("train/cat/c.jpg: damaged or truncated JPEG"));
    EXPECT_THAT(c.report, HasSubstr("  train/cat/notes.txt"));
    EXPECT_THAT(c.report, HasSubstr("  train/empty"));
    // Sizes as the files have them: six 8 x 8 and one 20 x 12 read.
    EXPECT_THAT(c.report, HasSubstr("2 different; 8x8 (6), 20x12 (1)"));
    EXPECT_THAT(c.report, ::testing::ContainsRegex("cat +4 +1\n"));
    EXPECT_THAT(c.report, ::testing::ContainsRegex("empty +0 +0\n"));
    EXPECT_THAT(c.report, ::testing::ContainsRegex("total +6 +2\n"));
  }
}

TEST(ImageFolder, LoaderThreadsChangeNothingAugmentationsIncluded) {
  TempDir dir;
  for (int i = 0; i < 23; ++i) {
    const std::string cls = i % 2 ? "a" : "b";
    write_bytes(dir.path() / "train" / cls / (std::to_string(i) + ".png"),
                png(10 + i, 30 - i, 3, i));
  }
  write_bytes(dir.path() / "test/a/0.png", png(8, 8, 3, 0));
  DataSpec spec = folder_spec(dir.path(), 3, 12);
  spec.mutable_image_folder()->mutable_random_resized_crop();
  const DatasetSplits s = load_dataset(spec, 1);
  Augmentation a;
  a.set_horizontal_flip(true);
  a.set_crop_padding(2);
  const auto one = load_all(s.train, 1, true, a);
  EXPECT_EQ(one, load_all(s.train, 4, true, a));
  EXPECT_NE(one, load_all(s.train, 1, false, a));
}

// Fashion-MNIST's first samples as PNGs in class folders give the same
// (label, pixels) samples as the IDX files, as a set.
TEST(ImageFolder, PngsOfFashionMnistAreTheIdxSamples) {
  const std::string idx = "/usr/share/datasets/fashion-mnist";
  if (!fs::exists(idx)) GTEST_SKIP() << idx << " is absent (dataset-fashion-mnist)";
  DataSpec idx_spec;
  idx_spec.set_path(idx);
  idx_spec.set_train_limit(600);
  idx_spec.set_test_limit(200);
  const DatasetSplits from_idx = load_dataset(idx_spec, 1);
  TempDir dir;
  for (auto [split, d] : {std::pair{"train", &from_idx.train}, {"test", &from_idx.test}}) {
    for (int64_t i = 0; i < d->size(); ++i) {
      const auto at = d->pixels.begin() + i * 784;
      write_bytes(dir.path() / split /
                      ("class" + std::to_string(d->labels[static_cast<size_t>(i)])) /
                      (std::to_string(i) + ".png"),
                  png_bytes(std::vector<uint8_t>(at, at + 784), 28, 28, 1));
    }
  }
  DataSpec spec = folder_spec(dir.path(), 1, 28);
  const DatasetSplits from_png = load_dataset(spec, 1);
  for (auto [a, b] :
       {std::pair{&from_idx.train, &from_png.train}, {&from_idx.test, &from_png.test}}) {
    auto as_set = [](const std::vector<std::pair<int32_t, std::vector<float>>>& rows) {
      return std::multiset<std::pair<int32_t, std::vector<float>>>(rows.begin(), rows.end());
    };
    EXPECT_EQ(as_set(load_all(*a, 1)), as_set(load_all(*b, 2)));
  }
}

}  // namespace
}  // namespace dptrain
