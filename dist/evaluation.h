// What an evaluation measures, for each kind of loss (core/layer.h's
// LossLayer::Kind), from the scores every rank computed on its shard:
//  classifier: loss, top-1 accuracy, confusion matrix, one-vs-rest ROC AUC
//    and average precision per class and their means;
//  binary: the same at probability 0.5, and ROC AUC and average precision;
//  embedding: 1-NN accuracy against a gallery (the training set), its
//    confusion matrix, verification ROC AUC over all pairs of the first
//    2,000 samples and retrieval mAP over those 2,000 queries;
//  reconstruction: loss and the mean squared error per pixel.
// Scores are gathered onto every rank before any ranking, so the figures
// do not depend on the rank count; the work of the large searches (the
// queries of 1-NN and of retrieval) is split across ranks.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "core/dptrain.pb.h"
#include "core/layer.h"
#include "core/metrics.h"
#include "core/ranking.h"
#include "dist/communicator.h"

namespace dptrain {

// One rank's part of an evaluation pass: its valid samples' scores
// (width floats each), labels and predictions, and the sum of the
// per-batch losses weighted by their samples.
struct EvalShard {
  int width = 0;
  std::vector<float> scores;
  std::vector<int32_t> labels, predicted;
  double loss_sum = 0;
  int64_t skipped = 0;  // samples replaced for an unreadable image file
  void add(const LossLayer& loss, const int32_t* labels, int64_t count);
};

struct Evaluation {
  LossLayer::Kind kind = LossLayer::Kind::kClassifier;
  double loss = 0;
  double accuracy = 0;  // top-1, at probability 0.5, or 1-NN
  ConfusionMatrix confusion;
  ClassRanking class_ranking;                                        // classifier
  double auc = 0, average_precision = 0;                             // binary
  double knn_accuracy = 0, verification_auc = 0, retrieval_map = 0;  // embedding
  double mse = 0;                                                    // reconstruction
  int64_t skipped = 0;  // over all ranks: samples replaced for an unreadable file
  // Named ROC curves: one per class, the positive class's, or the
  // verification pairs'.
  std::vector<std::pair<std::string, std::vector<RocPoint>>> roc;

  // The test_* and ranking fields of an eval record.
  void fill_test(MetricsRecord* record) const;
  // What `dptrain eval` prints.
  std::string report(const std::vector<std::string>& class_names) const;
  // roc_epoch<N>.csv: curve,threshold,false_positive_rate,true_positive_rate
  std::string roc_csv() const;
};

// What an evaluation is given besides the scores.
struct EvalSetting {
  LossLayer::Kind kind = LossLayer::Kind::kClassifier;
  int classes = 0;  // the data's
  std::vector<std::string> class_names;
  // Reconstruction: per channel, what turns a squared error into pixel
  // units (data.std squared, when the target is the normalised input).
  std::vector<double> pixel_scale;
};

// Every rank calls it with its shard (and, for embeddings, its shard of
// the gallery); with_ranking false gives loss and accuracy only (the
// held-out split).
Evaluation finish_evaluation(const Communicator& comm, const EvalSetting& setting,
                             const EvalShard& shard, const EvalShard* gallery, bool with_ranking);

// The pairs and queries of verification and retrieval: the first this
// many samples of the evaluated set.
constexpr int64_t kVerificationSamples = 2000;

}  // namespace dptrain
