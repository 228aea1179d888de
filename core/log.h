// The worker's event log on stderr: one line per event, with the time and
// the rank, "2026-12-01T10:00:00.123Z rank 1 warn: checkpoint not written:
// ...". Levels, most severe first: error, warn, info, debug; --log-level
// keeps those up to the one named (default info). Only rank 0 logs unless
// every rank is asked to (--log-all-ranks). Safe from any thread (the
// checkpoint writer's logs too); each line is written whole.
//
// Fatal errors are not log lines: they stay the one "dptrain: ..." line
// the launcher reads back as a run's reason for failing.
#pragma once

#include <optional>
#include <string>

namespace dptrain {

enum class LogLevel { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

// "error", "warn", "info", "debug"; nullopt for anything else.
std::optional<LogLevel> parse_log_level(const std::string& name);
const char* log_level_name(LogLevel level);

// Before the first line: this process's rank, the level kept, and whether
// this rank logs at all.
void configure_log(int rank, LogLevel level, bool this_rank_logs);
bool log_enabled(LogLevel level);
void log_line(LogLevel level, const std::string& message);

inline void log_warn(const std::string& m) { log_line(LogLevel::kWarn, m); }
inline void log_info(const std::string& m) { log_line(LogLevel::kInfo, m); }
inline void log_debug(const std::string& m) { log_line(LogLevel::kDebug, m); }

}  // namespace dptrain
