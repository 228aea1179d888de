// When a run writes checkpoints, and the writing (rank 0, through a
// CheckpointWriter on a background thread, so training goes on while the
// file is persisted). The triggers: every N steps, every N epochs, every T
// seconds of wall time (rank 0's clock, raised as a request so that all
// ranks agree on the step), a request from another hook, and
// --stop-at-step. Every rank decides the same, rank 0 alone writes.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/checkpoint.h"
#include "dist/run_hook.h"

namespace dptrain {

class Checkpointer : public RunHook {
 public:
  // `durable` hooks hear of each checkpoint once it is on disk;
  // `before_rename` is a fault point for tests.
  Checkpointer(const CheckpointSpec& spec, std::string run_dir, bool leader,
               std::vector<RunHook*> durable, std::function<void(int64_t step)> before_rename);

  unsigned requests() override;
  // Whether the step just finished is checkpointed, given the requests all
  // ranks agreed on for it.
  bool due(int64_t step, bool epoch_end, int64_t epochs_done, unsigned agreed) const;
  // Rank 0: hands the checkpoint to the writer. Other ranks: nothing.
  void save(std::function<Checkpoint()> snapshot);
  // Waits for the writer; the path of the last durable checkpoint (empty
  // if none was due), or throws UserError if the last one could not be
  // written.
  std::string flush();

 private:
  CheckpointSpec spec_;
  bool leader_;
  std::chrono::steady_clock::time_point last_;
  std::string last_error_;
  std::unique_ptr<CheckpointWriter> writer_;
};

}  // namespace dptrain
