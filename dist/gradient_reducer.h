// Averages gradients over all ranks before every optimizer step. Works on
// the net's flat gradient store.
#pragma once

#include <cstddef>

#include "dist/communicator.h"

namespace dptrain {

class GradientReducer {
 public:
  GradientReducer(const Communicator& comm, float* grads, size_t size);

  // Backward reports that grads[offset, size) are final.
  void grads_final(size_t offset);
  // Waits for all reductions; afterwards grads hold the average.
  void finish();

 private:
  const Communicator& comm_;
  float* grads_;
  size_t size_;
};

}  // namespace dptrain
