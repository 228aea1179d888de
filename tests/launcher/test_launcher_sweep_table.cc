// The live table of a sweep (launcher/sweep_table.h): its columns, the
// running trials kept in view when the terminal is short, lines cut to the
// terminal's width, the redraw in place, and nothing but the event lines
// off a terminal.
#include <cstdio>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "launcher/sweep_table.h"

namespace dptrain::launcher {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string read_all(std::FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  return out;
}

SweepTableRow row(int trial, const std::string& state, int epoch, std::optional<double> objective) {
  return {trial, state, epoch, objective, {"0.05", std::to_string(32 << (trial % 3))}};
}

TEST(LauncherSweepTable, ColumnsAreTrialStateEpochObjectiveAndTheParams) {
  std::FILE* f = std::tmpfile();
  SweepTable table(f, true, "val_accuracy", {"solver.base_lr", "data.batch_size"}, 15, 40, 120);
  table.update({row(0, "done", 15, 0.91234), row(1, "running", 4, 0.88), row(2, "pending", 0, {})});
  EXPECT_THAT(table.lines(),
              ElementsAre("trial  state    epoch   val_accuracy  solver.base_lr  data.batch_size",
                          "0      done     15/15   0.9123        0.05            32",
                          "1      running  4/15    0.8800        0.05            64",
                          "2      pending  0/15                  0.05            128"));
  std::fclose(f);
}

TEST(LauncherSweepTable, AShortTerminalKeepsTheRunningTrialsInView) {
  std::FILE* f = std::tmpfile();
  SweepTable table(f, true, "val_accuracy", {"solver.base_lr", "data.batch_size"}, 9, 10, 200);
  std::vector<SweepTableRow> rows;
  for (int t = 0; t < 12; ++t)
    rows.push_back(row(t, t == 10 || t == 11 ? "running" : "stopped", 1, 0.5));
  table.update(rows);
  const auto lines = table.lines();
  // 10 rows of terminal: the header, 4 trials, the "more" line.
  ASSERT_EQ(lines.size(), 6u);
  EXPECT_THAT(lines[1], HasSubstr("0      stopped"));
  EXPECT_THAT(lines[2], HasSubstr("1      stopped"));
  EXPECT_THAT(lines[3], HasSubstr("10     running"));
  EXPECT_THAT(lines[4], HasSubstr("11     running"));
  EXPECT_EQ(lines[5], "... 8 more trials");
  std::fclose(f);
}

TEST(LauncherSweepTable, LinesAreCutToTheTerminalWidth) {
  std::FILE* f = std::tmpfile();
  SweepTable table(f, true, "val_accuracy", {"solver.base_lr", "data.batch_size"}, 9, 40, 30);
  table.update({row(0, "done", 9, 0.9)});
  for (const std::string& l : table.lines()) EXPECT_LT(l.size(), 30u) << l;
  std::fclose(f);
}

TEST(LauncherSweepTable, OnATerminalTheTableIsRedrawnBelowTheEventLines) {
  std::FILE* f = std::tmpfile();
  SweepTable table(f, true, "val_accuracy", {"solver.base_lr", "data.batch_size"}, 9, 40, 120);
  table.update({row(0, "running", 1, {})});
  table.refresh();
  table.print("trial 1 started: ...");
  const std::string out = read_all(f);
  // Drawn (header + 1 row), erased by moving up 2 lines and clearing, the
  // event line, then drawn again.
  const size_t first = out.find("0      running");
  const size_t erase = out.find("\033[2F\033[J");
  const size_t line = out.find("trial 1 started");
  const size_t again = out.rfind("0      running");
  ASSERT_NE(first, std::string::npos) << out;
  EXPECT_LT(first, erase);
  EXPECT_LT(erase, line);
  EXPECT_LT(line, again);
  table.clear();
  table.print("leaderboard");
  EXPECT_EQ(read_all(f).substr(out.size()), "\033[2F\033[Jleaderboard\n");
  std::fclose(f);
}

TEST(LauncherSweepTable, OffATerminalOnlyTheEventLines) {
  std::FILE* f = std::tmpfile();
  SweepTable table(f, false, "val_accuracy", {"solver.base_lr"}, 9, 40, 120);
  table.update({row(0, "running", 1, {})});
  table.refresh();
  table.print("trial 0 started");
  table.clear();
  EXPECT_EQ(read_all(f), "trial 0 started\n");
  std::fclose(f);
}

}  // namespace
}  // namespace dptrain::launcher
