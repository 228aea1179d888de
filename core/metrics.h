// Classification metrics: a confusion matrix accumulated over batches, and
// what follows from it (accuracy, per-class precision and recall). Counts
// are plain integers so that ranks can add theirs up exactly.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dptrain {

class ConfusionMatrix {
 public:
  explicit ConfusionMatrix(int classes = 0);

  // Adds `count` samples: truth[i] against predicted[i].
  void add(const int32_t* truth, const int32_t* predicted, int64_t count);
  int classes() const { return classes_; }
  // Row = true class, column = predicted class.
  int64_t at(int truth, int predicted) const;
  int64_t total() const;
  int64_t correct() const;
  double accuracy() const;
  // 0 where a class was never predicted (precision) or never present (recall).
  double precision(int c) const;
  double recall(int c) const;

  // The flat counts, for reducing across ranks.
  std::vector<int64_t>& counts() { return counts_; }
  const std::vector<int64_t>& counts() const { return counts_; }

  // The matrix and per-class metrics as a table for people.
  std::string report(const std::vector<std::string>& class_names = {}) const;

 private:
  int classes_;
  std::vector<int64_t> counts_;
};

}  // namespace dptrain
