// dptrain-bench's subcommands that time real training runs (started under
// mpirun through training_runs.h, read back from their metrics.jsonl):
// throughput, scaling (with the scaling model) and tta.
#pragma once

#include <string>
#include <vector>

namespace dptrain::bench {

struct ThroughputOptions {
  std::vector<std::string> configs;
  std::vector<int> ranks{1, 2};
  std::vector<int> threads{1, 2};
  int steps = 100;
  int batch = 0;                  // per rank; 0: the config's batch_size
  bool bf16 = false;              // precision: BF16 (where the CPU has it)
  std::vector<std::string> sets;  // --set PATH=VALUE, for every run
  std::string out;
};
int throughput(const ThroughputOptions& o);

struct ScalingOptions {
  std::string config;
  int batch = 64;  // per rank (weak scaling); the strong runs share ranks x it
  int steps = 300;
  int rounds = 5;
  std::vector<int> ranks{2, 4};
  bool predict = false;
  std::string out;
};
int scaling(const ScalingOptions& o);

struct TtaOptions {
  std::string config;
  double target = 0.91;
  int ranks = 2;
  int threads = 1;
  int rounds = 1;
  std::vector<std::string> sets;
  std::string out;
};
int tta(const TtaOptions& o);

}  // namespace dptrain::bench
