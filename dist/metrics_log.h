// metrics.jsonl in the run folder (rank 0): one MetricsRecord per line,
// flushed as written, so a crashed run keeps every record before the
// crash. On a resume the file is first cut back to the records the
// checkpoint had seen, so the resumed run's records read as one run.
#pragma once

#include <cstdio>
#include <string>

#include "dist/run_hook.h"

namespace dptrain {

class MetricsLog : public RunHook {
 public:
  explicit MetricsLog(std::string path) : path_(std::move(path)) {}
  ~MetricsLog() override;
  void on_start(const RunInfo& info) override;
  void on_record(const MetricsRecord& record) override;

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace dptrain
