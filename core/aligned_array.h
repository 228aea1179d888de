// A fixed-size array for buffers that vector loads stream through and
// that threads write side by side.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

namespace dptrain {

// Zeroed storage on a 64-byte boundary: a cache line and an AVX-512
// vector, so that slots a multiple of it long never share a line between
// threads.
template <class T>
class AlignedArray {
 public:
  static constexpr size_t kLine = 64 / sizeof(T);  // elements per cache line
  // n elements rounded up to whole cache lines.
  static constexpr size_t whole_lines(size_t n) { return (n + kLine - 1) / kLine * kLine; }

  AlignedArray() = default;
  explicit AlignedArray(size_t n) : size_(n) {
    void* p = nullptr;
    const size_t bytes = std::max<size_t>(n, 1) * sizeof(T);
    if (posix_memalign(&p, 64, bytes) != 0) throw std::bad_alloc();
    std::memset(p, 0, bytes);
    data_.reset(static_cast<T*>(p));
  }
  T* data() const { return data_.get(); }
  size_t size() const { return size_; }

 private:
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  std::unique_ptr<T, Free> data_;
  size_t size_ = 0;
};
using AlignedFloats = AlignedArray<float>;

}  // namespace dptrain
