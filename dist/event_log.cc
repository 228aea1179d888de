#include "dist/event_log.h"

#include <cstdio>

#include "core/log.h"

namespace dptrain {

void EventLog::on_start(const RunInfo& info) {
  char line[512];
  std::snprintf(line, sizeof line,
                "training %s: %d rank(s) x %d thread(s), %lld samples, global batch %lld, "
                "%lld steps; run folder %s",
                info.name.c_str(), info.world_size, info.threads,
                static_cast<long long>(info.samples), static_cast<long long>(info.global_batch),
                static_cast<long long>(info.steps_total), info.run_dir.c_str());
  log_info(line);
  if (info.start_step > 0) log_info("resumed at step " + std::to_string(info.start_step));
}

void EventLog::on_record(const MetricsRecord& r) {
  char line[256];
  if (r.kind() == "eval") {
    if (r.has_test_mse()) {
      std::snprintf(line, sizeof line,
                    "evaluation at epoch %d (step %d): test_mse %.6f, test_loss %.4f", r.epoch(),
                    r.step(), r.test_mse(), r.test_loss());
    } else {
      std::snprintf(line, sizeof line,
                    "evaluation at epoch %d (step %d): test_accuracy %.4f, test_loss %.4f",
                    r.epoch(), r.step(), r.test_accuracy(), r.test_loss());
    }
    std::string text = line;
    if (r.has_val_accuracy()) {
      std::snprintf(line, sizeof line, ", val_accuracy %.4f, val_loss %.4f", r.val_accuracy(),
                    r.val_loss());
      text += line;
    }
    log_info(text);
  } else if (log_enabled(LogLevel::kDebug)) {
    std::snprintf(line, sizeof line, "step %d: loss %.4f, accuracy %.4f, lr %.4g, %.0f images/s",
                  r.step(), r.train_loss(), r.train_accuracy(), r.lr(), r.images_per_sec());
    log_debug(line);
  }
}

void EventLog::on_end(const RunEnd& end) {
  char line[256];
  std::snprintf(line, sizeof line, "%s at step %lld after %.1f s of training",
                end.stopped ? "stopped" : "finished", static_cast<long long>(end.step),
                end.wall_time);
  log_info(line);
}

}  // namespace dptrain
