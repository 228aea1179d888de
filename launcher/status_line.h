// What the user watches while a run goes on. On a terminal, one status
// line rewritten in place ("\r\033[K" + epoch, step/total, loss,
// accuracy, images/s, ETA, restarts), at most every 200 ms; elsewhere
// (a log file, CI) one plain line per metrics record, never one per
// heartbeat. Lines of their own (a start, an exit, a restart) clear the
// status line first and it is redrawn after them.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

#include "core/dptrain.pb.h"

namespace dptrain::launcher {

class StatusLine {
 public:
  StatusLine(std::FILE* out, bool live);

  void hello(const Hello& hello);
  void heartbeat(const Heartbeat& heartbeat);
  void metrics(const MetricsRecord& record);
  void set_restarts(int restarts);
  // A line of its own.
  void print(const std::string& line);
  // Redraws the live line if something changed and 200 ms have passed.
  void refresh();
  // Removes the live line (before the final words).
  void clear();

  // The live line's text (without the control sequence), for tests.
  std::string text() const;

 private:
  using Clock = std::chrono::steady_clock;
  void draw();

  std::FILE* out_;
  bool live_;
  int64_t steps_total_ = 0, step_ = 0;
  int epoch_ = 0;
  double loss_ = -1, accuracy_ = -1, images_per_sec_ = -1;
  int restarts_ = 0;
  // Where this attempt's step rate is measured from (for the ETA).
  Clock::time_point rate_start_time_;
  int64_t rate_start_step_ = -1;
  double steps_per_sec_ = 0;
  bool dirty_ = false, shown_ = false;
  Clock::time_point last_draw_;
};

}  // namespace dptrain::launcher
