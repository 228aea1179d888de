// End-to-end tests of `dptrain`: training on real Fashion-MNIST, the run
// folder's contract, bitwise repeatability, eval and diff-weights, and the
// one-line errors users get for their mistakes.
#include <filesystem>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/e2e/run_command.h"

namespace dptrain::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const std::string kBin = DPTRAIN_BIN;
const std::string kConfigs = std::string(DPTRAIN_SOURCE_DIR) + "/configs/";
const char* kFashion = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz";

// LeNet-5 on the first 8000 training images for two epochs.
std::string train_lenet(const std::string& run_dir, const std::string& extra = "") {
  return kBin + " train " + kConfigs + "lenet5_fmnist.textproto --run-dir " + run_dir +
         " --set data.train_limit=8000 --set solver.epochs=2 " + extra;
}

class DptrainRealData : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kFashion)) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  }
};

TEST_F(DptrainRealData, LenetLearnsFashionMnistSubsetAndWritesRunFolder) {
  TempDir dir;
  const auto r = run_command(train_lenet(dir / "run"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr(", test_accuracy "));

  // The last eval record carries the accuracy on the full test set.
  std::ifstream metrics(dir / "run/metrics.jsonl");
  std::string line, last_eval;
  bool saw_train = false;
  while (std::getline(metrics, line)) {
    if (line.find("\"kind\":\"eval\"") != std::string::npos) last_eval = line;
    if (line.find("\"kind\":\"train\"") != std::string::npos) {
      saw_train = true;
      for (const char* key : {"\"epoch\"", "\"step\"", "\"train_loss\"", "\"images_per_sec\"",
                              "\"wall_time\"", "\"step_time\"", "\"forward_ms\"",
                              "\"primitives_ms\"", "\"gflop\"", "\"gradient_floats\""}) {
        EXPECT_THAT(line, HasSubstr(key));
      }
    }
  }
  EXPECT_TRUE(saw_train);
  ASSERT_THAT(last_eval, HasSubstr("\"test_accuracy\":"));
  EXPECT_THAT(last_eval, HasSubstr("\"test_loss\":"));
  const double accuracy = std::stod(last_eval.substr(last_eval.find("\"test_accuracy\":") + 16));
  EXPECT_GE(accuracy, 0.80);

  EXPECT_TRUE(std::filesystem::exists(dir / "run/final_weights"));
  const std::string config = slurp(dir / "run/config.textproto");
  EXPECT_THAT(config, HasSubstr("train_limit: 8000"));  // overrides are resolved in

  const auto eval = run_command(kBin + " eval " + kConfigs + "lenet5_fmnist.textproto --weights " +
                                (dir / "run/final_weights"));
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  EXPECT_THAT(eval.output, HasSubstr("confusion matrix"));
  EXPECT_THAT(eval.output, HasSubstr("precision"));
  EXPECT_THAT(eval.output, HasSubstr("Ankle boot"));  // data.class_names
  EXPECT_THAT(eval.output, HasSubstr("accuracy"));
}

TEST_F(DptrainRealData, SameSeedGivesBitwiseIdenticalWeights) {
  TempDir dir;
  const std::string extra = "--set data.train_limit=2048 --set solver.epochs=1";
  ASSERT_EQ(run_command(train_lenet(dir / "a", extra)).exit_code, 0);
  ASSERT_EQ(run_command(train_lenet(dir / "b", extra)).exit_code, 0);
  ASSERT_EQ(run_command(train_lenet(dir / "c", extra + " --set seed=7")).exit_code, 0);
  const std::string a = slurp(dir / "a/final_weights");
  EXPECT_FALSE(a.empty());
  EXPECT_EQ(a, slurp(dir / "b/final_weights"));
  EXPECT_NE(a, slurp(dir / "c/final_weights"));

  const auto same = run_command(kBin + " diff-weights " + (dir / "a/final_weights") + " " +
                                (dir / "b/final_weights") + " --tolerance 0");
  EXPECT_EQ(same.exit_code, 0) << same.output;
  EXPECT_THAT(same.output, HasSubstr("max_rel_diff 0\n"));
  const auto differ = run_command(kBin + " diff-weights " + (dir / "a/final_weights") + " " +
                                  (dir / "c/final_weights") + " --tolerance 1e-3");
  EXPECT_EQ(differ.exit_code, 3) << differ.output;
}

// A config file written into a temp folder.
std::string write_config(const TempDir& dir, const std::string& text) {
  const std::string path = dir / "bad.textproto";
  std::ofstream(path) << text;
  return path;
}

const char* kSmallNet = R"(
data { format: SYNTHETIC synthetic { train_size: 64 test_size: 32 } batch_size: 16 }
net {
  layer { name: "fc" type: "InnerProduct" inner_product { num_output: 4 } }
  layer { name: "loss" type: "SoftmaxCrossEntropy" }
}
solver { epochs: 1 }
)";

struct ErrorCase {
  std::string name, config, flags, message;
};

void PrintTo(const ErrorCase& c, std::ostream* os) { *os << c.name; }

class DptrainUserError : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(DptrainUserError, ExitsWithOneClearLine) {
  TempDir dir;
  const ErrorCase& c = GetParam();
  const std::string config = c.config.empty() ? "" : write_config(dir, c.config);
  const auto r = run_command(
      kBin + " " +
      (c.config.empty() ? "" : "train " + config + " --run-dir " + (dir / "run") + " ") + c.flags);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr(c.message));
  EXPECT_THAT(r.output, Not(HasSubstr("terminate called")));
  EXPECT_FALSE(std::filesystem::exists(dir / "run/final_weights"));
}

std::string with(const std::string& from, const std::string& to) {
  std::string s = kSmallNet;
  s.replace(s.find(from), from.size(), to);
  return s;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, DptrainUserError,
    ::testing::Values(
        ErrorCase{"SyntaxError", "data { batch_size: 16 \nnet {", "", "bad.textproto:2:"},
        ErrorCase{"UnknownLayer", with("\"InnerProduct\"", "\"InnerPrduct\""), "",
                  "unknown type 'InnerPrduct'"},
        ErrorCase{"FcInputMismatch", with("num_output: 4", "num_output: 4 num_input: 99"), "",
                  "layer 'fc' (InnerProduct): expects 99 inputs"},
        ErrorCase{"ImpossibleLr", kSmallNet, "--set solver.base_lr=-1", "solver.base_lr"},
        ErrorCase{"UnknownSetPath", kSmallNet, "--set solver.bse_lr=0.1", "bse_lr"},
        ErrorCase{"BadSetValue", kSmallNet, "--set data.batch_size=abc", "data.batch_size"},
        ErrorCase{"MissingData", with("format: SYNTHETIC", "format: IDX path: \"/nonexistent\""),
                  "", "/nonexistent"},
        ErrorCase{"BadFlag", kSmallNet, "--frobnicate", "unknown flag --frobnicate"},
        ErrorCase{"UnknownCommand", "", "fly", "unknown command 'fly'"},
        ErrorCase{"MissingConfig", "", "train /nonexistent.textproto", "/nonexistent.textproto"},
        // Estimated before anything is allocated: 2e9 outputs x 64 inputs.
        ErrorCase{"NetBeyondMemory", with("num_output: 4", "num_output: 2000000000"), "",
                  "layer 'fc' (InnerProduct) alone needs"},
        ErrorCase{"WrongClassNameCount",
                  with("batch_size: 16", "batch_size: 16 class_names: \"a\""), "",
                  "data.class_names has 1 names but the dataset has"}),
    [](const ::testing::TestParamInfo<ErrorCase>& p) { return p.param.name; });

TEST(DptrainCli, Bf16OnACpuWithoutItIsRefusedAtStart) {
  // oneDNN dispatches to no more than ONEDNN_MAX_CPU_ISA, so any CPU can
  // play one without bf16.
  TempDir dir;
  const auto r = run_command("ONEDNN_MAX_CPU_ISA=AVX512_CORE " + kBin + " train " +
                             write_config(dir, kSmallNet) + " --run-dir " + (dir / "run") +
                             " --set precision=BF16");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("dptrain: precision: BF16 needs a CPU with AVX512-BF16 or AMX"));
  EXPECT_FALSE(std::filesystem::exists(dir / "run/final_weights"));
}

TEST(DptrainCli, RefusesToOverwriteARun) {
  TempDir dir;
  const std::string config = write_config(dir, kSmallNet);
  const std::string cmd = kBin + " train " + config + " --run-dir " + (dir / "run");
  ASSERT_EQ(run_command(cmd).exit_code, 0);
  const std::string before = slurp(dir / "run/final_weights");
  const auto again = run_command(cmd);
  EXPECT_EQ(again.exit_code, 2);
  EXPECT_THAT(again.output, HasSubstr("already holds a run"));
  EXPECT_EQ(slurp(dir / "run/final_weights"), before);
}

TEST(DptrainCli, LinearScalingRuleScalesTheRateByTheGlobalBatch) {
  TempDir dir;
  const std::string config = write_config(dir, kSmallNet);
  // base_lr 0.01 at batch 16 against a reference batch of 8: 0.02.
  const auto r = run_command(kBin + " train " + config + " --run-dir " + (dir / "run") +
                             " --set solver.lr_scaling=LINEAR --set solver.lr_reference_batch=8"
                             " --set solver.base_lr=0.01 --set runtime.log_every_steps=1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(slurp(dir / "run/metrics.jsonl"), HasSubstr("\"lr\":0.02,"));
}

TEST(DptrainCli, DiffWeightsReportsDamagedFile) {
  TempDir dir;
  std::ofstream(dir / "junk") << "not weights";
  const auto r = run_command(kBin + " diff-weights " + (dir / "junk") + " " + (dir / "junk"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("junk"));
}

}  // namespace
}  // namespace dptrain::testing
