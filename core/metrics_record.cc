#include "core/metrics_record.h"

#include <fstream>

#include <google/protobuf/util/json_util.h>

namespace dptrain {

std::string to_json_line(const MetricsRecord& record) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(record, &out, options);
  return out;
}

bool parse_json_line(std::string_view line, MetricsRecord* record) {
  if (line.empty()) return false;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  return google::protobuf::util::JsonStringToMessage(
             google::protobuf::StringPiece(line.data(), line.size()), record, options)
      .ok();
}

std::vector<MetricsRecord> read_metrics(const std::string& path) {
  std::vector<MetricsRecord> records;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    MetricsRecord r;
    if (parse_json_line(line, &r)) records.push_back(std::move(r));
  }
  return records;
}

}  // namespace dptrain
