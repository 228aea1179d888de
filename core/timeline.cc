#include "core/timeline.h"

#include <algorithm>

namespace dptrain {

void Timeline::enable(int64_t first, int64_t last, int64_t every, size_t capacity) {
  enabled_ = true;
  first_ = first;
  last_ = last;
  every_ = std::max<int64_t>(1, every);
  spans_.clear();
  spans_.reserve(capacity);
  dropped_ = 0;
  recording_ = false;  // until the first step starts
}

void Timeline::set_step(int64_t step) {
  step_ = step;
  recording_ = enabled_ && step >= first_ && step <= last_ && (step - first_) % every_ == 0;
}

}  // namespace dptrain
