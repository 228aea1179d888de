// Max pooling by loops of our own, for windows that do not overlap
// (stride >= kernel) on a channel-blocked or channels-last tensor
// (channel_blocks.h), f32 or bf16: oneDNN 2.6's training kernel, which
// writes the workspace, takes 4x as long as its inference kernel (0.67
// against 0.16 ms for 32x32x28x28 f32, 0.76 against 0.21 bf16, one
// thread), and its backward as long again. Forward keeps where each
// maximum came from (its offset in the window, a byte per output, the
// first of equal ones in row-major window order); backward routes each
// output's gradient there, which without overlap is a copy, in f32 or
// bf16 alike. The output takes the input's layout.
//
// The loops take a pixel's run of channels a register's width at a time
// as one vector, compiled for AVX-512, AVX2 and the x86-64 baseline alike
// (max_pool_loops.cc) and chosen by the CPU at run time: the build targets
// the baseline, whose 4-lane vectors left them 3x slower than oneDNN's
// inference kernel.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>

#include <oneapi/dnnl/dnnl.hpp>

#include "core/layers/channel_blocks.h"
#include "core/layers/simd.h"

namespace dptrain {

struct MaxPoolLoops {
  // The loops for k x k windows every s, padded by pad, over `src`; none
  // when they do not apply (overlapping windows, another layout, a window
  // of more than 256 places). `simd` must be one this CPU runs.
  static std::optional<MaxPoolLoops> plan(const dnnl::memory::desc& src, int64_t k, int64_t s,
                                          int64_t pad, Simd simd = best_simd());
  // Bytes of `where`: one per element of dst, its padded lanes included.
  size_t where_size() const { return static_cast<size_t>(out.elements()); }

  dnnl::memory::desc dst;
  ChannelBlocks in, out;
  int64_t ih, iw, oh, ow, k, s, pad;
  bool covers_input;  // every input element lies in exactly one window
  Simd simd;
  bool bf16() const { return dst.data_type() == dnnl::memory::data_type::bf16; }

  // The window rows (or columns) [lo, hi) of output o inside an input of n.
  void window(int64_t o, int64_t n, int64_t& start, int64_t& lo, int64_t& hi) const {
    start = o * s - pad;
    lo = std::max<int64_t>(0, -start);
    hi = std::min<int64_t>(k, n - start);
  }

  // x in src's layout, y and where in dst's, of dst's data type.
  void forward(const void* x, void* y, uint8_t* where) const;
  void backward(const void* dy, const uint8_t* where, void* dx) const;
};

}  // namespace dptrain
