// ROC curves, AUC and average precision against values worked out by hand
// (ties, one class only, all scores equal), and the retrieval metrics of
// embeddings against naive references.
#include "core/ranking.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/random.h"

namespace dptrain {
namespace {

TEST(Ranking, AucAndAveragePrecisionByHand) {
  // Ranked: + - + -. The positives beat 2 and 1 of the 2 negatives: AUC
  // 3/4. Precision at the positives: 1/1 and 2/3: AP (1 + 2/3) / 2.
  const std::vector<float> s{0.9f, 0.8f, 0.7f, 0.6f};
  const std::vector<uint8_t> y{1, 0, 1, 0};
  EXPECT_DOUBLE_EQ(roc_auc(s, y), 0.75);
  EXPECT_DOUBLE_EQ(average_precision(s, y), (1 + 2.0 / 3) / 2);
  // Order does not matter, only the scores.
  EXPECT_DOUBLE_EQ(roc_auc({0.6f, 0.7f, 0.9f, 0.8f}, {0, 1, 1, 0}), 0.75);
}

TEST(Ranking, TiesCountHalfInTheAucAndAsOneStepInAveragePrecision) {
  // The positive ties one negative (half) and beats the other: 1.5 / 2.
  EXPECT_DOUBLE_EQ(roc_auc({0.5f, 0.5f, 0.2f}, {1, 0, 0}), 0.75);
  // One threshold holds the positive and a negative: precision 1/2 there.
  EXPECT_DOUBLE_EQ(average_precision({0.5f, 0.5f, 0.2f}, {1, 0, 0}), 0.5);
  // Two positives and a negative tied on top, then a positive: precision
  // 2/3 for recall 2/3, then 3/4 for the last third.
  EXPECT_DOUBLE_EQ(average_precision({1.f, 1.f, 1.f, 0.f}, {1, 1, 0, 1}),
                   2.0 / 3 * 2.0 / 3 + 1.0 / 3 * 3.0 / 4);
  // -0 and +0 are the same score.
  EXPECT_DOUBLE_EQ(roc_auc({0.f, -0.f}, {1, 0}), 0.5);
}

TEST(Ranking, AllScoresEqual) {
  const std::vector<float> s(5, 0.3f);
  const std::vector<uint8_t> y{1, 0, 0, 1, 0};
  EXPECT_DOUBLE_EQ(roc_auc(s, y), 0.5);
  EXPECT_DOUBLE_EQ(average_precision(s, y), 2.0 / 5);
  const std::vector<RocPoint> curve = roc_curve(s, y);
  ASSERT_EQ(curve.size(), 2u);
  EXPECT_TRUE(std::isinf(curve[0].threshold));
  EXPECT_DOUBLE_EQ(curve[1].threshold, 0.3f);
  EXPECT_DOUBLE_EQ(curve[1].false_positive_rate, 1);
  EXPECT_DOUBLE_EQ(curve[1].true_positive_rate, 1);
}

TEST(Ranking, OneClassOnlyIsUndefined) {
  EXPECT_TRUE(std::isnan(roc_auc({0.1f, 0.2f}, {1, 1})));
  EXPECT_TRUE(std::isnan(roc_auc({0.1f, 0.2f}, {0, 0})));
  EXPECT_DOUBLE_EQ(average_precision({0.1f, 0.2f}, {1, 1}), 1);
  EXPECT_TRUE(std::isnan(average_precision({0.1f, 0.2f}, {0, 0})));
  EXPECT_TRUE(roc_curve({0.1f, 0.2f}, {1, 1}).empty());
}

TEST(Ranking, CurvePointsAndThinning) {
  const std::vector<float> s{0.9f, 0.8f, 0.7f, 0.6f};
  const std::vector<uint8_t> y{1, 0, 1, 0};
  const std::vector<RocPoint> c = roc_curve(s, y);
  ASSERT_EQ(c.size(), 5u);
  const double fpr[] = {0, 0, 0.5, 0.5, 1}, tpr[] = {0, 0.5, 0.5, 1, 1};
  for (size_t i = 0; i < c.size(); ++i) {
    EXPECT_DOUBLE_EQ(c[i].false_positive_rate, fpr[i]) << i;
    EXPECT_DOUBLE_EQ(c[i].true_positive_rate, tpr[i]) << i;
  }
  EXPECT_FLOAT_EQ(static_cast<float>(c[2].threshold), 0.8f);
  // 10,000 distinct scores thinned to steps of 0.01: about 200 points, the
  // ends kept, and the area of the thinned curve within the step.
  Rng rng(3);
  std::vector<float> many(10000);
  std::vector<uint8_t> labels(many.size());
  for (size_t i = 0; i < many.size(); ++i) {
    labels[i] = rng.below(2) == 1;
    many[i] = rng.uniform() + (labels[i] ? 0.3f : 0.f);
  }
  const std::vector<RocPoint> thin = roc_curve(many, labels, 0.01);
  EXPECT_LT(thin.size(), 250u);
  EXPECT_GT(thin.size(), 100u);
  EXPECT_DOUBLE_EQ(thin.back().false_positive_rate, 1);
  EXPECT_DOUBLE_EQ(thin.back().true_positive_rate, 1);
  double area = 0;
  for (size_t i = 1; i < thin.size(); ++i) {
    area += (thin[i].false_positive_rate - thin[i - 1].false_positive_rate) *
            (thin[i].true_positive_rate + thin[i - 1].true_positive_rate) / 2;
  }
  EXPECT_NEAR(area, roc_auc(many, labels), 0.01);
}

TEST(Ranking, AucEqualsThePairCount) {
  // The AUC is the fraction of (positive, negative) pairs ranked right,
  // ties half: counted pair by pair on scores with many ties.
  Rng rng(5);
  std::vector<float> s(300);
  std::vector<uint8_t> y(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    s[i] = static_cast<float>(rng.below(20));
    y[i] = rng.below(3) == 0;
  }
  double right = 0, pairs = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    for (size_t j = 0; j < s.size(); ++j) {
      if (!y[i] || y[j]) continue;
      right += s[i] > s[j] ? 1 : s[i] == s[j] ? 0.5 : 0;
      ++pairs;
    }
  }
  EXPECT_NEAR(roc_auc(s, y), right / pairs, 1e-12);
}

TEST(Ranking, ClassRankingMeansOverTheClassesPresent) {
  // Three classes, class 2 never present: its AUC and AP are undefined and
  // left out of the means.
  const std::vector<float> scores{0.8f, 0.1f, 0.1f,   // label 0
                                  0.3f, 0.6f, 0.1f,   // label 1
                                  0.6f, 0.3f, 0.1f,   // label 1
                                  0.2f, 0.7f, 0.1f};  // label 0
  const std::vector<int32_t> labels{0, 1, 1, 0};
  const ClassRanking r = class_ranking(scores, labels, 3);
  // Class 0's scores 0.8, 0.3, 0.6, 0.2 for labels 0, 1, 1, 0: the
  // positive 0.8 beats both negatives, 0.2 neither: AUC 2/4.
  EXPECT_DOUBLE_EQ(r.auc[0], 0.5);
  EXPECT_DOUBLE_EQ(r.auc[1], 0.5);
  EXPECT_TRUE(std::isnan(r.auc[2]));
  EXPECT_DOUBLE_EQ(r.auc_macro, 0.5);
  EXPECT_TRUE(std::isnan(r.average_precision[2]));
  EXPECT_DOUBLE_EQ(r.map_macro, (r.average_precision[0] + r.average_precision[1]) / 2);
}

std::vector<float> random_rows(int64_t n, int64_t dim, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(static_cast<size_t>(n * dim));
  for (float& x : v) x = rng.normal();
  return normalized_rows(v.data(), n, dim);
}

double dot(const std::vector<float>& a, int64_t i, const std::vector<float>& b, int64_t j,
           int64_t dim) {
  double s = 0;
  for (int64_t c = 0; c < dim; ++c)
    s += static_cast<double>(a[static_cast<size_t>(i * dim + c)]) *
         b[static_cast<size_t>(j * dim + c)];
  return s;
}

TEST(Retrieval, NearestNeighboursMatchABruteForceSearch) {
  const int64_t dim = 16, q = 300, g = 9000;  // more than one gallery block
  const std::vector<float> queries = random_rows(q, dim, 1), gallery = random_rows(g, dim, 2);
  const std::vector<int64_t> got = nearest_neighbours(queries, 100, 300, gallery, dim);
  ASSERT_EQ(got.size(), 200u);
  for (int64_t i = 100; i < 300; ++i) {
    int64_t best = 0;
    for (int64_t j = 1; j < g; ++j) {
      if (dot(queries, i, gallery, j, dim) > dot(queries, i, gallery, best, dim)) best = j;
    }
    // The GEMM rounds differently: a near tie may go either way.
    const int64_t mine = got[static_cast<size_t>(i - 100)];
    EXPECT_NEAR(dot(queries, i, gallery, mine, dim), dot(queries, i, gallery, best, dim), 1e-5)
        << i;
  }
  // An exact duplicate in the gallery goes to its lowest index.
  std::vector<float> twice = gallery;
  twice.insert(twice.end(), gallery.begin(), gallery.end());
  const std::vector<int64_t> dup = nearest_neighbours(gallery, 0, 50, twice, dim);
  for (int64_t i = 0; i < 50; ++i) EXPECT_EQ(dup[static_cast<size_t>(i)], i);
}

TEST(Retrieval, VerificationPairsAndRetrievalApMatchNaiveDefinitions) {
  const int64_t n = 60, dim = 8;
  const std::vector<float> rows = random_rows(n, dim, 7);
  Rng rng(8);
  std::vector<int32_t> labels(static_cast<size_t>(n));
  for (auto& l : labels) l = static_cast<int32_t>(rng.below(4));
  labels[59] = 9;  // a query with no relevant row: left out of the mean
  const PairScores pairs = pair_scores(rows, labels, n, dim);
  ASSERT_EQ(pairs.similarity.size(), static_cast<size_t>(n * (n - 1) / 2));
  size_t k = 0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = i + 1; j < n; ++j, ++k) {
      EXPECT_NEAR(pairs.similarity[k], dot(rows, i, rows, j, dim), 1e-5);
      EXPECT_EQ(pairs.same[k], labels[static_cast<size_t>(i)] == labels[static_cast<size_t>(j)]);
    }
  }
  // AP of one query by its definition: the mean over the relevant rows of
  // the precision among the rows ranked at or above it.
  double sum = 0;
  int64_t queries = 0;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<std::pair<double, bool>> ranked;
    for (int64_t j = 0; j < n; ++j) {
      if (j != i)
        ranked.push_back({dot(rows, i, rows, j, dim),
                          labels[static_cast<size_t>(j)] == labels[static_cast<size_t>(i)]});
    }
    std::sort(ranked.begin(), ranked.end(), [](auto& a, auto& b) { return a.first > b.first; });
    double ap = 0;
    int64_t hits = 0;
    for (size_t r = 0; r < ranked.size(); ++r) {
      if (ranked[r].second) ap += static_cast<double>(++hits) / static_cast<double>(r + 1);
    }
    if (hits == 0) continue;
    sum += ap / static_cast<double>(hits);
    ++queries;
  }
  const ApSum first = retrieval_ap_sum(rows, labels, n, dim, 0, 25);
  const ApSum second = retrieval_ap_sum(rows, labels, n, dim, 25, n);
  EXPECT_EQ(first.queries + second.queries, queries);
  EXPECT_EQ(queries, n - 1);
  EXPECT_NEAR(first.sum + second.sum, sum, 1e-9);
}

}  // namespace
}  // namespace dptrain
