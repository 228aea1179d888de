// The autoencoder as shipped learns to reproduce Fashion-MNIST through a
// bottleneck of 64 numbers, its evaluations record test_mse in pixel units
// whatever the data normalisation, and dptrain reconstruct draws test
// images beside their reconstructions.
#include <png.h>

#include <cmath>
#include <filesystem>
#include <regex>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/dataset.h"
#include "core/metrics_record.h"
#include "tests/e2e/run_command.h"

namespace dptrain::testing {
namespace {

using ::testing::HasSubstr;

const std::string kBin = DPTRAIN_BIN;
const std::string kConfig =
    std::string(DPTRAIN_SOURCE_DIR) + "/configs/autoencoder_fmnist.textproto";
const std::string kSmall =
    " --set data.train_limit=3200 --set data.test_limit=500 --set solver.epochs=2";
const std::string kFashion = "/usr/share/datasets/fashion-mnist";

// A PNG file's 8-bit gray pixels, through libpng's simplified reader.
std::vector<uint8_t> read_gray_png(const std::string& path, int* width, int* height) {
  const std::string bytes = slurp(path);
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&image, bytes.data(), bytes.size())) return {};
  image.format = PNG_FORMAT_GRAY;
  std::vector<uint8_t> pixels(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, pixels.data(), 0, nullptr)) return {};
  *width = static_cast<int>(image.width);
  *height = static_cast<int>(image.height);
  return pixels;
}

class Autoencoder : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kFashion)) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  }
  MetricsRecord train(const std::string& name, const std::string& extra) {
    const std::string run = dir_ / name;
    const auto r = run_command(kBin + " train " + kConfig + " --run-dir " + run + kSmall + extra);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_THAT(r.output, HasSubstr("test_mse "));
    const std::vector<MetricsRecord> records = read_metrics(run + "/metrics.jsonl");
    return records.empty() ? MetricsRecord() : records.back();
  }
  TempDir dir_;
};

// One test, so that its two short trainings serve every check.
TEST_F(Autoencoder, LearnsToReconstructRecordsTheErrorPerPixelAndDrawsItsReconstructions) {
  const MetricsRecord eval = train("plain", "");
  ASSERT_EQ(eval.kind(), "eval");
  ASSERT_TRUE(eval.has_test_mse());
  EXPECT_FALSE(eval.has_test_accuracy());
  EXPECT_EQ(eval.test_confusion_size(), 0);
  // Pixels in [0, 1]: the loss is the error per pixel. Predicting the mean
  // image would leave about 0.1; two short epochs get well below.
  EXPECT_NEAR(eval.test_mse(), eval.test_loss(), 1e-6);
  EXPECT_LT(eval.test_mse(), 0.05);
  EXPECT_GT(eval.test_mse(), 0);

  // On normalised input the loss is in normalised units and test_mse is
  // not: it is the loss times std^2.
  const MetricsRecord scaled =
      train("normalised", " --set data.mean=0.5 --set data.std=0.25 --set data.train_limit=640");
  ASSERT_TRUE(scaled.has_test_mse());
  EXPECT_NEAR(scaled.test_mse(), scaled.test_loss() * 0.0625, 1e-6);

  // dptrain eval prints it.
  const std::string weights = dir_ / "plain/final_weights";
  const auto e =
      run_command(kBin + " eval " + kConfig + " --set data.test_limit=500 --weights " + weights);
  ASSERT_EQ(e.exit_code, 0) << e.output;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(e.output, m, std::regex("test_mse ([0-9.]+)"))) << e.output;
  EXPECT_NEAR(std::stod(m[1]), eval.test_mse(), 1e-5);

  // dptrain reconstruct: 10 pairs of 28 x 28 tiles, 8 a row, 2 pixels apart.
  const std::string out = dir_ / "pictures";
  const auto r = run_command(kBin + " reconstruct " + kConfig + " --weights " + weights +
                             " --out " + out + " --count 10");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  int width = 0, height = 0;
  const std::vector<uint8_t> png = read_gray_png(out + "/reconstructions.png", &width, &height);
  ASSERT_FALSE(png.empty()) << "not a PNG libpng reads";
  EXPECT_EQ(width, 8 * 56 + 9 * 2);
  EXPECT_EQ(height, 2 * 28 + 3 * 2);
  // The left tile of each pair is the test image itself, pixel for pixel;
  // the right one is closer to it than to the next image, and no copy.
  const Dataset test = read_idx(kFashion + "/t10k-images-idx3-ubyte.gz",
                                kFashion + "/t10k-labels-idx1-ubyte.gz");
  auto tile = [&](int i, int dx, int y, int x) {
    const int x0 = 2 + (i % 8) * 58 + dx, y0 = 2 + (i / 8) * 30;
    return static_cast<int>(png[static_cast<size_t>((y0 + y) * width + x0 + x)]);
  };
  auto image = [&](int i, int y, int x) {
    return static_cast<int>(test.pixels[static_cast<size_t>(i * 784 + y * 28 + x)]);
  };
  for (int i = 0; i < 10; ++i) {
    double own = 0, next = 0;
    int same = 0;
    for (int y = 0; y < 28; ++y) {
      for (int x = 0; x < 28; ++x) {
        ASSERT_EQ(tile(i, 0, y, x), image(i, y, x)) << i;
        const int got = tile(i, 28, y, x);
        own += std::pow((got - image(i, y, x)) / 255.0, 2);
        next += std::pow((got - image((i + 1) % 10, y, x)) / 255.0, 2);
        same += got == image(i, y, x);
      }
    }
    EXPECT_LT(own, next) << "image " << i << " is not reconstructed";
    EXPECT_LT(same, 700) << "image " << i << ": the reconstruction is a copy";
  }
  // A classifier has nothing to reconstruct.
  const auto c = run_command(kBin + " reconstruct " + std::string(DPTRAIN_SOURCE_DIR) +
                             "/configs/lenet5_fmnist.textproto --weights " + weights + " --out " +
                             (dir_ / "x"));
  EXPECT_EQ(c.exit_code, 2) << c.output;
  EXPECT_THAT(c.output, HasSubstr("not a reconstruction's (MSELoss or L1Loss)"));
}

}  // namespace
}  // namespace dptrain::testing
