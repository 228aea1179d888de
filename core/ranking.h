// Ranking metrics: how well scores put positives above negatives (ROC
// curve, its area, average precision), and the retrieval metrics of
// embeddings by cosine similarity built on them. Pure functions of their
// inputs: the trainer gathers every rank's scores first, so the figures do
// not depend on the rank count.
//
// Ties: samples with equal scores are one threshold, so a tie between a
// positive and a negative counts half in the AUC (average ranks,
// Mann-Whitney) and enters average precision as one step (as
// scikit-learn's average_precision_score). Undefined figures are NaN: AUC
// with no positive or no negative, average precision with no positive.
#pragma once

#include <cstdint>
#include <vector>

namespace dptrain {

struct RocPoint {
  double threshold;  // score >= threshold is called positive; +inf first
  double false_positive_rate;
  double true_positive_rate;
};

// All three from one sort. The curve runs from (+inf, 0, 0) to (lowest
// score, 1, 1), one point per distinct score; with curve_step > 0 a point
// is kept only if FPR or TPR moved at least curve_step since the last kept
// one (the ends are always kept): a curve of millions of pairs in a few
// thousand points, exact to curve_step. curve_step < 0: no curve. The
// curve is empty when a class is missing.
struct Ranking {
  double auc = 0, average_precision = 0;
  std::vector<RocPoint> curve;
};
Ranking rank(const std::vector<float>& scores, const std::vector<uint8_t>& positive,
             double curve_step);
std::vector<RocPoint> roc_curve(const std::vector<float>& scores,
                                const std::vector<uint8_t>& positive, double min_step = 0);
double roc_auc(const std::vector<float>& scores, const std::vector<uint8_t>& positive);
double average_precision(const std::vector<float>& scores, const std::vector<uint8_t>& positive);

// One-vs-rest figures of a classifier from its class scores (n x classes,
// row-major) and labels: per-class AUC and AP, and their means over the
// classes where they are defined (NaN if none is); with curve_step >= 0,
// each class's ROC curve too (as rank() thins it).
struct ClassRanking {
  std::vector<double> auc, average_precision;
  std::vector<std::vector<RocPoint>> curves;  // per class, when asked for
  double auc_macro = 0, map_macro = 0;
};
ClassRanking class_ranking(const std::vector<float>& scores, const std::vector<int32_t>& labels,
                           int classes, double curve_step = -1);

// Embeddings (n x dim, row-major); each row is L2-normalised first, so
// dot products are cosine similarities.
std::vector<float> normalized_rows(const float* rows, int64_t n, int64_t dim);

// For queries [first, last) of `queries`, the index of the most similar
// gallery row (ties: the lowest index). Both normalised.
std::vector<int64_t> nearest_neighbours(const std::vector<float>& queries, int64_t first,
                                        int64_t last, const std::vector<float>& gallery,
                                        int64_t dim);

// Similarities of all pairs i < j of the first n rows, and whether their
// labels agree, in row-major pair order.
struct PairScores {
  std::vector<float> similarity;
  std::vector<uint8_t> same;
};
PairScores pair_scores(const std::vector<float>& rows, const std::vector<int32_t>& labels,
                       int64_t n, int64_t dim);

// For queries [first, last) of the first n rows: the sum of the average
// precision of ranking the other n - 1 rows by similarity (same label =
// relevant), and how many queries had a relevant row (the others are left
// out). Sums, so that ranks can add theirs.
struct ApSum {
  double sum = 0;
  int64_t queries = 0;
};
ApSum retrieval_ap_sum(const std::vector<float>& rows, const std::vector<int32_t>& labels,
                       int64_t n, int64_t dim, int64_t first, int64_t last);

}  // namespace dptrain
