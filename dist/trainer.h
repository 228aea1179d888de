// The training loop: joins the core engine (net, data, optimizer) with MPI
// (sampler shards, gradient averaging, metric reduction). Every rank runs
// it; rank 0 alone prints and writes the run folder.
//
// One step: next batch -> forward -> backward (the loss gradient scaled by
// 1/ranks; the gradient reducer is told as gradients become final) ->
// reducer finishes the sum, which is the average -> clip ->
// optimizer step -> hooks (dist/run_hook.h: metrics, progress, checkpoints,
// control, signals, faults). At the start of each step every rank's hook
// requests are OR-ed by a non-blocking allreduce that completes with the
// step, so all ranks checkpoint or stop at the same step.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/dptrain.pb.h"
#include "core/metrics.h"
#include "core/net.h"
#include "core/timeline.h"
#include "dist/communicator.h"
#include "dist/evaluation.h"
#include "dist/run_hook.h"

namespace dptrain {

class BatchLoader;
class Checkpointer;

class Trainer {
 public:
  Trainer(const TrainSpec& spec, const Communicator& comm, std::string run_dir);
  ~Trainer();

  // Continues from `checkpoint` (decoded on every rank): parameters,
  // buffers, optimizer state, position in the data and wall time. Throws
  // UserError when the config differs from the checkpoint's in a field
  // that changes the result (naming them), or the checkpoint holds another
  // net. Rank count and threads may differ.
  void resume(const Checkpoint& checkpoint, const std::string& source);
  // Fine-tuning: parameters by tensor name from a weights file or a
  // checkpoint, the layers in `reinit` left as initialised; a fresh
  // optimizer. Broadcast from rank 0's reading.
  void init_weights(const WeightsFile& weights, const std::string& source,
                    const std::vector<std::string>& reinit);
  void load_weights(const std::string& path);
  // The state a checkpoint holds, in plain layouts (rank 0's view).
  Checkpoint snapshot() const;

  // Hooks are called in the order added and must outlive run().
  void add_hook(RunHook* hook);

  struct Result {
    double test_accuracy = 0;
    bool stopped = false;  // a checkpoint was written on request: exit 75
  };
  // Trains to the end, or until a stop is agreed or step `stop_at_step`
  // is reached (then checkpoints and returns stopped). `checkpointer`
  // decides and writes checkpoints (required to stop). At the end of each
  // epoch in `rung_epochs` the run evaluates, checkpoints and asks its
  // hooks (RunHook::at_rung) whether to go on; told no, it stops.
  Result run(Checkpointer* checkpointer, int64_t stop_at_step = -1,
             const std::vector<int>& rung_epochs = {});

  // Evaluates the current weights on the whole test set (all ranks): the
  // figures of dist/evaluation.h for the net's kind of loss.
  Evaluation evaluate();
  // The net's outputs (scores, for embeddings the embedding) and labels of
  // every test (or training) sample in order, gathered on every rank.
  EvalShard outputs(bool train_set);
  // Reconstruction nets: the first `count` test images and the net's
  // outputs for them, NCHW, in pixels scaled to [0, 1] (the normalisation
  // undone where the target is the input). On the calling rank alone.
  struct Reconstructions {
    int64_t count = 0;
    int channels = 0, height = 0, width = 0;
    std::vector<float> inputs, outputs;
    std::vector<int32_t> labels;
  };
  // The first `count` test images (all of them if fewer) and their
  // reconstructions, in pixels.
  Reconstructions reconstruct(int64_t count);
  Net& net();
  // data.class_names, or the dataset's own (CIFAR10); empty if neither.
  const std::vector<std::string>& class_names() const;
  // Where this run runs (environment.textproto in the run folder).
  RunEnvironment environment() const;
  // Records spans for the timeline (core/timeline.h): steps first..last,
  // every Nth; call before run().
  void enable_timeline(int64_t first, int64_t last, int64_t every);
  const Timeline& timeline() const;

 private:
  // Forward passes over this rank's part of `samples`, collecting scores.
  // with_loss false: the outputs only (the loss is not computed).
  EvalShard forward_shard(BatchLoader& loader, int64_t samples, bool with_loss);
  Evaluation evaluate_on(BatchLoader& loader, int64_t samples, bool with_ranking);

  struct State;
  std::unique_ptr<State> s_;
};

// Threads per rank: runtime.threads if set, else OMP_NUM_THREADS, else the
// cores of the node shared out among its ranks (never oversubscribing).
int choose_threads(const TrainSpec& spec, const Communicator& comm);

}  // namespace dptrain
