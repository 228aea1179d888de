#include "dist/gradient_reducer.h"

#include <chrono>
#include <string>

namespace dptrain {

GradientReducer::GradientReducer(const Communicator& comm, float* grads, size_t size,
                                 const std::vector<size_t>& param_offsets, double bucket_mb,
                                 bool overlap, int accumulate_steps)
    : comm_(comm), grads_(grads), size_(size), overlap_(overlap) {
  if (accumulate_steps > 1) bank_ = AlignedFloats(size);
  if (!overlap) {
    buckets_.push_back({0, size});
    return;
  }
  const auto limit = static_cast<size_t>(bucket_mb * 1024 * 1024 / sizeof(float));
  size_t end = size;
  for (size_t i = param_offsets.size(); i-- > 0;) {
    const size_t begin = param_offsets[i];
    if (end - begin >= std::max<size_t>(limit, 1) || i == 0) {
      buckets_.push_back({i == 0 ? 0 : begin, end});
      end = begin;
    }
  }
  if (buckets_.empty()) buckets_.push_back({0, size});
}

void GradientReducer::accumulate() {
  float* bank = bank_.data();
  const bool first = !banked_;
#pragma omp parallel for simd schedule(static)
  for (size_t i = 0; i < size_; ++i) bank[i] = first ? grads_[i] : bank[i] + grads_[i];
  banked_ = true;
}

void GradientReducer::start(Bucket& b) {
  if (banked_) {
    float* bank = bank_.data();
#pragma omp parallel for simd schedule(static)
    for (size_t i = b.begin; i < b.end; ++i) grads_[i] += bank[i];
  }
  if (comm_.size() == 1) return;
  if (timeline_) b.started_us = Timeline::now_us();
  check_mpi(MPI_Iallreduce(MPI_IN_PLACE, grads_ + b.begin, static_cast<int>(b.end - b.begin),
                           MPI_FLOAT, MPI_SUM, comm_.comm(), &b.request),
            "MPI_Iallreduce");
}

void GradientReducer::progress() {
  for (size_t i = 0; i < next_; ++i) {
    if (buckets_[i].request == MPI_REQUEST_NULL) continue;
    int done = 0;
    check_mpi(MPI_Test(&buckets_[i].request, &done, MPI_STATUS_IGNORE), "MPI_Test");
    if (done) completed(i);
  }
}

void GradientReducer::completed(size_t index) {
  if (!timeline_) return;
  const Bucket& b = buckets_[index];
  timeline_->step_span("allreduce", "bucket", b.started_us, Timeline::now_us(),
                       Timeline::kCommunication, static_cast<int32_t>(index));
}

void GradientReducer::grads_final(size_t offset) {
  if (!overlap_) return;
  while (next_ < buckets_.size() && buckets_[next_].begin >= offset) start(buckets_[next_++]);
  progress();
}

void GradientReducer::finish() {
  while (next_ < buckets_.size()) start(buckets_[next_++]);
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < buckets_.size(); ++i) {
    if (buckets_[i].request == MPI_REQUEST_NULL) continue;
    comm_.wait(buckets_[i].request, "the gradient allreduce");
    completed(i);
  }
  const auto t1 = std::chrono::steady_clock::now();
  wait_s_ += std::chrono::duration<double>(t1 - t0).count();
  if (timeline_ && comm_.size() > 1) {
    const auto us = [](auto t) {
      return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
    };
    timeline_->step_span("allreduce", "wait", us(t0), us(t1));
  }
  next_ = 0;
  banked_ = false;
}

double GradientReducer::take_wait_seconds() {
  const double w = wait_s_;
  wait_s_ = 0;
  return w;
}

}  // namespace dptrain
