// The losses beyond softmax: triplet mining against naive references
// (ties included), the triplet loss's value and gradient (central finite
// differences), and binary cross-entropy against its definition, for
// logits of +-100 too.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <tuple>

#include "core/error.h"
#include "core/triplet_mining.h"
#include "tests/unit/layer_test_util.h"

namespace dptrain {
namespace {

using layer_test::GradCheck;
using layer_test::Harness;
using ::testing::HasSubstr;

// ---- Mining ---------------------------------------------------------------------

// Squared distances of points on a line at small integers: many ties.
std::vector<double> line_distances(const std::vector<int>& at) {
  const size_t n = at.size();
  std::vector<double> d(n * n);
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < n; ++j) d[i * n + j] = std::pow(at[i] - at[j], 2);
  return d;
}

using Picked = std::vector<std::tuple<int64_t, int64_t, int64_t>>;

// The rules of dptrain.proto's TripletLossParam, written the long way:
// candidates listed, then the first best one taken (lowest index).
Picked naive_mining(const std::vector<double>& d, const std::vector<int32_t>& y,
                    TripletLossParam::Mining mining, double margin) {
  const auto n = static_cast<int64_t>(y.size());
  auto dist = [&](int64_t i, int64_t j) { return d[static_cast<size_t>(i * n + j)]; };
  Picked out;
  for (int64_t a = 0; a < n; ++a) {
    std::vector<int64_t> pos, neg;
    for (int64_t j = 0; j < n; ++j) {
      if (j != a && y[static_cast<size_t>(j)] == y[static_cast<size_t>(a)]) pos.push_back(j);
      if (y[static_cast<size_t>(j)] != y[static_cast<size_t>(a)]) neg.push_back(j);
    }
    auto by = [&](auto better) {
      return [&, better](int64_t i, int64_t j) { return better(dist(a, i), dist(a, j)); };
    };
    if (mining == TripletLossParam::BATCH_ALL) {
      for (int64_t p : pos)
        for (int64_t q : neg)
          if (dist(a, p) - dist(a, q) + margin > 0) out.emplace_back(a, p, q);
    } else if (mining == TripletLossParam::BATCH_HARD) {
      if (pos.empty() || neg.empty()) continue;
      // max_element and min_element return the first of equals.
      const int64_t p = *std::max_element(pos.begin(), pos.end(), by(std::less<>()));
      const int64_t q = *std::min_element(neg.begin(), neg.end(), by(std::less<>()));
      out.emplace_back(a, p, q);
    } else {
      if (neg.empty()) continue;
      for (int64_t p : pos) {
        std::vector<int64_t> farther;
        for (int64_t q : neg)
          if (dist(a, q) > dist(a, p)) farther.push_back(q);
        const int64_t q =
            farther.empty() ? *std::max_element(neg.begin(), neg.end(), by(std::less<>()))
                            : *std::min_element(farther.begin(), farther.end(), by(std::less<>()));
        out.emplace_back(a, p, q);
      }
    }
  }
  return out;
}

class MiningTest : public ::testing::TestWithParam<TripletLossParam::Mining> {};

TEST_P(MiningTest, PicksWhatTheNaiveReferencePicksTiesIncluded) {
  // Points at small integers with repeats, three identities and a loner
  // (identity 3: an anchor without positives).
  const std::vector<int> at{0, 1, 1, 2, 3, 3, 3, 5, 0, 2, 4};
  const std::vector<int32_t> y{0, 1, 0, 2, 1, 1, 0, 2, 2, 3, 0};
  const std::vector<double> d = line_distances(at);
  for (double margin : {0.0, 0.5, 2.0, 30.0}) {
    MinedTriplets m;
    mine_triplets(d, y.data(), static_cast<int64_t>(y.size()), GetParam(), margin, &m);
    Picked got;
    for (const Triplet& t : m.triplets) got.emplace_back(t.anchor, t.positive, t.negative);
    EXPECT_EQ(got, naive_mining(d, y, GetParam(), margin)) << "margin " << margin;
    int64_t active = 0;
    for (const Triplet& t : m.triplets) {
      const size_t n = y.size();
      EXPECT_DOUBLE_EQ(t.term,
                       d[static_cast<size_t>(t.anchor) * n + static_cast<size_t>(t.positive)] -
                           d[static_cast<size_t>(t.anchor) * n + static_cast<size_t>(t.negative)] +
                           margin);
      active += t.term > 0;
    }
    EXPECT_EQ(m.active, active);
    if (GetParam() == TripletLossParam::BATCH_ALL) {
      EXPECT_EQ(m.normalizer, m.active);
    } else {
      EXPECT_EQ(m.normalizer, static_cast<int64_t>(m.triplets.size()));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Strategies, MiningTest,
                         ::testing::Values(TripletLossParam::BATCH_ALL,
                                           TripletLossParam::BATCH_HARD,
                                           TripletLossParam::SEMI_HARD));

TEST(Mining, BatchAllCountsEveryValidTripletAsACandidate) {
  // Two identities of two: each of 4 anchors has 1 positive and 2
  // negatives.
  const std::vector<int32_t> y{0, 0, 1, 1};
  MinedTriplets m;
  mine_triplets(line_distances({0, 1, 2, 3}), y.data(), 4, TripletLossParam::BATCH_ALL, 100, &m);
  EXPECT_EQ(m.candidates, 8);
  EXPECT_EQ(m.active, 8);
}

// ---- The triplet loss layer ----------------------------------------------------

std::string triplet_loss(const std::string& mining, float margin) {
  return "triplet_loss { margin: " + std::to_string(margin) + " mining: " + mining + " }";
}

// The loss by its definition from the embeddings the net computed.
double naive_triplet_loss(const std::vector<float>& e, const std::vector<int32_t>& y, int64_t dim,
                          TripletLossParam::Mining mining, double margin) {
  const size_t n = y.size();
  std::vector<double> d(n * n);
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t c = 0; c < dim; ++c) {
        const double diff =
            static_cast<double>(e[i * static_cast<size_t>(dim) + static_cast<size_t>(c)]) -
            e[j * static_cast<size_t>(dim) + static_cast<size_t>(c)];
        s += diff * diff;
      }
      d[i * n + j] = s;
    }
  double sum = 0;
  int64_t count = 0;
  for (auto [a, p, q] : naive_mining(d, y, mining, margin)) {
    const double term = d[static_cast<size_t>(a) * n + static_cast<size_t>(p)] -
                        d[static_cast<size_t>(a) * n + static_cast<size_t>(q)] + margin;
    sum += std::max(term, 0.0);
    ++count;
  }
  // BATCH_ALL's list holds the active triplets, the others one per anchor
  // or pair: in each case the count the mean is over.
  (void)mining;
  return count > 0 ? sum / static_cast<double>(count) : 0;
}

class TripletLossTest
    : public ::testing::TestWithParam<std::pair<const char*, TripletLossParam::Mining>> {};

TEST_P(TripletLossTest, LossMatchesItsDefinitionAndGradientsMatchFiniteDifferences) {
  const auto [name, mining] = GetParam();
  // A margin large enough that most triplets are active: the loss is
  // smooth where it is checked. On a Tanh's output too (not normalised):
  // the normalisation's backward drops each gradient's radial part, which
  // would hide errors there (and the Tanh gives the head's bias a
  // gradient, which distances alone are blind to).
  for (bool normalized : {true, false}) {
    Harness h("", {8, 2, 2, 2},
              {.classes = 3,
               .loss = triplet_loss(name, 1.5f),
               .loss_type = "TripletLoss",
               .outputs = 4,
               .after_head = normalized ? "layer { name: 'norm' type: 'L2Normalize' }"
                                        : "layer { name: 'norm' type: 'Tanh' }"});
    h.set_labels({0, 1, 2, 0, 1, 2, 0, 1});
    const double loss = h.loss();
    EXPECT_GT(loss, 0);
    EXPECT_NEAR(loss, naive_triplet_loss(h.data("norm"), h.labels(), 4, mining, 1.5), 1e-5);
    GradCheck check;
    check.eps = 3e-3;
    expect_gradients_match(h, check);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Strategies, TripletLossTest,
    ::testing::Values(std::make_pair("BATCH_ALL", TripletLossParam::BATCH_ALL),
                      std::make_pair("BATCH_HARD", TripletLossParam::BATCH_HARD),
                      std::make_pair("SEMI_HARD", TripletLossParam::SEMI_HARD)),
    [](const auto& param_info) { return std::string(param_info.param.first); });

TEST(TripletLoss, ReportsTheActiveFractionAndAnEmbedding) {
  Harness h("", {6, 1, 2, 2},
            {.classes = 2,
             .loss = triplet_loss("BATCH_ALL", 0.f),
             .loss_type = "TripletLoss",
             .outputs = 3,
             .after_head = "layer { name: 'norm' type: 'L2Normalize' }"});
  h.set_labels({0, 0, 0, 1, 1, 1});
  h.loss();
  const LossLayer& loss = h.net().loss_layer();
  EXPECT_EQ(loss.kind(), LossLayer::Kind::kEmbedding);
  EXPECT_EQ(loss.score_width(), 3);
  const std::vector<float> e = h.data("norm");
  EXPECT_TRUE(std::equal(e.begin(), e.end(), loss.scores()));
  EXPECT_GE(loss.active_fraction(), 0);
  EXPECT_LE(loss.active_fraction(), 1);
  // At margin 0 some triplets are satisfied, at a huge margin none.
  EXPECT_LT(loss.active_fraction(), 1);
}

TEST(TripletLoss, RefusesANegativeMargin) {
  EXPECT_THROW(Harness("", {4, 1, 2, 2},
                       {.loss = triplet_loss("BATCH_ALL", -1.f), .loss_type = "TripletLoss"}),
               UserError);
}

// ---- Binary cross-entropy -------------------------------------------------------

// The definition, in long double, without the stable rewriting.
double naive_bce(const std::vector<float>& logits, const std::vector<int32_t>& y, double w) {
  long double total = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    const long double p = 1 / (1 + std::exp(-static_cast<long double>(logits[i])));
    total -= y[i] ? w * std::log(p) : std::log(1 - p);
  }
  return static_cast<double>(total / y.size());
}

TEST(SigmoidCrossEntropy, LossMatchesTheDefinitionAndGradientsMatchFiniteDifferences) {
  for (float w : {1.f, 3.f}) {
    Harness h("", {6, 2, 2, 2},
              {.classes = 2,
               .loss = "loss { positive_weight: " + std::to_string(w) + " }",
               .loss_type = "SigmoidCrossEntropy",
               .outputs = 1});
    h.set_labels({0, 1, 1, 0, 1, 0});
    const double loss = h.loss();
    EXPECT_NEAR(loss, naive_bce(h.data("head"), h.labels(), w), 1e-6);
    layer_test::expect_gradients_match(h);
    const LossLayer& l = h.net().loss_layer();
    EXPECT_EQ(l.kind(), LossLayer::Kind::kBinary);
    EXPECT_EQ(l.classes(), 2);
    const std::vector<float> logits = h.data("head");
    int64_t correct = 0;
    for (size_t i = 0; i < logits.size(); ++i) {
      EXPECT_EQ(l.predictions()[i], logits[i] >= 0);
      EXPECT_NEAR(l.scores()[i], 1 / (1 + std::exp(-logits[i])), 1e-6);
      correct += (logits[i] >= 0) == (h.labels()[i] == 1);
    }
    EXPECT_EQ(l.correct(), correct);
  }
}

TEST(SigmoidCrossEntropy, HugeLogitsGiveFiniteLossesAndGradients) {
  // The head's bias pushes every logit to +-100; the loss of a right
  // answer is about e^-100 and of a wrong one about 100, never inf or NaN.
  for (float bias : {100.f, -100.f}) {
    Harness h("", {4, 1, 2, 2}, {.classes = 2, .loss_type = "SigmoidCrossEntropy", .outputs = 1});
    h.set_weight("head.weight", std::vector<float>(4, 0.f));
    h.set_weight("head.bias", {bias});
    h.set_labels({1, 0, 1, 0});
    h.forward_backward();
    const double loss = h.net().loss_layer().loss();
    EXPECT_TRUE(std::isfinite(loss));
    // Two right at ~e^-100, two wrong at 100 each: a mean of 50.
    EXPECT_NEAR(loss, 50, 1e-4);
    for (float g : h.grad("head.bias")) EXPECT_TRUE(std::isfinite(g));
    for (float g : h.diff("head")) {
      EXPECT_TRUE(std::isfinite(g));
      EXPECT_NEAR(std::abs(g), 0.125f, 0.125f + 1e-6);  // |sigmoid - y| / 4 is 0 or 1/4
    }
  }
}

TEST(SigmoidCrossEntropy, NeedsOneLogitAndLabelsZeroOrOne) {
  EXPECT_THAT(
      [] {
        try {
          Harness h("", {4, 1, 2, 2}, {.classes = 3, .loss_type = "SigmoidCrossEntropy"});
        } catch (const UserError& e) {
          return std::string(e.what());
        }
        return std::string("(no error)");
      }(),
      HasSubstr("one logit per sample"));
  Harness h("", {4, 1, 2, 2}, {.classes = 2, .loss_type = "SigmoidCrossEntropy", .outputs = 1});
  h.set_labels({0, 1, 2, 0});
  EXPECT_THROW(h.loss(), UserError);
}

}  // namespace
}  // namespace dptrain
