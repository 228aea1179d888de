// The training loop: joins the core engine (net, data, optimizer) with MPI
// (sampler shards, gradient averaging, metric reduction). Every rank runs
// it; rank 0 alone prints and writes the run folder.
//
// One step: next batch -> forward -> backward (the gradient reducer is told
// as gradients become final) -> reducer finishes the average -> clip ->
// optimizer step -> observers. Observers are the one place where metrics,
// progress and (later) control hook in.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/dptrain.pb.h"
#include "core/metrics.h"
#include "core/net.h"
#include "dist/communicator.h"

namespace dptrain {

struct StepReport {
  int64_t epoch = 0;
  int64_t step = 0;         // optimizer steps taken so far (1 after the first)
  int64_t steps_total = 0;  // planned for the whole run
  float lr = 0.f;
  float loss = 0.f;         // this rank's loss on its shard of this step
};

class Trainer {
 public:
  Trainer(const TrainSpec& spec, const Communicator& comm, std::string run_dir);
  ~Trainer();

  // Trains as configured; returns the final test accuracy.
  double run();
  // Evaluates the current weights on the whole test set (all ranks).
  ConfusionMatrix evaluate(double* mean_loss = nullptr);
  void load_weights(const std::string& path);
  Net& net();

  using Observer = std::function<void(const StepReport&)>;
  void add_observer(Observer observer);

 private:
  struct State;
  std::unique_ptr<State> s_;
};

// Threads per rank: runtime.threads if set, else OMP_NUM_THREADS, else the
// cores of the node shared out among its ranks (never oversubscribing).
int choose_threads(const TrainSpec& spec, const Communicator& comm);

}  // namespace dptrain
