// Training runs for dptrain-bench's throughput, scaling and tta: `dptrain
// train` under mpirun, one or several started at the same moment, and the
// records their metrics.jsonl holds.
#pragma once

#include <string>
#include <vector>

#include "core/dptrain.pb.h"

namespace dptrain::bench {

struct Launch {
  std::string config;
  int ranks = 1;
  int threads = 1;                // OMP_NUM_THREADS of each rank
  bool tcp = false;               // --mca btl tcp,self: loopback TCP instead of shared memory
  std::vector<std::string> sets;  // --set PATH=VALUE overrides
};

struct Outcome {
  std::vector<MetricsRecord> records;
  double wall_seconds = 0;  // of mpirun, start to exit
};

// Runs the launches at the same moment, each in a folder of its own under
// `dir`, and waits for all; UserError naming the log of one that failed.
// Ranks beyond the cores get mpirun's --oversubscribe and yielding.
std::vector<Outcome> run_together(const std::vector<Launch>& launches, const std::string& dir);
Outcome run_one(const Launch& launch, const std::string& dir);

// The last record of `kind` ("train" or "eval"); UserError if none.
const MetricsRecord& last_record(const Outcome& outcome, const std::string& kind);

int cores();
// `s` in single quotes, for a shell command line.
std::string shell_quoted(const std::string& s);
// This program's own path (/proc/self/exe), or `fallback`.
std::string self_path(const std::string& fallback);

}  // namespace dptrain::bench
