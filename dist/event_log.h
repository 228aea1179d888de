// The run's events in the log (core/log.h), on every rank that logs: the
// start (ranks, threads, samples, batch, steps, folder, resume point) and
// the end at info, each evaluation at info, each train record at debug.
// Checkpoints written or not, damaged ones skipped and stop requests are
// logged where they happen.
#pragma once

#include "dist/run_hook.h"

namespace dptrain {

class EventLog : public RunHook {
 public:
  void on_start(const RunInfo& info) override;
  void on_record(const MetricsRecord& record) override;
  void on_end(const RunEnd& end) override;
};

}  // namespace dptrain
