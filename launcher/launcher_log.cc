#include "launcher/launcher_log.h"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>

#include "core/error.h"

namespace dptrain::launcher {

LauncherLog::LauncherLog(const std::string& path) : file_(std::fopen(path.c_str(), "ae")) {
  if (!file_) throw UserError("cannot write " + path + ": " + std::strerror(errno));
}

LauncherLog::~LauncherLog() { std::fclose(file_); }

void LauncherLog::line(const std::string& text) {
  std::fprintf(file_, "%s %s\n", timestamp().c_str(), text.c_str());
  std::fflush(file_);
}

std::string LauncherLog::timestamp() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm local{};
  localtime_r(&t, &local);
  char buf[48];
  const size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &local);
  std::snprintf(buf + n, sizeof buf - n, ".%03d", static_cast<int>(ms));
  return buf;
}

}  // namespace dptrain::launcher
