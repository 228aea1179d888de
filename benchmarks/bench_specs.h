// The configs a Google Benchmark binary runs: each as written, or with
// --bf16 in FP32 and then in BF16, named by the config's name (its path if
// it has none) with "/bf16" for the second.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "core/config.h"

namespace dptrain {

inline std::vector<std::pair<std::string, TrainSpec>> bench_specs(const std::string& path,
                                                                  bool both_precisions) {
  const TrainSpec config = load_train_spec(path);
  std::vector<TrainSpec> specs = {config};
  if (both_precisions) {
    specs[0].set_precision(FP32);
    specs.push_back(config);
    specs[1].set_precision(BF16);
  }
  std::vector<std::pair<std::string, TrainSpec>> named;
  for (const TrainSpec& spec : specs) {
    named.emplace_back(
        (spec.name().empty() ? path : spec.name()) + (spec.precision() == BF16 ? "/bf16" : ""),
        spec);
  }
  return named;
}

}  // namespace dptrain
