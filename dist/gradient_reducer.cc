#include "dist/gradient_reducer.h"

namespace dptrain {

GradientReducer::GradientReducer(const Communicator& comm, float* grads, size_t size)
    : comm_(comm), grads_(grads), size_(size) {}

void GradientReducer::grads_final(size_t) {}

void GradientReducer::finish() {
  if (comm_.size() == 1) return;
  comm_.allreduce_sum(grads_, size_);
  const float scale = 1.f / static_cast<float>(comm_.size());
#pragma omp parallel for simd schedule(static)
  for (size_t i = 0; i < size_; ++i) grads_[i] *= scale;
}

}  // namespace dptrain
