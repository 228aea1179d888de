// What one rank records for the timeline (`dptrain train --timeline FILE`):
// spans of time with a category (data, forward, backward, allreduce,
// optimizer, eval, checkpoint), a name (the layer, say) and the step, on
// one of two tracks: compute, and communication (a bucket's allreduce runs
// beside backward, so it gets a track of its own for the spans on each
// track to nest).
//
// Cheap when on: two clock reads per span and a store into memory reserved
// up front, nothing allocated per step; names are pointers to strings that
// outlive the run (layer names, literals). Bounded: step spans are kept
// for the steps of the window only (first..last, every Nth), and never
// more than `capacity` spans in all (the rest are counted as dropped).
// Off (the default), every call returns at once.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace dptrain {

class Timeline {
 public:
  enum Track : uint8_t { kCompute = 0, kCommunication = 1 };
  struct Span {
    const char* category;
    const char* name;
    int64_t start_us, end_us;  // on this rank's steady clock
    int64_t step;
    int32_t index;  // a bucket's number, or -1
    Track track;
  };

  // Records the spans of steps first..last (inclusive, 0-based optimizer
  // steps) whose distance from `first` is a multiple of `every`, and every
  // whole-run span (evaluations, checkpoints).
  void enable(int64_t first, int64_t last, int64_t every, size_t capacity = 1 << 20);
  bool enabled() const { return enabled_; }
  // The step about to run; step spans are kept only if it is in the window.
  void set_step(int64_t step);
  // The step's work is over: what runs until the next set_step (an
  // evaluation's forward passes) is not a step's.
  void end_step() { recording_ = false; }
  bool recording() const { return recording_; }

  static int64_t now_us() {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  // A span of the current step (ignored outside the window).
  void step_span(const char* category, const char* name, int64_t start_us, int64_t end_us,
                 Track track = kCompute, int32_t index = -1) {
    if (recording_) add({category, name, start_us, end_us, step_, index, track});
  }
  // A span kept whatever the step (evaluation, checkpoint).
  void run_span(const char* category, const char* name, int64_t start_us, int64_t end_us) {
    if (enabled_) add({category, name, start_us, end_us, step_, -1, kCompute});
  }

  const std::vector<Span>& spans() const { return spans_; }
  size_t dropped() const { return dropped_; }

 private:
  void add(const Span& s) {
    if (spans_.size() < spans_.capacity())
      spans_.push_back(s);
    else
      ++dropped_;
  }

  bool enabled_ = false, recording_ = false;
  int64_t first_ = 0, last_ = -1, every_ = 1, step_ = 0;
  std::vector<Span> spans_;
  size_t dropped_ = 0;
};

// Times the enclosing scope as a span of the current step.
class StepSpan {
 public:
  StepSpan(Timeline* t, const char* category, const char* name)
      : t_(t && t->recording() ? t : nullptr),
        category_(category),
        name_(name),
        start_(t_ ? Timeline::now_us() : 0) {}
  ~StepSpan() {
    if (t_) t_->step_span(category_, name_, start_, Timeline::now_us());
  }
  StepSpan(const StepSpan&) = delete;
  StepSpan& operator=(const StepSpan&) = delete;

 private:
  Timeline* t_;
  const char* category_;
  const char* name_;
  int64_t start_;
};

}  // namespace dptrain
