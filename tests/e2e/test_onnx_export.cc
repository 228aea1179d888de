// ONNX export end to end: LeNet-5, ConvBN, the ResNet, the CBAM-ResNet and
// the autoencoder, each trained for a few steps, exported by `dptrain
// export`, pass the onnx checker (Debian's python3-onnx) and, run by
// OpenCV's dnn module (python3-opencv), give outputs within 1e-4 of
// `dptrain predict`'s on the first 2,000 test images, and the same top-1
// class where dptrain's two largest outputs are apart (tests/e2e/
// onnx_check.py); and the errors of the commands.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "tests/e2e/run_command.h"

namespace dptrain::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const std::string kBin = DPTRAIN_BIN;
const std::string kSource = DPTRAIN_SOURCE_DIR;
const char* kTestImages = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";

struct Case {
  const char* config;
  bool classifier;
  const char* export_flags;
};

class OnnxExport : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (!fs::exists(kTestImages)) GTEST_SKIP() << "dataset-fashion-mnist not installed";
    if (run_command("/usr/bin/python3 -c 'import onnx, cv2, numpy'").exit_code != 0) {
      GTEST_SKIP() << "python3-onnx or python3-opencv not installed (scripts/setup.sh)";
    }
  }
  TempDir dir;
};

TEST_P(OnnxExport, OpenCvRunsTheModelAsDptrainDoes) {
  const Case& c = GetParam();
  const std::string config = kSource + "/configs/" + c.config + ".textproto";
  const std::string run = dir / "run";
  const auto train = run_command(kMpiAsRoot + "OMP_NUM_THREADS=1 " + kBin + " train " + config +
                                 " --run-dir " + run +
                                 " --set solver.max_steps=20 --set data.train_limit=1280"
                                 " --set data.test_limit=200 --set checkpoint.every_epochs=0");
  ASSERT_EQ(train.exit_code, 0) << train.output;
  const std::string weights = " --weights " + run + "/final_weights";
  const auto exported = run_command("OMP_NUM_THREADS=1 " + kBin + " export " + config + weights +
                                    " --onnx " + (dir / "model.onnx") + " " + c.export_flags);
  ASSERT_EQ(exported.exit_code, 0) << exported.output;
  const auto predicted = run_command("OMP_NUM_THREADS=1 " + kBin + " predict " + config + weights +
                                     " --out " + (dir / "out.npy") + " --set data.test_limit=2000");
  ASSERT_EQ(predicted.exit_code, 0) << predicted.output;
  const auto check = run_command("/usr/bin/python3 " + kSource + "/tests/e2e/onnx_check.py " +
                                 (dir / "model.onnx") + " " + (dir / "out.npy") + " " +
                                 kTestImages + (c.classifier ? " --classifier" : ""));
  EXPECT_EQ(check.exit_code, 0) << check.output;
  EXPECT_THAT(check.output, HasSubstr("2000 samples"));
  if (c.classifier) {
    EXPECT_THAT(check.output, HasSubstr("top-1 identical for 2000 of 2000"));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Nets, OnnxExport,
    ::testing::Values(Case{"lenet5_fmnist", true, ""}, Case{"convbn_fmnist", true, ""},
                      Case{"resnet_fmnist", true, ""},
                      // OpenCV 4.6 mis-shapes CBAM's broadcast Mul under a symbolic batch.
                      Case{"cbam_resnet_fmnist", true, "--batch 500"},
                      Case{"autoencoder_fmnist", false, ""}),
    [](const ::testing::TestParamInfo<Case>& p) {
      const std::string name = p.param.config;
      return name.substr(0, name.find("_fmnist"));
    });

TEST(OnnxExportErrors, NamesWhatIsWrong) {
  if (!fs::exists(kTestImages)) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  TempDir dir;
  const std::string config = kSource + "/configs/lenet5_fmnist.textproto";
  auto r = run_command(kBin + " export " + config + " --weights " + (dir / "nothing") + " --onnx " +
                       (dir / "m.onnx"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr(dir / "nothing"));
  EXPECT_FALSE(fs::exists(dir.path() / "m.onnx"));
  r = run_command(kBin + " export " + config + " --onnx " + (dir / "m.onnx"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("--weights"));
  r = run_command(kBin + " export " + config + " --weights w --onnx m.onnx --batch 0");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("--batch"));
}

}  // namespace
}  // namespace dptrain::testing
