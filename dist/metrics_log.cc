#include "dist/metrics_log.h"

#include <cerrno>
#include <cstring>
#include <fstream>

#include "core/error.h"
#include "core/file_io.h"
#include "core/metrics_record.h"

namespace dptrain {

MetricsLog::~MetricsLog() {
  if (file_) std::fclose(file_);
}

void MetricsLog::on_start(const RunInfo& info) {
  if (info.start_step > 0) {
    std::string kept;
    std::ifstream in(path_);
    std::string line;
    for (int64_t n = 0; n < info.metrics_records && std::getline(in, line); ++n)
      kept += line + "\n";
    write_file_atomically(path_, kept);
  }
  file_ = std::fopen(path_.c_str(), info.start_step > 0 ? "a" : "w");
  if (!file_) throw UserError("cannot write " + path_ + ": " + std::strerror(errno));
}

void MetricsLog::on_record(const MetricsRecord& record) {
  const std::string line = to_json_line(record) + "\n";
  std::fputs(line.c_str(), file_);
  std::fflush(file_);
}

}  // namespace dptrain
