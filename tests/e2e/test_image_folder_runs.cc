// Training from an image folder, end to end: Fashion-MNIST's first images
// written as PNGs in class folders train, on two ranks and with
// augmentation, to exactly the weights the same samples give from IDX
// files in the folder's order; and `dptrain data-check` on that folder,
// damaged and not.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <numeric>

#include "core/dataset.h"
#include "core/image.h"
#include "tests/e2e/run_command.h"
#include "tests/unit/image_test_util.h"

namespace dptrain::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const std::string kBin = DPTRAIN_BIN;
const std::string kLenet = std::string(DPTRAIN_SOURCE_DIR) + "/configs/lenet5_fmnist.textproto";
const char* kFashion = "/usr/share/datasets/fashion-mnist";

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

class ImageFolderRuns : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kFashion)) GTEST_SKIP() << "dataset-fashion-mnist not installed";
    DataSpec spec;
    spec.set_path(kFashion);
    spec.set_train_limit(1280);
    spec.set_test_limit(300);
    const DatasetSplits data = load_dataset(spec, 1);
    // Each split as PNGs under folder/, and as IDX files under idx/ in the
    // folder's order: by class, then by (zero-padded) name.
    for (auto [split, prefix, d] :
         {std::tuple{"train", "train", &data.train}, std::tuple{"test", "t10k", &data.test}}) {
      std::vector<int64_t> order(static_cast<size_t>(d->size()));
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        return d->labels[static_cast<size_t>(a)] < d->labels[static_cast<size_t>(b)];
      });
      std::string images =
          be32(0x803) + be32(static_cast<uint32_t>(d->size())) + be32(28) + be32(28);
      std::string labels = be32(0x801) + be32(static_cast<uint32_t>(d->size()));
      for (int64_t i : order) {
        const auto at = d->pixels.begin() + i * 784;
        const std::vector<uint8_t> pixels(at, at + 784);
        char name[32];
        std::snprintf(name, sizeof name, "%05lld.png", static_cast<long long>(i));
        write_bytes(dir.path() / "folder" / split /
                        ("c" + std::to_string(d->labels[static_cast<size_t>(i)])) / name,
                    png_bytes(pixels, 28, 28, 1));
        images.append(pixels.begin(), pixels.end());
        labels.push_back(static_cast<char>(d->labels[static_cast<size_t>(i)]));
      }
      write_bytes(dir.path() / "idx" / (std::string(prefix) + "-images-idx3-ubyte"), images);
      write_bytes(dir.path() / "idx" / (std::string(prefix) + "-labels-idx1-ubyte"), labels);
    }
  }
  std::string folder_flags() const {
    return " --set data.format=IMAGE_FOLDER --set data.path=" + (dir / "folder") +
           " --set data.image_folder.channels=1 --set data.image_folder.height=28"
           " --set data.image_folder.width=28";
  }
  TempDir dir;
};

TEST_F(ImageFolderRuns, PngFolderTrainsExactlyAsTheSameIdxSamples) {
  const std::string common =
      " --set solver.epochs=2 --set data.augment.crop_padding=2"
      " --set data.augment.horizontal_flip=true --set data.loader_threads=2";
  const auto png = run_command(mpiexec(2) + kBin + " train " + kLenet + " --run-dir " +
                               (dir / "png_run") + common + folder_flags());
  ASSERT_EQ(png.exit_code, 0) << png.output;
  const auto idx = run_command(mpiexec(2) + kBin + " train " + kLenet + " --run-dir " +
                               (dir / "idx_run") + common + " --set data.path=" + (dir / "idx"));
  ASSERT_EQ(idx.exit_code, 0) << idx.output;
  const std::string a = slurp(dir.path() / "png_run/final_weights");
  ASSERT_FALSE(a.empty());
  EXPECT_TRUE(a == slurp(dir.path() / "idx_run/final_weights"))
      << "the PNG folder trained other weights than its IDX twin";
  EXPECT_THAT(png.output, HasSubstr("test_accuracy"));
}

TEST_F(ImageFolderRuns, DataCheckAndTheRunAgreeOnDamage) {
  const std::string check = kBin + " data-check " + kLenet + folder_flags();
  auto r = run_command(check);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, ::testing::ContainsRegex("total +1280 +300"));
  EXPECT_THAT(r.output, HasSubstr("1 different; 28x28 (1580)"));
  EXPECT_THAT(r.output, HasSubstr("unreadable images: 0"));

  // A damaged image: data-check names it and says the run would stop,
  // the run stops naming it, and under SKIP both go on.
  const fs::path bad = dir.path() / "folder/train/c3/zzz.png";
  write_bytes(bad, png_bytes(std::vector<uint8_t>(784, 9), 28, 28, 1).substr(0, 60));
  r = run_command(check);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr(bad.string() + ": "));
  EXPECT_THAT(r.output, HasSubstr("a run would stop at these"));
  const std::string train = kBin + " train " + kLenet + " --set solver.epochs=1" + folder_flags();
  r = run_command(train + " --run-dir " + (dir / "stopped"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("dptrain: " + bad.string() + ": "));
  EXPECT_FALSE(fs::exists(dir.path() / "stopped/final_weights"));
  const std::string skip = " --set data.image_folder.bad_images=SKIP";
  EXPECT_EQ(run_command(check + skip).exit_code, 0);
  r = run_command(train + skip + " --run-dir " + (dir / "skipped"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("skipping an unreadable image"));
  EXPECT_THAT(slurp(dir.path() / "skipped/metrics.jsonl"), HasSubstr("\"skipped_images\":1"));

  // Folder errors are one line naming the folder.
  r = run_command(kBin + " data-check " + kLenet + folder_flags() +
                  " --set data.path=" + (dir / "nowhere"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("IMAGE_FOLDER dataset folder " + (dir / "nowhere")));
}

}  // namespace
}  // namespace dptrain::testing
