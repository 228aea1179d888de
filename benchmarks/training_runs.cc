#include "benchmarks/training_runs.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "core/error.h"
#include "core/metrics_record.h"

namespace dptrain::bench {
namespace {

std::string dptrain_binary() {
  if (const char* forced = std::getenv("DPTRAIN_BENCH_WORKER")) return forced;
  const std::filesystem::path self = self_path("");
  if (!self.empty()) {
    for (const auto& c : {self.parent_path() / "dptrain", self.parent_path() / "../dist/dptrain"}) {
      if (access(c.c_str(), X_OK) == 0) return c.lexically_normal().string();
    }
  }
#ifdef DPTRAIN_WORKER_BIN
  return DPTRAIN_WORKER_BIN;
#else
  return "dptrain";
#endif
}

}  // namespace

std::string shell_quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string self_path(const std::string& fallback) {
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? fallback : self.string();
}

int cores() { return std::max(1, static_cast<int>(std::thread::hardware_concurrency())); }

std::vector<Outcome> run_together(const std::vector<Launch>& launches, const std::string& dir) {
  std::filesystem::create_directories(dir);
  int ranks = 0;
  for (const Launch& l : launches) ranks += l.ranks;
  const std::string worker = dptrain_binary();
  std::string script;
  std::vector<std::string> folders, logs;
  for (size_t i = 0; i < launches.size(); ++i) {
    const Launch& l = launches[i];
    const std::string folder = dir + "/run" + std::to_string(i);
    std::filesystem::remove_all(folder);
    folders.push_back(folder);
    logs.push_back(folder + ".log");
    std::string cmd = "mpirun -np " + std::to_string(l.ranks) + " --oversubscribe --bind-to none";
    if (ranks > cores()) cmd += " --mca mpi_yield_when_idle 1";
    if (l.tcp) cmd += " --mca btl tcp,self";
    cmd += " -x OMP_NUM_THREADS=" + std::to_string(l.threads) + " " + shell_quoted(worker) +
           " train " + shell_quoted(l.config) + " --run-dir " + shell_quoted(folder) +
           " --log-level warn";
    for (const std::string& s : l.sets) cmd += " --set " + shell_quoted(s);
    // Each run's exit status lands in a file: the shell waits for all.
    script += "( " + cmd + " >" + shell_quoted(logs.back()) + " 2>&1; echo $? >" +
              shell_quoted(folder + ".status") + " ) & ";
  }
  script += "wait";
  const auto start = std::chrono::steady_clock::now();
  const int status = std::system(script.c_str());
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (status != 0) throw UserError("could not run the training runs (" + script + ")");
  std::vector<Outcome> outcomes;
  for (size_t i = 0; i < launches.size(); ++i) {
    std::string code;
    if (FILE* f = std::fopen((folders[i] + ".status").c_str(), "r")) {
      char buf[16] = {};
      if (std::fgets(buf, sizeof buf, f)) code = buf;
      std::fclose(f);
    }
    if (code != "0\n") {
      throw UserError("a training run of " + launches[i].config + " failed (exit " +
                      (code.empty() ? std::string("unknown") : code.substr(0, code.size() - 1)) +
                      "); its output is in " + logs[i]);
    }
    outcomes.push_back({read_metrics(folders[i] + "/metrics.jsonl"), wall});
  }
  return outcomes;
}

Outcome run_one(const Launch& launch, const std::string& dir) {
  return run_together({launch}, dir).front();
}

const MetricsRecord& last_record(const Outcome& outcome, const std::string& kind) {
  for (auto r = outcome.records.rbegin(); r != outcome.records.rend(); ++r) {
    if (r->kind() == kind) return *r;
  }
  throw UserError("a training run wrote no " + kind + " record");
}

}  // namespace dptrain::bench
