// dptrain-launch report, looked at the way people look at it: the page of
// a real run folder and of a real sweep folder, rendered in headless
// Chromium with the network unreachable, every plot present, sized and
// drawn with data, no script error, no external reference. And the errors
// a user can make with it.
#include <filesystem>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/e2e/browser.h"
#include "tests/e2e/run_command.h"

namespace dptrain::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const std::string kLaunch = DPTRAIN_LAUNCH_BIN;
const std::string kConfigs = std::string(DPTRAIN_SOURCE_DIR) + "/configs/";
const std::string& kEnv = kMpiAsRoot;

class Report : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists("/usr/share/datasets/fashion-mnist"))
      GTEST_SKIP() << "dataset-fashion-mnist not installed";
  }
  // Every plot named is there, has a size, drawn pixels and data.
  static void expect_drawn(const RenderedPage& page, const std::vector<std::string>& plots) {
    ASSERT_TRUE(page.ran) << "the page did not finish its scripts:\n" << page.output;
    EXPECT_TRUE(page.errors.empty()) << page.errors.front();
    for (const std::string& name : plots) {
      const auto it = page.plots.find(name);
      ASSERT_NE(it, page.plots.end()) << "no plot " << name;
      EXPECT_GT(it->second.width, 100) << name;
      EXPECT_GT(it->second.height, 100) << name;
      EXPECT_GT(it->second.points, 0) << name << " has no data";
      EXPECT_GT(it->second.drawn_pixels, 50) << name << " shows no data";
    }
  }
  TempDir dir_;
};

TEST_F(Report, RunFolderPageDrawsEveryPlotWithoutNetwork) {
  if (!fs::exists(kChromium)) GTEST_SKIP() << "chromium not installed (scripts/setup.sh has it)";
  const std::string run = dir_ / "run";
  const auto train = run_command(
      std::string(DPTRAIN_BIN) + " train " + kConfigs + "lenet5_fmnist.textproto --run-dir " + run +
      " --set data.train_limit=1200 --set data.validation_size=200 --set data.test_limit=300"
      " --set solver.epochs=3 --set runtime.log_every_steps=4 --set runtime.threads=1");
  ASSERT_EQ(train.exit_code, 0) << train.output;
  const auto r = run_command(kLaunch + " report " + run);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, run + "/report.html\n");
  const std::string html = slurp(run + "/report.html");
  EXPECT_THAT(external_references(html), ::testing::IsEmpty());
  EXPECT_THAT(html, HasSubstr("lenet5_fmnist"));
  const RenderedPage page = render_in_chromium(run + "/report.html", dir_);
  expect_drawn(
      page, {"loss", "accuracy", "learning-rate", "throughput", "confusion-matrix", "per-class"});
  // The classifier's ranking figures in the summary, as the page shows them.
  EXPECT_THAT(page.output, HasSubstr("ROC AUC, mean over classes (last evaluation)"));
  EXPECT_THAT(page.output, HasSubstr("average precision, mean over classes (last evaluation)"));
  // Class names from the config, the environment from the worker.
  EXPECT_THAT(html, HasSubstr("Ankle boot"));
  EXPECT_THAT(html, HasSubstr("\"onednn_version\""));
}

TEST_F(Report, SweepFolderPageDrawsCurvesHyperparametersAndRungs) {
  if (!fs::exists(kChromium)) GTEST_SKIP() << "chromium not installed (scripts/setup.sh has it)";
  const std::string config = dir_ / "sweep.textproto";
  std::ofstream(config) << "name: 'tiny'\n"
                           "base_config: '" +
                               kConfigs +
                               "lenet5_fmnist.textproto'\n"
                               "set: 'data.train_limit=480' set: 'data.validation_size=96'\n"
                               "set: 'data.test_limit=200' set: 'data.batch_size=48'\n"
                               "param { path: 'solver.base_lr' kind: LOG_UNIFORM min: 0.005 "
                               "max: 0.1 }\n"
                               "param { path: 'data.batch_size' kind: CHOICE values: '24' "
                               "values: '48' }\n"
                               "algorithm: RANDOM trials: 4 seed: 5 concurrent_trials: 2\n"
                               "scheduler { type: ASHA reduction_factor: 2 min_epochs: 1 "
                               "max_epochs: 3 }\n";
  const std::string out = dir_ / "sweep";
  const auto r =
      run_command(kEnv + "timeout 600 " + kLaunch + " sweep " + config + " --run-dir " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // The sweep writes its report at the end.
  EXPECT_THAT(r.output, HasSubstr("report: " + out + "/report.html"));
  const std::string html = slurp(out + "/report.html");
  EXPECT_THAT(external_references(html), ::testing::IsEmpty());
  const RenderedPage page = render_in_chromium(out + "/report.html", dir_);
  expect_drawn(page, {"learning-curves", "objective-vs-solver.base_lr",
                      "objective-vs-data.batch_size", "rungs"});
}

TEST_F(Report, FolderOfNeitherKindIsOneClearError) {
  const auto missing = run_command(kLaunch + " report " + (dir_ / "nowhere") + " 2>&1");
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_THAT(missing.output, HasSubstr("nowhere: no such folder"));
  const auto empty = run_command(kLaunch + " report " + dir_.path().string() + " 2>&1");
  EXPECT_EQ(empty.exit_code, 2);
  EXPECT_THAT(empty.output, HasSubstr("neither a run folder"));
  EXPECT_FALSE(fs::exists(dir_ / "report.html"));
  // A file where sweep.db should be is named, not a crash.
  std::ofstream(dir_ / "sweep.db") << "not sqlite";
  const auto damaged = run_command(kLaunch + " report " + dir_.path().string() + " 2>&1");
  EXPECT_EQ(damaged.exit_code, 2);
  EXPECT_THAT(damaged.output, HasSubstr("sweep.db"));
  EXPECT_FALSE(fs::exists(dir_ / "report.html"));
}

}  // namespace
}  // namespace dptrain::testing
