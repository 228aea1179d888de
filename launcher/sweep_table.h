// What a person watches while a sweep goes on. On a terminal, a table of
// the trials (number, state, epoch reached, objective so far, the
// hyperparameters) kept at the bottom and redrawn in place at most every
// 500 ms, with the sweep's event lines ("trial 3 started: ...") scrolling
// above it; taller than the terminal, it shows the trials that run first,
// then the lowest-numbered others, and how many it left out. Elsewhere (a
// log file, CI) only the event lines, as before.
#pragma once

#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

namespace dptrain::launcher {

struct SweepTableRow {
  int trial = 0;
  std::string state;                // pending, running, paused, stopped, done, failed
  int epoch = 0;                    // the epoch reached
  std::optional<double> objective;  // best (or last) so far
  std::vector<std::string> values;  // one per param, in order
};

class SweepTable {
 public:
  // `paths`: the params' paths (the columns); `rows` x `columns`: the
  // terminal's size (0: ask the terminal of `out`). Lines are cut to fit.
  SweepTable(std::FILE* out, bool live, std::string metric, std::vector<std::string> paths,
             int max_epochs, int rows = 0, int columns = 0);

  // A line of its own, above the table.
  void print(const std::string& line);
  // The trials now, by number; drawn at the next refresh.
  void update(std::vector<SweepTableRow> rows);
  // Redraws the table if it changed and 500 ms have passed.
  void refresh();
  // Removes the table for good (before the leaderboard); update() brings
  // it back.
  void clear();

  // The table's lines as drawn (without control sequences), for tests.
  std::vector<std::string> lines() const;

 private:
  using Clock = std::chrono::steady_clock;
  void draw();
  void erase();

  std::FILE* out_;
  bool live_;
  std::string metric_;
  std::vector<std::string> paths_;
  int max_epochs_;
  int height_, width_;
  std::vector<SweepTableRow> rows_;
  int drawn_ = 0;  // lines of the table on the screen now
  bool dirty_ = false;
  Clock::time_point last_draw_{};
};

}  // namespace dptrain::launcher
