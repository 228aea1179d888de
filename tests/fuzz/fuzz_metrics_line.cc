// A line of metrics.jsonl as the launcher (sweeps, reports) reads it back.
#include <cstdint>
#include <string_view>

#include "core/metrics_record.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dptrain::MetricsRecord record;
  if (dptrain::parse_json_line(std::string_view(reinterpret_cast<const char*>(data), size),
                               &record))
    (void)dptrain::to_json_line(record);
  return 0;
}
