// What hooks into a training run: the metrics log, the progress display,
// the checkpointer, the control client, signals and test faults. Each is a
// RunHook in a file of its own; the trainer calls every registered hook at
// the start, at each step, for each metrics record, for each durable
// checkpoint and at the end. Adding a concern is one class and one line
// that registers it (dist/main.cc).
//
// Hooks run on the training thread, except on_checkpoint, which the
// checkpoint writer's thread calls. Hooks that speak to the user or the
// launcher are registered on rank 0 only.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/dptrain.pb.h"

namespace dptrain {

struct RunInfo {
  std::string name, run_dir, net_summary;
  int rank = 0, world_size = 1, threads = 1;
  int64_t samples = 0, global_batch = 0;
  int epochs = 0;
  int64_t steps_total = 0, steps_per_epoch = 0;
  int64_t start_step = 0;                // non-zero after a resume
  int64_t metrics_records = 0;           // records already in metrics.jsonl to keep
  double start_wall_time = 0;            // the run's wall time at start_step
  std::vector<std::string> class_names;  // empty: classes go by number
};

struct StepReport {
  int64_t epoch = 0;  // 1-based epoch this step belongs to
  int64_t step = 0;   // optimizer steps taken so far (1 after the first)
  int64_t step_in_epoch = 0;
  int64_t steps_total = 0;  // planned for the whole run
  float lr = 0.f;
  float loss = 0.f;      // this rank's loss on its shard of this step
  double wall_time = 0;  // the run's, carried on across resumes
};

struct RunEnd {
  int64_t step = 0;
  double wall_time = 0;
  bool stopped = false;    // by a request: a checkpoint was written, exit 75
  std::string checkpoint;  // the last durable checkpoint, if any
};

// Bits a hook raises to act at the end of the step now starting; the bits
// of all ranks are OR-ed, so every rank acts at the same step.
enum RunRequest : unsigned {
  kNoRequest = 0,
  kCheckpointRequest = 1,  // write a checkpoint after this step
  kStopRequest = 2,        // write a checkpoint and stop (exit 75)
};

class RunHook {
 public:
  virtual ~RunHook() = default;
  virtual void on_start(const RunInfo&) {}
  virtual unsigned requests() { return kNoRequest; }
  // Before the compute of the step that will be step `step` + 1.
  virtual void before_step(int64_t /*step*/) {}
  virtual void after_step(const StepReport&) {}
  // Between evaluation batches (so that long evaluations show life).
  virtual void on_eval_batch(int64_t /*step*/) {}
  // A train or eval record, as written to metrics.jsonl.
  virtual void on_record(const MetricsRecord&) {}
  virtual void on_checkpoint(const std::string& /*path*/, int64_t /*step*/) {}
  // At a rung (a pause for a decision, e.g. a sweep's early stopping),
  // after its evaluation and with its checkpoint durable: whether the run
  // goes on; nothing if this hook has no say. Called on rank 0, which
  // tells the others.
  virtual std::optional<bool> at_rung(const MetricsRecord& /*eval*/, int64_t /*step*/) {
    return std::nullopt;
  }
  virtual void on_end(const RunEnd&) {}
};

}  // namespace dptrain
