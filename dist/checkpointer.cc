#include "dist/checkpointer.h"

#include <cstdio>

#include "core/error.h"
#include "core/log.h"

namespace dptrain {

Checkpointer::Checkpointer(const CheckpointSpec& spec, std::string run_dir, bool leader,
                           std::vector<RunHook*> durable,
                           std::function<void(int64_t step)> before_rename)
    : spec_(spec), leader_(leader), last_(std::chrono::steady_clock::now()) {
  if (!leader_) return;
  auto done = [this, durable](const std::string& path, int64_t step, const std::string& error) {
    if (!error.empty()) {
      // The run goes on: the previous checkpoints are untouched.
      last_error_ = error;
      log_warn("checkpoint not written: " + error + " (the previous ones are kept)");
      return;
    }
    last_error_.clear();
    log_info("checkpoint written: " + path + " (step " + std::to_string(step) + ")");
    for (RunHook* hook : durable) hook->on_checkpoint(path, step);
  };
  writer_ = std::make_unique<CheckpointWriter>(std::move(run_dir), spec_.keep(), done,
                                               std::move(before_rename));
}

unsigned Checkpointer::requests() {
  if (!leader_ || spec_.every_seconds() <= 0) return kNoRequest;
  const double since =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - last_).count();
  return since >= spec_.every_seconds() ? kCheckpointRequest : kNoRequest;
}

bool Checkpointer::due(int64_t step, bool epoch_end, int64_t epochs_done, unsigned agreed) const {
  if (agreed & (kCheckpointRequest | kStopRequest)) return true;
  if (spec_.every_steps() > 0 && step % spec_.every_steps() == 0) return true;
  return epoch_end && spec_.every_epochs() > 0 && epochs_done % spec_.every_epochs() == 0;
}

void Checkpointer::save(std::function<Checkpoint()> snapshot) {
  last_ = std::chrono::steady_clock::now();
  if (writer_) writer_->write(snapshot());
}

std::string Checkpointer::flush() {
  if (!writer_) return "";
  const std::string path = writer_->flush();
  if (!last_error_.empty()) throw UserError("the checkpoint could not be written: " + last_error_);
  return path;
}

}  // namespace dptrain
