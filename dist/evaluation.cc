#include "dist/evaluation.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace dptrain {
namespace {

// Curves thinned to steps of at least this in either rate: the pairs of
// 2,000 samples make two million thresholds.
constexpr double kCurveStep = 1e-3;

std::pair<int64_t, int64_t> part(int64_t n, int rank, int ranks) {
  return {n * rank / ranks, n * (rank + 1) / ranks};
}

std::string class_name(const std::vector<std::string>& names, int c) {
  return c < static_cast<int>(names.size()) ? names[static_cast<size_t>(c)] : std::to_string(c);
}

std::string fixed(double v) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.4f", v);
  return buffer;
}

// The CSV field: quoted when it holds a comma or a quote.
std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

}  // namespace

void EvalShard::add(const LossLayer& loss, const int32_t* batch_labels, int64_t count) {
  width = loss.score_width();
  const float* s = loss.scores();
  scores.insert(scores.end(), s, s + count * width);
  labels.insert(labels.end(), batch_labels, batch_labels + count);
  predicted.insert(predicted.end(), loss.predictions().begin(), loss.predictions().begin() + count);
  loss_sum += static_cast<double>(loss.loss()) * static_cast<double>(count);
}

Evaluation finish_evaluation(const Communicator& comm, const EvalSetting& setting,
                             const EvalShard& shard, const EvalShard* gallery, bool with_ranking) {
  const LossLayer::Kind kind = setting.kind;
  const std::vector<std::string>& class_names = setting.class_names;
  Evaluation e;
  e.kind = kind;
  if (kind == LossLayer::Kind::kReconstruction) {
    // Each sample's squared error per channel, in pixel units, summed.
    double sums[4] = {shard.loss_sum, 0, static_cast<double>(shard.labels.size()),
                      static_cast<double>(shard.skipped)};
    const size_t width = static_cast<size_t>(shard.width);
    for (size_t i = 0; i < shard.scores.size(); ++i) {
      const size_t c = i % width;
      sums[1] += shard.scores[i] * (c < setting.pixel_scale.size() ? setting.pixel_scale[c] : 1.0);
    }
    comm.allreduce_sum(sums, 4);
    const double count = sums[2];
    e.loss = count > 0 ? sums[0] / count : 0;
    e.mse = count > 0 ? sums[1] / (count * static_cast<double>(width)) : 0;
    e.skipped = static_cast<int64_t>(sums[3]);
    return e;
  }
  e.confusion = ConfusionMatrix(setting.classes);
  const std::vector<int32_t> labels = comm.allgather_concat(shard.labels);
  const auto n = static_cast<int64_t>(labels.size());
  double totals[2] = {shard.loss_sum, static_cast<double>(shard.skipped)};
  comm.allreduce_sum(totals, 2);
  e.loss = n > 0 ? totals[0] / static_cast<double>(n) : 0;
  e.skipped = static_cast<int64_t>(totals[1]);
  const int width = shard.width;

  if (kind == LossLayer::Kind::kEmbedding) {
    const std::vector<float> all = comm.allgather_concat(shard.scores);
    const std::vector<float> rows = normalized_rows(all.data(), n, width);
    const std::vector<float> g_all = comm.allgather_concat(gallery->scores);
    const std::vector<int32_t> g_labels = comm.allgather_concat(gallery->labels);
    const std::vector<float> g_rows =
        normalized_rows(g_all.data(), static_cast<int64_t>(g_labels.size()), width);
    const auto [first, last] = part(n, comm.rank(), comm.size());
    const std::vector<int64_t> nearest = nearest_neighbours(rows, first, last, g_rows, width);
    std::vector<int32_t> predicted(nearest.size());
    for (size_t i = 0; i < nearest.size(); ++i)
      predicted[i] = g_labels[static_cast<size_t>(nearest[i])];
    e.confusion.add(labels.data() + first, predicted.data(), last - first);
    comm.allreduce_sum(e.confusion.counts().data(), e.confusion.counts().size());
    e.accuracy = e.knn_accuracy = e.confusion.accuracy();
    if (!with_ranking) return e;
    const int64_t m = std::min(n, kVerificationSamples);
    const PairScores pairs = pair_scores(rows, labels, m, width);
    Ranking verification = rank(pairs.similarity, pairs.same, kCurveStep);
    e.verification_auc = verification.auc;
    e.roc.emplace_back("verification", std::move(verification.curve));
    const auto [q0, q1] = part(m, comm.rank(), comm.size());
    const ApSum ap = retrieval_ap_sum(rows, labels, m, width, q0, q1);
    double sums[2] = {ap.sum, static_cast<double>(ap.queries)};
    comm.allreduce_sum(sums, 2);
    e.retrieval_map = sums[1] > 0 ? sums[0] / sums[1] : std::nan("");
    return e;
  }

  e.confusion.add(shard.labels.data(), shard.predicted.data(),
                  static_cast<int64_t>(shard.predicted.size()));
  comm.allreduce_sum(e.confusion.counts().data(), e.confusion.counts().size());
  e.accuracy = e.confusion.accuracy();
  if (!with_ranking) return e;
  const std::vector<float> all = comm.allgather_concat(shard.scores);
  if (kind == LossLayer::Kind::kBinary) {
    std::vector<uint8_t> positive(labels.size());
    for (size_t i = 0; i < labels.size(); ++i) positive[i] = labels[i] == 1;
    Ranking binary = rank(all, positive, kCurveStep);
    e.auc = binary.auc;
    e.average_precision = binary.average_precision;
    e.roc.emplace_back(class_name(class_names, 1), std::move(binary.curve));
    return e;
  }
  e.class_ranking = class_ranking(all, labels, width, kCurveStep);
  for (int c = 0; c < width; ++c) {
    e.roc.emplace_back(class_name(class_names, c),
                       std::move(e.class_ranking.curves[static_cast<size_t>(c)]));
  }
  e.class_ranking.curves.clear();  // moved into e.roc
  return e;
}

void Evaluation::fill_test(MetricsRecord* r) const {
  r->set_test_loss(loss);
  if (skipped > 0) r->set_skipped_images(static_cast<int32_t>(skipped));
  if (kind == LossLayer::Kind::kReconstruction) {
    r->set_test_mse(mse);
    return;
  }
  r->set_test_accuracy(accuracy);
  for (int64_t n : confusion.counts()) r->add_test_confusion(static_cast<int32_t>(n));
  // A figure that is undefined here (NaN: a class never present) is left out.
  auto set = [](double v, auto setter) {
    if (!std::isnan(v)) setter(v);
  };
  switch (kind) {
    case LossLayer::Kind::kClassifier:
      set(class_ranking.auc_macro, [&](double v) { r->set_auc_macro(v); });
      set(class_ranking.map_macro, [&](double v) { r->set_map_macro(v); });
      break;
    case LossLayer::Kind::kBinary:
      set(auc, [&](double v) { r->set_auc(v); });
      set(average_precision, [&](double v) { r->set_average_precision(v); });
      break;
    case LossLayer::Kind::kEmbedding:
      r->set_knn_accuracy(knn_accuracy);
      set(verification_auc, [&](double v) { r->set_verification_auc(v); });
      set(retrieval_map, [&](double v) { r->set_retrieval_map(v); });
      break;
    case LossLayer::Kind::kReconstruction:
      break;
  }
}

std::string Evaluation::report(const std::vector<std::string>& class_names) const {
  std::string out = "test_loss " + fixed(loss) + "\n";
  switch (kind) {
    case LossLayer::Kind::kReconstruction:
      char mse_line[64];
      std::snprintf(mse_line, sizeof mse_line, "test_mse %.6f\n", mse);
      return out + mse_line;
    case LossLayer::Kind::kEmbedding:
      out += "knn_accuracy " + fixed(knn_accuracy) + "\nverification_auc " +
             fixed(verification_auc) + "\nretrieval_map " + fixed(retrieval_map) + "\n";
      return out;
    case LossLayer::Kind::kBinary:
      out += confusion.report(class_names);
      out += "auc " + fixed(auc) + "\naverage_precision " + fixed(average_precision) + "\n";
      return out;
    case LossLayer::Kind::kClassifier: {
      out += confusion.report(class_names);
      out += "\nclass            roc_auc  avg_precision\n";
      for (size_t c = 0; c < class_ranking.auc.size(); ++c) {
        char line[128];
        std::snprintf(line, sizeof line, "%-16s %7s  %13s\n",
                      class_name(class_names, static_cast<int>(c)).substr(0, 16).c_str(),
                      fixed(class_ranking.auc[c]).c_str(),
                      fixed(class_ranking.average_precision[c]).c_str());
        out += line;
      }
      out += "auc_macro " + fixed(class_ranking.auc_macro) + "\nmap_macro " +
             fixed(class_ranking.map_macro) + "\n";
      return out;
    }
  }
  return out;
}

std::string Evaluation::roc_csv() const {
  std::string out = "curve,threshold,false_positive_rate,true_positive_rate\n";
  char line[96];
  for (const auto& [name, points] : roc) {
    const std::string field = csv_field(name);
    for (const RocPoint& p : points) {
      std::snprintf(line, sizeof line, ",%.9g,%.6f,%.6f\n", p.threshold, p.false_positive_rate,
                    p.true_positive_rate);
      out += field + line;
    }
  }
  return out;
}

}  // namespace dptrain
