#include "dist/progress_display.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace dptrain {
namespace {

bool show_progress_bar() {
  const char* choice = std::getenv("DPTRAIN_PROGRESS");
  if (choice && std::string(choice) == "bar") return true;
  if (choice && std::string(choice) == "lines") return false;
  return isatty(STDOUT_FILENO) && !std::getenv("OMPI_COMM_WORLD_SIZE");
}

}  // namespace

std::string format_duration(double seconds) {
  const int s = static_cast<int>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%dh%02dm", s / 3600, s / 60 % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%dm%02ds", s / 60, s % 60);
  }
  return buf;
}

ProgressDisplay::ProgressDisplay() : bar_(show_progress_bar()) {}

double ProgressDisplay::eta(double wall_time, int64_t step) const {
  const int64_t done = step - info_.start_step;
  if (done <= 0) return 0;
  return (wall_time - info_.start_wall_time) / static_cast<double>(done) *
         static_cast<double>(info_.steps_total - step);
}

void ProgressDisplay::on_start(const RunInfo& info) {
  info_ = info;
  std::printf(
      "training %s on %lld samples, %d rank(s) x %d thread(s), global batch %lld, "
      "%lld steps\n%s\n",
      info.name.empty() ? "net" : info.name.c_str(), static_cast<long long>(info.samples),
      info.world_size, info.threads, static_cast<long long>(info.global_batch),
      static_cast<long long>(info.steps_total), info.net_summary.c_str());
  if (info.start_step > 0) {
    std::printf("resuming at step %lld (wall time %s)\n", static_cast<long long>(info.start_step),
                format_duration(info.start_wall_time).c_str());
  }
  std::fflush(stdout);
}

void ProgressDisplay::after_step(const StepReport& r) {
  if (!bar_ || r.wall_time - last_draw_ < 0.2) return;
  last_draw_ = r.wall_time;
  const int width = 30;
  const int64_t per_epoch = info_.steps_per_epoch;
  const int filled = static_cast<int>(width * r.step_in_epoch / per_epoch);
  const double rate = static_cast<double>((r.step - info_.start_step) * info_.global_batch) /
                      std::max(1e-9, r.wall_time - info_.start_wall_time);
  std::printf("\r\033[Kepoch %lld/%d [%s%s] %lld/%lld  loss %.4f  %.0f img/s  eta %s",
              static_cast<long long>(r.epoch), info_.epochs,
              std::string(static_cast<size_t>(filled), '=').c_str(),
              std::string(static_cast<size_t>(width - filled), ' ').c_str(),
              static_cast<long long>(r.step_in_epoch), static_cast<long long>(per_epoch),
              static_cast<double>(r.loss), rate, format_duration(eta(r.wall_time, r.step)).c_str());
  std::fflush(stdout);
}

void ProgressDisplay::on_record(const MetricsRecord& r) {
  if (r.kind() == "eval") {
    char val[64] = "";
    if (r.has_val_accuracy()) {
      std::snprintf(val, sizeof val, "  val_loss %.4f  val_accuracy %.4f", r.val_loss(),
                    r.val_accuracy());
    }
    std::string ranking;
    char field[64];
    // The ranking figures of the net's kind of loss, those the record has.
    const auto* refl = r.GetReflection();
    for (const char* name : {"auc_macro", "map_macro", "auc", "average_precision",
                             "verification_auc", "retrieval_map"}) {
      const auto* f = r.GetDescriptor()->FindFieldByName(name);
      if (!refl->HasField(r, f)) continue;
      std::snprintf(field, sizeof field, "  %s %.4f", name, refl->GetDouble(r, f));
      ranking += field;
    }
    char main_figure[48];
    if (r.has_test_mse()) {
      std::snprintf(main_figure, sizeof main_figure, "test_mse %.6f", r.test_mse());
    } else {
      std::snprintf(main_figure, sizeof main_figure, "%s %.4f",
                    r.has_knn_accuracy() ? "knn_accuracy" : "test_accuracy", r.test_accuracy());
    }
    last_figure_ = main_figure;
    std::printf("%sepoch %d  step %d  test_loss %.4f  %s%s%s\n", bar_ ? "\r\033[K" : "", r.epoch(),
                r.step(), r.test_loss(), main_figure, ranking.c_str(), val);
  } else if (!bar_) {
    // The second figure: accuracy, the active triplets, or none.
    char second[32] = "";
    if (r.has_active_triplet_fraction()) {
      std::snprintf(second, sizeof second, "  active %.4f", r.active_triplet_fraction());
    } else if (r.has_train_accuracy()) {
      std::snprintf(second, sizeof second, "  acc %.4f", r.train_accuracy());
    }
    std::printf("epoch %d  step %d/%lld  loss %.4f%s  lr %.4g  %.0f img/s  eta %s\n", r.epoch(),
                r.step(), static_cast<long long>(info_.steps_total), r.train_loss(), second,
                static_cast<double>(r.lr()), r.images_per_sec(),
                format_duration(eta(r.wall_time(), r.step())).c_str());
  }
  std::fflush(stdout);
}

void ProgressDisplay::on_end(const RunEnd& end) {
  if (end.stopped) {
    std::printf("%sstopped at step %lld with checkpoint %s; resume with --resume\n",
                bar_ ? "\r\033[K" : "", static_cast<long long>(end.step), end.checkpoint.c_str());
  } else {
    std::printf("done: %lld steps in %s, %srun folder %s\n", static_cast<long long>(end.step),
                format_duration(end.wall_time).c_str(),
                last_figure_.empty() ? "" : (last_figure_ + ", ").c_str(), info_.run_dir.c_str());
  }
  std::fflush(stdout);
}

}  // namespace dptrain
