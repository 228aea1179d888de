#include "launcher/report.h"

#include <google/protobuf/util/json_util.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/checkpoint.h"
#include "core/config.h"
#include "core/error.h"
#include "core/file_io.h"
#include "core/metrics_record.h"
#include "launcher/run_folder.h"
#include "launcher/sweep_spec.h"
#include "launcher/sweep_state.h"
#include "launcher/trial_scheduler.h"

namespace dptrain::launcher {
namespace {

namespace fs = std::filesystem;

// The page, from launcher/report_page.html (embedded by CMake).
constexpr const char* kPage =
#include "report_page.inc"
    ;

// Unset scalar fields take their default values explicitly, so the page's
// JSON carries every setting of the spec (the printer leaves out unset
// proto2 fields) and the script never repeats the schema's defaults.
void make_defaults_explicit(google::protobuf::Message* m) {
  const auto* d = m->GetDescriptor();
  const auto* r = m->GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const auto* f = d->field(i);
    if (f->is_repeated()) {
      if (f->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE)
        for (int j = 0; j < r->FieldSize(*m, f); ++j)
          make_defaults_explicit(r->MutableRepeatedMessage(m, f, j));
      continue;
    }
    using FD = google::protobuf::FieldDescriptor;
    switch (f->cpp_type()) {
      case FD::CPPTYPE_MESSAGE:
        if (r->HasField(*m, f)) make_defaults_explicit(r->MutableMessage(m, f));
        break;
      case FD::CPPTYPE_INT32:
        r->SetInt32(m, f, r->GetInt32(*m, f));
        break;
      case FD::CPPTYPE_INT64:
        r->SetInt64(m, f, r->GetInt64(*m, f));
        break;
      case FD::CPPTYPE_UINT32:
        r->SetUInt32(m, f, r->GetUInt32(*m, f));
        break;
      case FD::CPPTYPE_UINT64:
        r->SetUInt64(m, f, r->GetUInt64(*m, f));
        break;
      case FD::CPPTYPE_DOUBLE:
        r->SetDouble(m, f, r->GetDouble(*m, f));
        break;
      case FD::CPPTYPE_FLOAT:
        r->SetFloat(m, f, r->GetFloat(*m, f));
        break;
      case FD::CPPTYPE_BOOL:
        r->SetBool(m, f, r->GetBool(*m, f));
        break;
      case FD::CPPTYPE_ENUM:
        r->SetEnum(m, f, r->GetEnum(*m, f));
        break;
      case FD::CPPTYPE_STRING:
        r->SetString(m, f, r->GetString(*m, f));
        break;
    }
  }
}

void collect_run(const std::string& dir, ReportRun* run) {
  const std::string config = dir + "/config.textproto";
  if (fs::exists(config)) run->set_config(read_file(config));
  for (MetricsRecord& r : read_metrics(dir + "/metrics.jsonl")) *run->add_record() = std::move(r);
  LauncherSummary summary;
  if (load_summary(dir, &summary)) *run->mutable_launcher() = summary;
  for (const std::string& path : list_checkpoints(dir))
    run->add_checkpoint(fs::path(path).filename().string());
  const std::string environment = dir + "/environment.textproto";
  if (fs::exists(environment)) load_text(environment, run->mutable_environment());
}

void collect_sweep(const std::string& dir, ReportSweep* out) {
  const SweepState state = SweepState::open(SweepState::path_in(dir));
  if (!state.initialized()) throw UserError(state.path() + ": a sweep that has not started yet");
  SweepSpec spec = state.spec();
  const TrainSpec base = load_train_spec(dir + "/base.textproto");
  const int epochs = max_epochs(spec, base);
  const auto scheduler = TrialScheduler::create(spec.scheduler(), epochs, spec.objective());
  spec.clear_base();  // the trials' configs are in their folders
  spec.mutable_objective();
  spec.mutable_scheduler();
  spec.mutable_tpe();
  make_defaults_explicit(&spec);
  *out->mutable_spec() = spec;
  out->set_max_epochs(epochs);
  for (int e : scheduler->rung_epochs()) out->add_rung_epochs(e);
  out->set_concurrency(state.concurrency());
  out->set_threads_per_trial(state.threads_per_trial());

  const std::string summary_file = dir + "/sweep_summary.json";
  if (fs::exists(summary_file)) {
    google::protobuf::util::JsonParseOptions options;
    options.ignore_unknown_fields = true;
    SweepSummary summary;
    if (google::protobuf::util::JsonStringToMessage(read_file(summary_file), &summary, options)
            .ok())
      *out->mutable_summary() = summary;
  }

  const RungTable rungs = state.rung_table();
  std::vector<TrialRow> rows = state.trials();
  rank_trials(&rows, spec.objective());
  for (const TrialRow& row : rows) {
    ReportTrial* t = out->add_trial();
    t->set_trial(row.trial);
    t->set_state(trial_state_name(row.state));
    t->set_reason(row.reason);
    for (const std::string& p : row.params) t->add_param(p);
    if (row.objective) t->set_objective(*row.objective);
    if (row.test_accuracy) t->set_test_accuracy(*row.test_accuracy);
    t->set_epoch(row.epoch);
    for (const auto& [key, value] : rungs.value) {
      if (key.first != row.trial) continue;
      ReportRung* r = t->add_rung();
      r->set_epoch(key.second);
      r->set_value(value);
      const auto decision = state.decision(row.trial, key.second);
      r->set_decision(!decision                                      ? "none"
                      : *decision == TrialScheduler::Decision::kStop ? "stop"
                                                                     : "continue");
    }
    fs::path run_dir = row.run_dir;
    if (run_dir.is_relative()) run_dir = fs::path(dir) / run_dir;
    for (MetricsRecord& r : read_metrics((run_dir / "metrics.jsonl").string()))
      if (r.kind() == "eval") *t->add_eval() = std::move(r);
  }
}

// JSON inside a <script> element: "</script" or "<!--" in a string (a
// config's text, say) would end or bend the element, so every '<' is
// written as the JSON escape \u003c, which parses back to the same text.
std::string script_safe_json(const std::string& json) {
  std::string out;
  out.reserve(json.size());
  for (char c : json) {
    if (c == '<')
      out += "\\u003c";
    else
      out += c;
  }
  return out;
}

void replace_once(std::string* page, const std::string& marker, const std::string& with) {
  const size_t at = page->find(marker);
  if (at == std::string::npos) throw std::logic_error("report page without " + marker);
  page->replace(at, marker.size(), with);
}

}  // namespace

Report collect_report(const std::string& dir) {
  if (!fs::is_directory(dir)) throw UserError(dir + ": no such folder");
  Report report;
  report.set_folder(fs::absolute(dir).lexically_normal().string());
  report.set_generated(utc_now());
  if (fs::exists(SweepState::path_in(dir)))
    collect_sweep(dir, report.mutable_sweep());
  else if (fs::exists(dir + "/metrics.jsonl"))
    collect_run(dir, report.mutable_run());
  else
    throw UserError(dir + ": neither a run folder (metrics.jsonl) nor a sweep folder (sweep.db)");
  return report;
}

std::string render_report(const Report& report, const std::string& chartjs) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string json;
  const auto status = google::protobuf::util::MessageToJsonString(report, &json, options);
  if (!status.ok())
    throw UserError("report of " + report.folder() + ": " + std::string(status.message()));
  std::string page = kPage;
  // The data first: the library's text could hold the data's marker.
  replace_once(&page, "/*@REPORT_DATA@*/", script_safe_json(json));
  // Chart.js as Debian ships it has neither "</" nor "<!--"; a version
  // that had would break the page, so it is refused instead.
  if (chartjs.find("</") != std::string::npos || chartjs.find("<!--") != std::string::npos)
    throw UserError("Chart.js holds \"</\" or \"<!--\" and cannot be inlined in a <script>");
  replace_once(&page, "/*@CHART_JS@*/", chartjs);
  return page;
}

std::string write_report(const std::string& dir, const std::string& chartjs_path) {
  const Report report = collect_report(dir);
  std::ifstream in(chartjs_path, std::ios::binary);
  if (!in)
    throw UserError(chartjs_path + ": cannot read Chart.js (install Debian's libjs-chart.js)");
  std::stringstream chartjs;
  chartjs << in.rdbuf();
  const std::string path = (fs::path(dir) / "report.html").string();
  write_file_atomically(path, render_report(report, chartjs.str()));
  return path;
}

}  // namespace dptrain::launcher
