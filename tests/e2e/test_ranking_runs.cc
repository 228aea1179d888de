// Runs judged by ranking: an embedding trained with the triplet loss over
// the global batch (N ranks equal one process), its retrieval metrics in
// metrics.jsonl, dptrain eval and dptrain embed's NumPy arrays; a binary
// logistic regression's AUC and average precision; a classifier's macro
// AUC and mAP; and the ROC curves each evaluation writes.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/e2e/run_command.h"

namespace dptrain::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const std::string kBin = DPTRAIN_BIN;
const std::string kConfigs = std::string(DPTRAIN_SOURCE_DIR) + "/configs/";

// The embedding config at 10 steps of a global batch of 24 (divisible by
// 1..4 ranks). Runs on different rank counts round differently, by about
// 1e-7; where that moves a pre-activation across a ReLU's zero, one
// element's gradient appears or vanishes and the runs part by 1e-4 (as in
// SynchronizedBatchNormMatchesOneProcess). A small batch and learning rate
// keep that rare: seeds 1 to 3 stay within 1e-6 here.
const std::string kEmbed = kConfigs +
                           "embed_fmnist.textproto --set data.train_limit=480 --set "
                           "data.test_limit=300 --set data.batch_size=24 --set "
                           "solver.max_steps=10 --set solver.base_lr=0.002";
std::string embed_args(const std::string& run_dir) { return kEmbed + " --run-dir " + run_dir; }

// Of two run folders' final weights.
double max_rel_diff(const std::string& a, const std::string& b) {
  return dptrain::testing::max_rel_diff(kBin, a + "/final_weights", b + "/final_weights");
}

// The last line of metrics.jsonl whose kind is `kind`.
std::string last_record(const std::string& run_dir, const std::string& kind) {
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::string line, last;
  while (std::getline(in, line)) {
    if (line.find("\"kind\":\"" + kind + "\"") != std::string::npos) last = line;
  }
  return last;
}

double field(const std::string& record, const std::string& name) {
  std::smatch m;
  if (!std::regex_search(record, m, std::regex("\"" + name + "\":([-0-9.eE]+)"))) return NAN;
  return std::stod(m[1]);
}

// A .npy file's header dict and its data bytes.
struct Npy {
  std::string header, data;
};
Npy read_npy(const std::string& path) {
  const std::string bytes = slurp(path);
  Npy n;
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0 || bytes[6] != 1) return n;
  const size_t len = static_cast<unsigned char>(bytes[8]) | static_cast<unsigned char>(bytes[9])
                                                                << 8;
  n.header = bytes.substr(10, len);
  n.data = bytes.substr(10 + len);
  EXPECT_EQ((10 + len) % 64, 0u) << "the data is 64-byte aligned";
  return n;
}

class RankingRuns : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists("/usr/share/datasets/fashion-mnist")) {
      GTEST_SKIP() << "dataset-fashion-mnist not installed";
    }
  }
  void run(const std::string& command, const std::string& log) {
    const auto r = run_command(command + " > " + log + " 2>&1");
    ASSERT_EQ(r.exit_code, 0) << r.output << slurp(log);
  }
  TempDir dir_;
};

TEST_F(RankingRuns, EmbeddingRanksMatchOneProcessWithGlobalMining) {
  run(mpiexec(1) + kBin + " train " + embed_args(dir_ / "one"), dir_ / "one.log");
  const std::string one = last_record(dir_ / "one", "eval");
  for (int n : {2, 3, 4}) {
    const std::string name = "n" + std::to_string(n);
    run(mpiexec(n) + kBin + " train " + embed_args(dir_ / name), dir_ / (name + ".log"));
    EXPECT_LE(max_rel_diff(dir_ / "one", dir_ / name), 1e-5) << n << " ranks";
    const std::string eval = last_record(dir_ / name, "eval");
    for (const char* metric : {"knn_accuracy", "verification_auc", "retrieval_map"}) {
      EXPECT_NEAR(field(eval, metric), field(one, metric), 1e-4) << metric << ", " << n << " ranks";
    }
  }
  // The balanced sampler too: 4 classes x 6 samples per global batch.
  const std::string balanced = " --set data.sampler=BALANCED --set data.classes_per_batch=4";
  run(mpiexec(1) + kBin + " train " + embed_args(dir_ / "b1") + balanced, dir_ / "b1.log");
  run(mpiexec(3) + kBin + " train " + embed_args(dir_ / "b3") + balanced, dir_ / "b3.log");
  EXPECT_LE(max_rel_diff(dir_ / "b1", dir_ / "b3"), 1e-5);
  EXPECT_GT(max_rel_diff(dir_ / "one", dir_ / "b1"), 1e-3) << "the sampler made no difference";
}

TEST_F(RankingRuns, EmbeddingRunRecordsRetrievalMetricsAndItsCurve) {
  run(kBin + " train " + embed_args(dir_ / "run") +
          " --set solver.max_steps=0 --set solver.epochs=1",
      dir_ / "run.log");
  const std::string eval = last_record(dir_ / "run", "eval");
  const double knn = field(eval, "knn_accuracy");
  EXPECT_GT(knn, 0.3) << eval;  // ten classes: chance is 0.1
  EXPECT_LE(knn, 1);
  EXPECT_DOUBLE_EQ(field(eval, "test_accuracy"), knn);
  EXPECT_GT(field(eval, "verification_auc"), 0.6);
  EXPECT_GT(field(eval, "retrieval_map"), 0.15);
  EXPECT_GT(field(eval, "eval_seconds"), 0);
  const std::string train = last_record(dir_ / "run", "train");
  EXPECT_GE(field(train, "active_triplet_fraction"), 0) << train;
  EXPECT_THAT(train, Not(HasSubstr("train_accuracy")));
  const std::string csv = slurp(dir_ / "run/roc_epoch1.csv");
  EXPECT_EQ(csv.substr(0, csv.find('\n')),
            "curve,threshold,false_positive_rate,true_positive_rate");
  EXPECT_THAT(csv, HasSubstr("\nverification,inf,0.000000,0.000000\n"));
  EXPECT_THAT(csv, HasSubstr(",1.000000,1.000000\n"));

  // dptrain eval prints the same figures instead of a confusion matrix.
  const auto e =
      run_command(kBin + " eval " + kEmbed + " --weights " + (dir_ / "run/final_weights"));
  ASSERT_EQ(e.exit_code, 0) << e.output;
  EXPECT_THAT(e.output, Not(HasSubstr("confusion")));
  std::smatch m;
  ASSERT_TRUE(std::regex_search(e.output, m, std::regex("knn_accuracy ([0-9.]+)"))) << e.output;
  EXPECT_NEAR(std::stod(m[1]), knn, 1e-4);
  EXPECT_THAT(e.output, HasSubstr("verification_auc "));
  EXPECT_THAT(e.output, HasSubstr("retrieval_map "));
}

TEST_F(RankingRuns, EmbedWritesTheEmbeddingsAndLabelsAsNumpyArrays) {
  run(kBin + " train " + embed_args(dir_ / "run") + " --set solver.max_steps=2", dir_ / "run.log");
  const std::string weights = dir_ / "run/final_weights";
  const std::string out = dir_ / "test.npy";
  run(kBin + " embed " + kEmbed + " --weights " + weights + " --out " + out, dir_ / "embed.log");
  const Npy e = read_npy(out), l = read_npy(dir_ / "test.labels.npy");
  EXPECT_THAT(e.header, HasSubstr("'descr': '<f4', 'fortran_order': False, 'shape': (300, 64)"));
  EXPECT_THAT(l.header, HasSubstr("'descr': '<i4', 'fortran_order': False, 'shape': (300,)"));
  ASSERT_EQ(e.data.size(), 300u * 64 * 4);
  ASSERT_EQ(l.data.size(), 300u * 4);
  std::vector<float> rows(300 * 64);
  std::memcpy(rows.data(), e.data.data(), e.data.size());
  for (int i = 0; i < 300; ++i) {
    double sq = 0;
    for (int j = 0; j < 64; ++j) sq += static_cast<double>(rows[i * 64 + j]) * rows[i * 64 + j];
    EXPECT_NEAR(sq, 1, 1e-4) << "row " << i << " is L2-normalised";
  }
  // The labels are the test set's, in order: the first of Fashion-MNIST's
  // test set are 9 (ankle boot), 2, 1, 1, 6.
  std::vector<int32_t> labels(300);
  std::memcpy(labels.data(), l.data.data(), l.data.size());
  EXPECT_EQ(std::vector<int32_t>(labels.begin(), labels.begin() + 5),
            (std::vector<int32_t>{9, 2, 1, 1, 6}));
  // Two ranks gather the same rows in the same order.
  run(mpiexec(2) + kBin + " embed " + kEmbed + " --weights " + weights + " --out " +
          (dir_ / "two.npy"),
      dir_ / "two.log");
  const Npy two = read_npy(dir_ / "two.npy");
  ASSERT_EQ(two.data.size(), e.data.size());
  std::vector<float> rows2(rows.size());
  std::memcpy(rows2.data(), two.data.data(), two.data.size());
  for (size_t i = 0; i < rows.size(); ++i) ASSERT_NEAR(rows2[i], rows[i], 1e-5) << i;
  EXPECT_EQ(slurp(dir_ / "two.labels.npy"), slurp(dir_ / "test.labels.npy"));
  // --train-set: the (limited) training set.
  run(kBin + " embed " + kEmbed + " --weights " + weights + " --out " + (dir_ / "train.npy") +
          " --train-set",
      dir_ / "train.log");
  EXPECT_THAT(read_npy(dir_ / "train.npy").header, HasSubstr("'shape': (480, 64)"));
  // A classifier has no embedding.
  const auto c = run_command(kBin + " embed " + kConfigs + "lenet5_fmnist.textproto --weights " +
                             weights + " --out " + (dir_ / "x.npy"));
  EXPECT_EQ(c.exit_code, 2) << c.output;
  EXPECT_THAT(c.output, HasSubstr("not an embedding's (TripletLoss)"));
  EXPECT_FALSE(std::filesystem::exists(dir_ / "x.npy"));
}

TEST_F(RankingRuns, BinaryAndClassifierRunsRecordAucAndAveragePrecision) {
  run(kBin + " train " + kConfigs + "logreg_binary_fmnist.textproto --run-dir " + (dir_ / "bin") +
          " --set solver.epochs=1",
      dir_ / "bin.log");
  const std::string eval = last_record(dir_ / "bin", "eval");
  EXPECT_GT(field(eval, "auc"), 0.8) << eval;
  EXPECT_GT(field(eval, "average_precision"), 0.8);
  EXPECT_GT(field(eval, "test_accuracy"), 0.7);
  EXPECT_THAT(eval, Not(HasSubstr("auc_macro")));
  EXPECT_THAT(slurp(dir_ / "bin/roc_epoch1.csv"), HasSubstr("\nShirt,inf,0.000000,0.000000\n"));
  // 1,000 shirts and 1,000 T-shirts in the test set, a 2 x 2 confusion.
  const auto e =
      run_command(kBin + " eval " + kConfigs + "logreg_binary_fmnist.textproto --weights " +
                  (dir_ / "bin/final_weights"));
  ASSERT_EQ(e.exit_code, 0) << e.output;
  EXPECT_THAT(e.output, HasSubstr("of 2000)"));
  EXPECT_THAT(e.output, HasSubstr("auc "));
  EXPECT_THAT(e.output, HasSubstr("average_precision "));

  run(kBin + " train " + kConfigs + "logreg_fmnist.textproto --run-dir " + (dir_ / "cls") +
          " --set solver.epochs=1 --set data.train_limit=2000",
      dir_ / "cls.log");
  const std::string cls = last_record(dir_ / "cls", "eval");
  EXPECT_GT(field(cls, "auc_macro"), 0.9) << cls;
  EXPECT_GT(field(cls, "map_macro"), 0.6);
  EXPECT_LE(field(cls, "map_macro"), 1);
  const std::string curves = slurp(dir_ / "cls/roc_epoch1.csv");
  for (const char* name : {"\nT-shirt/top,inf", "\nAnkle boot,inf"}) {
    EXPECT_THAT(curves, HasSubstr(name));
  }
}

}  // namespace
}  // namespace dptrain::testing
