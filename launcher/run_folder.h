// The launcher's files in a run folder, beside the worker's own:
// launch.textproto (the LaunchSpec: how `run` was invoked, so that
// `run --resume DIR` needs nothing else), launcher_summary.json (the
// LauncherSummary, by Protobuf's JSON printer with the schema's field
// names), launcher.log (LauncherLog) and worker.log (the job's output).
// Both protos are written atomically, so a kill at any instant leaves the
// previous version or the new one. Problems a user can cause throw
// UserError with one line.
#pragma once

#include <string>

#include "core/dptrain.pb.h"

namespace dptrain::launcher {

std::string launch_spec_path(const std::string& dir);  // DIR/launch.textproto
std::string summary_path(const std::string& dir);      // DIR/launcher_summary.json
std::string launcher_log_path(const std::string& dir);
std::string worker_log_path(const std::string& dir);

void save_launch_spec(const std::string& dir, const LaunchSpec& spec);
// UserError when it is missing ("no launcher run in DIR") or damaged
// (naming the line and column).
LaunchSpec load_launch_spec(const std::string& dir);

void save_summary(const std::string& dir, const LauncherSummary& summary);
// False when there is none or it cannot be parsed; *summary is then cleared.
bool load_summary(const std::string& dir, LauncherSummary* summary);

}  // namespace dptrain::launcher
