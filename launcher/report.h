// `dptrain-launch report DIR`: one self-contained HTML page about a run
// folder or a sweep folder, DIR/report.html, that opens with no network.
// The page is launcher/report_page.html with two things put in when it is
// written: Chart.js from Debian's libjs-chart.js, and the folder's data as
// one Report message (core/dptrain.proto) printed as JSON, which the
// page's script draws. So the C++ side only gathers; what is shown is
// decided in one file.
//
// Which kind of folder: DIR/sweep.db makes it a sweep (learning curve of
// every trial, the objective against each hyperparameter, the rungs and
// their decisions, the leaderboard), DIR/metrics.jsonl a run (loss,
// accuracy, learning rate, throughput and allreduce wait, restarts when
// the launcher ran it, the config). Anything else is a UserError naming
// the folder. A report may be written while the run or sweep goes on: it
// shows what the files hold at that moment.
#pragma once

#include <string>

#include "core/dptrain.pb.h"

namespace dptrain::launcher {

// Where Chart.js is read from (Debian's libjs-chart.js).
inline constexpr const char* kChartJsPath = "/usr/share/javascript/chart.js/chart.min.js";

// What the page shows of DIR. UserError for a folder that is neither kind
// (or a damaged sweep.db).
Report collect_report(const std::string& dir);

// The page for `report`, with `chartjs` (the library's source) inlined.
std::string render_report(const Report& report, const std::string& chartjs);

// Collects, renders with Chart.js read from `chartjs_path` (UserError if it
// cannot be read, naming the package), writes DIR/report.html atomically
// and returns its path.
std::string write_report(const std::string& dir, const std::string& chartjs_path = kChartJsPath);

}  // namespace dptrain::launcher
