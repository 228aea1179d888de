#include "core/ranking.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>

#include <oneapi/dnnl/dnnl.h>

#include <stdexcept>

namespace dptrain {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// A key whose unsigned order is the score's order, with whether the
// sample is positive in the lowest bit.
uint64_t key(float score, bool positive) {
  if (score == 0.f) score = 0.f;  // -0 and +0 are one threshold
  const auto bits = std::bit_cast<uint32_t>(score);
  const uint32_t ordered = bits & 0x80000000u ? ~bits : bits | 0x80000000u;
  return static_cast<uint64_t>(ordered) << 1 | (positive ? 1u : 0u);
}

float score_of(uint64_t key) {
  const auto ordered = static_cast<uint32_t>(key >> 1);
  return std::bit_cast<float>(ordered & 0x80000000u ? ordered & 0x7fffffffu : ~ordered);
}

// Walks the distinct scores from the highest down, calling
// step(threshold, true positives, false positives) after each one's
// samples; returns the totals {positives, negatives}.
template <typename Step>
std::pair<int64_t, int64_t> sweep(const std::vector<float>& scores,
                                  const std::vector<uint8_t>& positive, Step step) {
  if (scores.size() != positive.size()) throw std::logic_error("ranking: scores and labels differ");
  std::vector<uint64_t> keys(scores.size());
  for (size_t i = 0; i < keys.size(); ++i) keys[i] = key(scores[i], positive[i] != 0);
  std::sort(keys.begin(), keys.end(), std::greater<>());
  int64_t tp = 0, fp = 0;
  for (size_t i = 0; i < keys.size();) {
    const uint64_t threshold = keys[i] >> 1;
    for (; i < keys.size() && keys[i] >> 1 == threshold; ++i) (keys[i] & 1 ? tp : fp) += 1;
    step(static_cast<double>(score_of(threshold << 1)), tp, fp);
  }
  return {tp, fp};
}

int64_t count_positive(const std::vector<uint8_t>& positive) {
  return std::count_if(positive.begin(), positive.end(), [](uint8_t p) { return p != 0; });
}

}  // namespace

Ranking rank(const std::vector<float>& scores, const std::vector<uint8_t>& positive,
             double curve_step) {
  const int64_t p = count_positive(positive);
  const auto n = static_cast<int64_t>(positive.size()) - p;
  Ranking r;
  const bool curve = curve_step >= 0 && p > 0 && n > 0;
  if (curve) r.curve.push_back({std::numeric_limits<double>::infinity(), 0, 0});
  // The area in trapezoids between consecutive thresholds: a tie's
  // diagonal step is half a square, the Mann-Whitney count of a tie as one
  // half. Precision enters once per threshold, weighted by its recall step.
  double area = 0, precision_sum = 0;
  int64_t last_tp = 0, last_fp = 0;
  sweep(scores, positive, [&](double threshold, int64_t tp, int64_t fp) {
    area += static_cast<double>(fp - last_fp) * static_cast<double>(tp + last_tp) / 2;
    precision_sum +=
        static_cast<double>(tp - last_tp) * static_cast<double>(tp) / static_cast<double>(tp + fp);
    last_tp = tp;
    last_fp = fp;
    if (!curve) return;
    const RocPoint point{threshold, static_cast<double>(fp) / static_cast<double>(n),
                         static_cast<double>(tp) / static_cast<double>(p)};
    const RocPoint& last = r.curve.back();
    if ((tp == p && fp == n) ||
        std::abs(point.false_positive_rate - last.false_positive_rate) >= curve_step ||
        std::abs(point.true_positive_rate - last.true_positive_rate) >= curve_step) {
      r.curve.push_back(point);
    }
  });
  r.auc = p > 0 && n > 0 ? area / (static_cast<double>(p) * static_cast<double>(n)) : kNaN;
  r.average_precision = p > 0 ? precision_sum / static_cast<double>(p) : kNaN;
  return r;
}

std::vector<RocPoint> roc_curve(const std::vector<float>& scores,
                                const std::vector<uint8_t>& positive, double min_step) {
  return rank(scores, positive, min_step).curve;
}

double roc_auc(const std::vector<float>& scores, const std::vector<uint8_t>& positive) {
  return rank(scores, positive, -1).auc;
}

double average_precision(const std::vector<float>& scores, const std::vector<uint8_t>& positive) {
  return rank(scores, positive, -1).average_precision;
}

ClassRanking class_ranking(const std::vector<float>& scores, const std::vector<int32_t>& labels,
                           int classes, double curve_step) {
  const size_t n = labels.size();
  if (scores.size() != n * static_cast<size_t>(classes)) {
    throw std::logic_error("class_ranking: scores and labels differ");
  }
  ClassRanking r;
  std::vector<float> column(n);
  std::vector<uint8_t> positive(n);
  double auc_sum = 0, ap_sum = 0;
  int auc_defined = 0, ap_defined = 0;
  for (int c = 0; c < classes; ++c) {
    for (size_t i = 0; i < n; ++i) {
      column[i] = scores[i * static_cast<size_t>(classes) + static_cast<size_t>(c)];
      positive[i] = labels[i] == c;
    }
    Ranking ranked = rank(column, positive, curve_step);
    r.auc.push_back(ranked.auc);
    r.average_precision.push_back(ranked.average_precision);
    if (curve_step >= 0) r.curves.push_back(std::move(ranked.curve));
    if (!std::isnan(r.auc.back())) auc_sum += r.auc.back(), ++auc_defined;
    if (!std::isnan(r.average_precision.back())) ap_sum += r.average_precision.back(), ++ap_defined;
  }
  r.auc_macro = auc_defined > 0 ? auc_sum / auc_defined : kNaN;
  r.map_macro = ap_defined > 0 ? ap_sum / ap_defined : kNaN;
  return r;
}

std::vector<float> normalized_rows(const float* rows, int64_t n, int64_t dim) {
  std::vector<float> out(static_cast<size_t>(n * dim));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    double sq = 0;
    for (int64_t j = 0; j < dim; ++j)
      sq += static_cast<double>(rows[i * dim + j]) * rows[i * dim + j];
    const auto inv = static_cast<float>(sq > 0 ? 1 / std::sqrt(sq) : 0);
    for (int64_t j = 0; j < dim; ++j)
      out[static_cast<size_t>(i * dim + j)] = rows[i * dim + j] * inv;
  }
  return out;
}

namespace {

// c (m x n) = a (m x dim) . b (n x dim)^T, row-major.
void similarities(const float* a, int64_t m, const float* b, int64_t n, int64_t dim, float* c) {
  if (dnnl_sgemm('N', 'T', m, n, dim, 1.f, a, dim, b, dim, 0.f, c, n) != dnnl_success) {
    throw std::logic_error("dnnl_sgemm failed");
  }
}

}  // namespace

std::vector<int64_t> nearest_neighbours(const std::vector<float>& queries, int64_t first,
                                        int64_t last, const std::vector<float>& gallery,
                                        int64_t dim) {
  // Blocks small enough for the cache-friendly GEMM and a bounded buffer.
  constexpr int64_t kQueryBlock = 256, kGalleryBlock = 8192;
  const auto g = static_cast<int64_t>(gallery.size()) / dim;
  std::vector<int64_t> best(static_cast<size_t>(last - first), -1);
  std::vector<float> best_sim(best.size(), -std::numeric_limits<float>::infinity());
  std::vector<float> block(static_cast<size_t>(kQueryBlock * kGalleryBlock));
  for (int64_t q0 = first; q0 < last; q0 += kQueryBlock) {
    const int64_t qn = std::min(kQueryBlock, last - q0);
    for (int64_t g0 = 0; g0 < g; g0 += kGalleryBlock) {
      const int64_t gn = std::min(kGalleryBlock, g - g0);
      similarities(queries.data() + q0 * dim, qn, gallery.data() + g0 * dim, gn, dim, block.data());
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < qn; ++i) {
        const float* row = block.data() + i * gn;
        const auto k = static_cast<size_t>(q0 - first + i);
        for (int64_t j = 0; j < gn; ++j) {
          if (row[j] > best_sim[k]) best_sim[k] = row[j], best[k] = g0 + j;
        }
      }
    }
  }
  return best;
}

PairScores pair_scores(const std::vector<float>& rows, const std::vector<int32_t>& labels,
                       int64_t n, int64_t dim) {
  std::vector<float> sim(static_cast<size_t>(n * n));
  similarities(rows.data(), n, rows.data(), n, dim, sim.data());
  PairScores p;
  p.similarity.reserve(static_cast<size_t>(n * (n - 1) / 2));
  p.same.reserve(p.similarity.capacity());
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = i + 1; j < n; ++j) {
      p.similarity.push_back(sim[static_cast<size_t>(i * n + j)]);
      p.same.push_back(labels[static_cast<size_t>(i)] == labels[static_cast<size_t>(j)]);
    }
  }
  return p;
}

ApSum retrieval_ap_sum(const std::vector<float>& rows, const std::vector<int32_t>& labels,
                       int64_t n, int64_t dim, int64_t first, int64_t last) {
  const int64_t m = last - first;
  std::vector<float> sim(static_cast<size_t>(m * n));
  similarities(rows.data() + first * dim, m, rows.data(), n, dim, sim.data());
  // Per query first, then summed in order: the same bits at any thread count.
  std::vector<double> ap(static_cast<size_t>(m));
#pragma omp parallel
  {
    std::vector<float> scores(static_cast<size_t>(n - 1));
    std::vector<uint8_t> relevant(scores.size());
#pragma omp for schedule(static)
    for (int64_t q = 0; q < m; ++q) {
      const int64_t query = first + q;
      size_t k = 0;
      for (int64_t j = 0; j < n; ++j) {
        if (j == query) continue;
        scores[k] = sim[static_cast<size_t>(q * n + j)];
        relevant[k++] = labels[static_cast<size_t>(j)] == labels[static_cast<size_t>(query)];
      }
      ap[static_cast<size_t>(q)] = average_precision(scores, relevant);
    }
  }
  ApSum total;
  for (double a : ap) {
    if (!std::isnan(a)) total.sum += a, ++total.queries;
  }
  return total;
}

}  // namespace dptrain
