#include "launcher/run_folder.h"

#include <filesystem>

#include <google/protobuf/util/json_util.h>

#include "core/config.h"
#include "core/error.h"
#include "core/file_io.h"

namespace dptrain::launcher {
namespace {

std::string in(const std::string& dir, const char* name) {
  return (std::filesystem::path(dir) / name).string();
}

}  // namespace

std::string launch_spec_path(const std::string& dir) { return in(dir, "launch.textproto"); }
std::string summary_path(const std::string& dir) { return in(dir, "launcher_summary.json"); }
std::string launcher_log_path(const std::string& dir) { return in(dir, "launcher.log"); }
std::string worker_log_path(const std::string& dir) { return in(dir, "worker.log"); }

void save_launch_spec(const std::string& dir, const LaunchSpec& spec) {
  write_file_atomically(launch_spec_path(dir), to_text(spec));
}

LaunchSpec load_launch_spec(const std::string& dir) {
  const std::string path = launch_spec_path(dir);
  if (!std::filesystem::is_directory(dir)) throw UserError("no run folder " + dir);
  if (!std::filesystem::exists(path)) {
    throw UserError("no launcher run in " + dir + " (" + path + " is missing)");
  }
  LaunchSpec spec;
  parse_text(read_file(path), path, &spec);
  if (spec.config().empty()) throw UserError(path + ": damaged (names no config)");
  return spec;
}

void save_summary(const std::string& dir, const LauncherSummary& summary) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.add_whitespace = true;
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(summary, &json, options);
  write_file_atomically(summary_path(dir), json);
}

bool load_summary(const std::string& dir, LauncherSummary* summary) {
  summary->Clear();
  const std::string path = summary_path(dir);
  if (!std::filesystem::exists(path)) return false;
  std::string json;
  try {
    json = read_file(path);
  } catch (const UserError&) {
    return false;
  }
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  if (!google::protobuf::util::JsonStringToMessage(json, summary, options).ok()) {
    summary->Clear();
    return false;
  }
  return true;
}

}  // namespace dptrain::launcher
