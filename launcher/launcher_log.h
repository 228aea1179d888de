// launcher.log: one line per thing the launcher did or saw (starts,
// exits, restarts and their causes, control-channel drops), each with a
// local timestamp to the millisecond. Appended to across invocations and
// flushed line by line, so it is complete up to a crash of the launcher.
#pragma once

#include <cstdio>
#include <string>

namespace dptrain::launcher {

class LauncherLog {
 public:
  // Throws UserError if the file cannot be opened for appending.
  explicit LauncherLog(const std::string& path);
  ~LauncherLog();
  LauncherLog(const LauncherLog&) = delete;
  LauncherLog& operator=(const LauncherLog&) = delete;

  void line(const std::string& text);

  // "2024-05-01 12:34:56.789": the stamp each line starts with.
  static std::string timestamp();

 private:
  std::FILE* file_;
};

}  // namespace dptrain::launcher
