#include "launcher/status_line.h"

#include <algorithm>

namespace dptrain::launcher {
namespace {

constexpr auto kRefreshInterval = std::chrono::milliseconds(200);

std::string format(const char* fmt, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, value);
  return buf;
}

std::string duration_text(double seconds) {
  const auto s = static_cast<long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  }
  return buf;
}

}  // namespace

StatusLine::StatusLine(std::FILE* out, bool live) : out_(out), live_(live) {}

void StatusLine::hello(const Hello& hello) {
  steps_total_ = hello.steps_total();
  step_ = hello.step();
  rate_start_step_ = -1;  // a new attempt: its own rate
  steps_per_sec_ = 0;
  dirty_ = true;
}

void StatusLine::heartbeat(const Heartbeat& heartbeat) {
  const auto now = Clock::now();
  if (rate_start_step_ < 0) {
    rate_start_step_ = heartbeat.step();
    rate_start_time_ = now;
  } else if (heartbeat.step() > rate_start_step_) {
    const double elapsed = std::chrono::duration<double>(now - rate_start_time_).count();
    if (elapsed > 0)
      steps_per_sec_ = static_cast<double>(heartbeat.step() - rate_start_step_) / elapsed;
  }
  step_ = heartbeat.step();
  if (heartbeat.epoch() > 0) epoch_ = heartbeat.epoch();  // evaluation's heartbeats carry none
  dirty_ = true;
}

void StatusLine::metrics(const MetricsRecord& record) {
  if (record.kind() == "train") {
    loss_ = record.train_loss();
    accuracy_ = record.train_accuracy();
    images_per_sec_ = record.images_per_sec();
  }
  if (record.epoch() > 0) epoch_ = record.epoch();
  step_ = std::max<int64_t>(step_, record.step());
  dirty_ = true;
  if (live_) return;
  // Plain lines: the status line itself once per train record, and each
  // evaluation.
  std::string line = text();
  if (record.kind() == "eval") {
    line = "epoch " + std::to_string(record.epoch()) + "  step " + std::to_string(record.step()) +
           format("  test_loss %.4f", record.test_loss()) +
           format("  test_accuracy %.2f%%", 100 * record.test_accuracy());
  }
  std::fprintf(out_, "%s\n", line.c_str());
  std::fflush(out_);
}

void StatusLine::set_restarts(int restarts) {
  restarts_ = restarts;
  dirty_ = true;
}

void StatusLine::print(const std::string& line) {
  if (live_ && shown_) std::fputs("\r\033[K", out_);
  std::fprintf(out_, "%s\n", line.c_str());
  shown_ = false;
  if (live_ && steps_total_ > 0) draw();
  std::fflush(out_);
}

void StatusLine::refresh() {
  // Nothing worth a line before the worker has said how many steps there are.
  if (!live_ || !dirty_ || steps_total_ <= 0 || Clock::now() - last_draw_ < kRefreshInterval)
    return;
  draw();
}

void StatusLine::clear() {
  if (live_ && shown_) {
    std::fputs("\r\033[K", out_);
    std::fflush(out_);
  }
  shown_ = false;
}

std::string StatusLine::text() const {
  std::string t = "epoch " + std::to_string(epoch_) + "  step " + std::to_string(step_);
  if (steps_total_ > 0) t += "/" + std::to_string(steps_total_);
  if (loss_ >= 0) t += format("  loss %.4f", loss_);
  if (accuracy_ >= 0) t += format("  acc %.1f%%", 100 * accuracy_);
  if (images_per_sec_ >= 0) t += format("  %.0f img/s", images_per_sec_);
  if (steps_total_ > 0 && steps_per_sec_ > 0) {
    t += "  ETA " + duration_text(static_cast<double>(steps_total_ - step_) / steps_per_sec_);
  } else {
    t += "  ETA --";
  }
  t += "  restarts " + std::to_string(restarts_);
  return t;
}

void StatusLine::draw() {
  std::fprintf(out_, "\r\033[K%s", text().c_str());
  std::fflush(out_);
  shown_ = true;
  dirty_ = false;
  last_draw_ = Clock::now();
}

}  // namespace dptrain::launcher
