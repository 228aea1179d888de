// Sums gradients over all ranks before every optimizer step, on the net's
// flat gradient store. The trainer scales the loss gradient by 1/ranks, so
// the sum is the mean: a pass over the store to average it cost 0.7 ms of
// a 16 MB reduction's 3.2 (dptrain-bench allreduce), a fifth of the
// bandwidth.
//
// Overlapped mode: the store is cut into buckets of about bucket_mb, each a
// run of whole parameters, counted from the end (the last layer's
// gradients are final first). Backward reports how far gradients are final;
// each bucket whose gradients all are starts a non-blocking allreduce in
// place, and every later report drives MPI's progress, so communication
// runs while backward goes on. finish() waits for the rest. Buckets start
// in the same order on every rank. Fused mode, the baseline, does one
// allreduce of everything in finish().
//
// With gradient accumulation, accumulate() banks the gradients of a
// micro-batch; on the last micro-batch each bucket adds the bank in before
// it is sent.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/timeline.h"

#include "core/param_store.h"
#include "dist/communicator.h"

namespace dptrain {

class GradientReducer {
 public:
  // param_offsets: where each parameter starts in the store, ascending.
  GradientReducer(const Communicator& comm, float* grads, size_t size,
                  const std::vector<size_t>& param_offsets, double bucket_mb, bool overlap,
                  int accumulate_steps);

  // Backward reports that grads[offset, size) are final.
  void grads_final(size_t offset);
  // Waits for all reductions; afterwards grads hold the sum over ranks.
  void finish();
  // Banks this micro-batch's gradients (all but the last of a step).
  void accumulate();

  size_t buckets() const { return buckets_.size(); }
  // Seconds finish() spent waiting on communication, since the last call.
  double take_wait_seconds();
  // Each bucket's allreduce, from its start to the moment its completion
  // is seen, on the timeline's communication track; finish()'s wait on
  // the compute track.
  void set_timeline(Timeline* timeline) { timeline_ = timeline; }

 private:
  struct Bucket {
    size_t begin, end;
    MPI_Request request = MPI_REQUEST_NULL;
    int64_t started_us = 0;
  };
  void completed(size_t index);
  void start(Bucket& b);
  void progress();

  const Communicator& comm_;
  float* grads_;
  size_t size_;
  bool overlap_;
  std::vector<Bucket> buckets_;  // last parameters first
  size_t next_ = 0;              // next bucket to start
  AlignedFloats bank_;
  bool banked_ = false;
  double wait_s_ = 0;
  Timeline* timeline_ = nullptr;
};

}  // namespace dptrain
