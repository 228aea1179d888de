// metrics.jsonl: one MetricsRecord per line, written by Protobuf's JSON
// printer with the schema's field names and read back by its parser.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/dptrain.pb.h"

namespace dptrain {

std::string to_json_line(const MetricsRecord& record);  // no newline
// False for a line that is not a record (a torn last line, say).
bool parse_json_line(std::string_view line, MetricsRecord* record);
// Every record of the file in order; unparseable lines are skipped.
std::vector<MetricsRecord> read_metrics(const std::string& path);

}  // namespace dptrain
