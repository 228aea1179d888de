#include "core/log.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace dptrain {
namespace {

struct LogConfig {
  std::mutex mutex;
  int rank = 0;
  LogLevel level = LogLevel::kInfo;
  bool on = true;
};

LogConfig& config() {
  static LogConfig c;
  return c;
}

constexpr const char* kNames[] = {"error", "warn", "info", "debug"};

}  // namespace

std::optional<LogLevel> parse_log_level(const std::string& name) {
  for (int i = 0; i < 4; ++i)
    if (name == kNames[i]) return static_cast<LogLevel>(i);
  return std::nullopt;
}

const char* log_level_name(LogLevel level) { return kNames[static_cast<int>(level)]; }

void configure_log(int rank, LogLevel level, bool this_rank_logs) {
  LogConfig& c = config();
  std::lock_guard lock(c.mutex);
  c.rank = rank;
  c.level = level;
  c.on = this_rank_logs;
}

bool log_enabled(LogLevel level) {
  LogConfig& c = config();
  std::lock_guard lock(c.mutex);
  return c.on && level <= c.level;
}

void log_line(LogLevel level, const std::string& message) {
  LogConfig& c = config();
  std::lock_guard lock(c.mutex);
  if (!c.on || level > c.level) return;
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()) % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
  std::fprintf(stderr, "%s.%03dZ rank %d %s: %s\n", stamp, static_cast<int>(ms.count()), c.rank,
               log_level_name(level), message.c_str());
  std::fflush(stderr);
}

}  // namespace dptrain
