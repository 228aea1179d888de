#include "core/metrics.h"

#include <cstdio>

namespace dptrain {

ConfusionMatrix::ConfusionMatrix(int classes)
    : classes_(classes), counts_(static_cast<size_t>(classes) * static_cast<size_t>(classes)) {}

void ConfusionMatrix::add(const int32_t* truth, const int32_t* predicted, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    ++counts_[static_cast<size_t>(truth[i] * classes_ + predicted[i])];
  }
}

int64_t ConfusionMatrix::at(int truth, int predicted) const {
  return counts_[static_cast<size_t>(truth * classes_ + predicted)];
}

int64_t ConfusionMatrix::total() const {
  int64_t n = 0;
  for (int64_t c : counts_) n += c;
  return n;
}

int64_t ConfusionMatrix::correct() const {
  int64_t n = 0;
  for (int c = 0; c < classes_; ++c) n += at(c, c);
  return n;
}

double ConfusionMatrix::accuracy() const {
  const int64_t n = total();
  return n > 0 ? static_cast<double>(correct()) / static_cast<double>(n) : 0.0;
}

double ConfusionMatrix::precision(int c) const {
  int64_t predicted = 0;
  for (int t = 0; t < classes_; ++t) predicted += at(t, c);
  return predicted > 0 ? static_cast<double>(at(c, c)) / static_cast<double>(predicted) : 0.0;
}

double ConfusionMatrix::recall(int c) const {
  int64_t present = 0;
  for (int p = 0; p < classes_; ++p) present += at(c, p);
  return present > 0 ? static_cast<double>(at(c, c)) / static_cast<double>(present) : 0.0;
}

std::string ConfusionMatrix::report(const std::vector<std::string>& class_names) const {
  auto name = [&](int c) {
    return c < static_cast<int>(class_names.size()) ? class_names[static_cast<size_t>(c)]
                                                    : std::to_string(c);
  };
  std::string out;
  char buf[64];
  out += "confusion matrix (rows: true class, columns: predicted)\n            ";
  for (int p = 0; p < classes_; ++p) {
    std::snprintf(buf, sizeof buf, "%6d", p);
    out += buf;
  }
  out += "\n";
  for (int t = 0; t < classes_; ++t) {
    std::snprintf(buf, sizeof buf, "%2d %-9.9s", t, name(t).c_str());
    out += buf;
    for (int p = 0; p < classes_; ++p) {
      std::snprintf(buf, sizeof buf, "%6lld", static_cast<long long>(at(t, p)));
      out += buf;
    }
    out += "\n";
  }
  out += "\nclass          precision  recall\n";
  for (int c = 0; c < classes_; ++c) {
    std::snprintf(buf, sizeof buf, "%2d %-12.12s %8.4f %7.4f\n", c, name(c).c_str(), precision(c),
                  recall(c));
    out += buf;
  }
  std::snprintf(buf, sizeof buf, "\naccuracy %.4f (%lld of %lld)\n", accuracy(),
                static_cast<long long>(correct()), static_cast<long long>(total()));
  out += buf;
  return out;
}

}  // namespace dptrain
