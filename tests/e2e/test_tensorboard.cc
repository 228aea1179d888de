// TensorBoard event files of real runs, read back by a reader written
// from the format's description (tests/unit/tfevents_reader.h): every CRC
// valid, the scalars equal to metrics.jsonl after rounding to float32,
// the config as a text summary, a resumed run marked so that TensorBoard
// drops what the first start wrote past the checkpoint. And the reader
// itself refuses a damaged record.
#include <algorithm>
#include <filesystem>
#include <map>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/metrics_record.h"
#include "tests/e2e/run_command.h"
#include "tests/unit/tfevents_reader.h"

namespace dptrain::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const std::string kBin = DPTRAIN_BIN;
const std::string kLenet = std::string(DPTRAIN_SOURCE_DIR) + "/configs/lenet5_fmnist.textproto";
const std::string kSmall =
    " --set data.train_limit=1200 --set data.validation_size=200 --set data.test_limit=300"
    " --set solver.epochs=2 --set runtime.log_every_steps=3 --set checkpoint.every_steps=9";

std::vector<std::string> event_files(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename().string().rfind("events.out.tfevents.", 0) == 0)
      files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

class TensorBoard : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists("/usr/share/datasets/fashion-mnist"))
      GTEST_SKIP() << "dataset-fashion-mnist not installed";
  }
  TempDir dir_;
};

TEST_F(TensorBoard, TwoRankRunWritesEveryMetricAsTensorBoardReadsIt) {
  const std::string run = dir_ / "run";
  const auto r = run_command(mpiexec(2) + kBin + " train " + kLenet + " --run-dir " + run + kSmall);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto files = event_files(run);
  ASSERT_EQ(files.size(), 1u);
  const TfEventFile events = read_tfevents(slurp(files[0]));
  ASSERT_EQ(events.error, "");
  EXPECT_EQ(events.file_version, "brain.Event:2");
  ASSERT_EQ(events.texts.size(), 1u);
  EXPECT_EQ(events.texts[0].tag, "config");
  EXPECT_EQ(events.texts[0].plugin, "text");
  EXPECT_EQ(events.texts[0].dtype, 7);  // DT_STRING
  EXPECT_THAT(events.texts[0].text, HasSubstr("name: \"lenet5_fmnist\""));

  // (tag, step) -> value, from the events and from metrics.jsonl.
  std::map<std::pair<std::string, int64_t>, float> seen, expected;
  for (const TfScalar& s : events.scalars) {
    EXPECT_TRUE(seen.emplace(std::make_pair(s.tag, s.step), s.value).second) << s.tag;
    EXPECT_GT(s.wall_time, 1.7e9) << "seconds since the Unix epoch";
  }
  int evals = 0;
  for (const MetricsRecord& m : read_metrics(run + "/metrics.jsonl")) {
    auto want = [&](const std::string& tag, double v) {
      expected[{tag, m.step()}] = static_cast<float>(v);
    };
    if (m.kind() == "train") {
      want("train/loss", m.train_loss());
      want("train/accuracy", m.train_accuracy());
      want("train/lr", m.lr());
      want("train/images_per_sec", m.images_per_sec());
      want("train/allreduce_wait_fraction", m.allreduce_wait_fraction());
    } else {
      ++evals;
      want("test/loss", m.test_loss());
      want("test/accuracy", m.test_accuracy());
      want("val/loss", m.val_loss());
      want("val/accuracy", m.val_accuracy());
      want("test/auc_macro", m.auc_macro());
      want("test/map_macro", m.map_macro());
      ASSERT_EQ(m.test_confusion_size(), 100);
      // "Ankle boot" is class 9: recall = its diagonal over its row.
      int64_t row = 0;
      for (int k = 0; k < 10; ++k) row += m.test_confusion(90 + k);
      want("test_recall/Ankle boot", static_cast<double>(m.test_confusion(99)) / row);
    }
  }
  EXPECT_EQ(evals, 2);
  ASSERT_FALSE(expected.empty());
  for (const auto& [key, value] : expected) {
    const auto it = seen.find(key);
    ASSERT_NE(it, seen.end()) << key.first << " at step " << key.second;
    EXPECT_EQ(it->second, value) << key.first << " at step " << key.second;
  }
  // Every class has both, under its name.
  int per_class = 0;
  for (const auto& [key, value] : seen)
    per_class +=
        key.first.rfind("test_precision/", 0) == 0 || key.first.rfind("test_recall/", 0) == 0;
  EXPECT_EQ(per_class, 2 * 10 * 2);
}

TEST_F(TensorBoard, EmbeddingAndBinaryRunsWriteTheirOwnFigures) {
  const std::string configs = std::string(DPTRAIN_SOURCE_DIR) + "/configs/";
  struct Case {
    std::string config;
    std::vector<std::string> tags;
  };
  for (const Case& c : {Case{"embed_fmnist",
                             {"train/active_triplet_fraction", "test/knn_accuracy",
                              "test/verification_auc", "test/retrieval_map"}},
                        Case{"logreg_binary_fmnist", {"test/auc", "test/average_precision"}}}) {
    const std::string run = dir_ / c.config;
    const auto r = run_command(kBin + " train " + configs + c.config + ".textproto --run-dir " +
                               run + " --set data.train_limit=480 --set data.test_limit=200" +
                               " --set solver.epochs=1");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const TfEventFile events = read_tfevents(slurp(event_files(run).at(0)));
    ASSERT_EQ(events.error, "");
    const MetricsRecord eval = read_metrics(run + "/metrics.jsonl").back();
    for (const std::string& tag : c.tags) {
      const auto it = std::find_if(events.scalars.begin(), events.scalars.end(),
                                   [&](const TfScalar& s) { return s.tag == tag; });
      ASSERT_NE(it, events.scalars.end()) << c.config << ": " << tag;
      const auto* field = eval.GetDescriptor()->FindFieldByName(tag.substr(tag.find('/') + 1));
      if (field && tag.rfind("test/", 0) == 0) {
        EXPECT_EQ(it->value, static_cast<float>(eval.GetReflection()->GetDouble(eval, field)))
            << tag;
      }
    }
  }
}

TEST_F(TensorBoard, AResumedRunTellsTensorBoardWhereItRestarted) {
  const std::string run = dir_ / "run";
  const std::string train = mpiexec(1) + kBin + " train " + kLenet + " --run-dir " + run + kSmall;
  ASSERT_EQ(run_command(train + " --stop-at-step 27").exit_code, 75);
  ASSERT_EQ(run_command(train + " --resume").exit_code, 0);
  const auto files = event_files(run);
  ASSERT_EQ(files.size(), 2u);
  const TfEventFile first = read_tfevents(slurp(files[0]));
  const TfEventFile second = read_tfevents(slurp(files[1]));
  EXPECT_EQ(first.error, "");
  EXPECT_EQ(second.error, "");
  EXPECT_TRUE(first.session_starts.empty());
  // TensorBoard drops earlier events at steps >= the START's: 28 keeps
  // the checkpoint step's own records, which the resumed run does not redo.
  EXPECT_EQ(second.session_starts, std::vector<int64_t>{28});
  for (const TfScalar& s : second.scalars) EXPECT_GT(s.step, 27) << s.tag;
}

TEST(TfEventsReader, RefusesADamagedRecordAndChecksItsOwnCrc) {
  // The CRC-32C check value of "123456789".
  const std::string check = "123456789";
  EXPECT_EQ(tfevents_detail::crc32c_bitwise(reinterpret_cast<const uint8_t*>(check.data()), 9),
            0xe3069283u);
  // A record by hand: length 2, its masked CRC, payload {field 2 = 5}, CRC.
  std::string record(8, '\0');
  record[0] = 2;
  auto put32 = [&](uint32_t v) {
    for (int i = 0; i < 4; ++i) record.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  put32(tfevents_detail::masked(reinterpret_cast<const uint8_t*>(record.data()), 8));
  const std::string payload = "\x10\x05";
  record += payload;
  put32(tfevents_detail::masked(reinterpret_cast<const uint8_t*>(payload.data()), 2));
  EXPECT_EQ(read_tfevents(record).error, "");
  EXPECT_EQ(read_tfevents(record).records, 1);

  std::string bad_payload = record;
  bad_payload[13] ^= 1;
  EXPECT_EQ(read_tfevents(bad_payload).error, "record 0: payload CRC mismatch");
  std::string bad_length = record;
  bad_length[0] = 3;
  EXPECT_EQ(read_tfevents(bad_length).error, "record 0: length CRC mismatch");
  EXPECT_EQ(read_tfevents(record.substr(0, record.size() - 1)).error,
            "record 0: truncated payload");
}

}  // namespace
}  // namespace dptrain::testing
