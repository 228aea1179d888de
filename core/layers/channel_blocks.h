// Loops over the channels of each pixel, for the attention layers' sums
// and maxima across channels, which oneDNN 2.6's reduction runs slowly (its
// fast kernels reduce innermost dimensions, and a pixel's channels are a
// short innermost run: about 0.1 G elements/s). The loops read the
// channel-blocked layouts the convolutions leave (nChw16c, nChw8c) in
// place, and anything else brought to channels-last (nhwc, one block of
// all the channels).
#pragma once

#include <cstdint>

#include <oneapi/dnnl/dnnl.hpp>

#include "core/primitive.h"

namespace dptrain {

struct ChannelBlocks {
  int64_t samples = 0, channels = 0, pixels = 0;
  int64_t block = 0;   // channels per block
  int64_t blocks = 0;  // blocks per sample (the last one padded)
  // Offset of the first channel of block `b` at pixel `p` of sample `n`;
  // channel b * block + i follows at + i.
  int64_t at(int64_t n, int64_t b, int64_t p) const {
    return ((n * blocks + b) * pixels + p) * block;
  }
  // Real channels in block `b` (fewer than `block` in a padded last one).
  int64_t width(int64_t b) const { return b + 1 < blocks ? block : channels - b * block; }
  // Elements of the tensor, the padded lanes of a last block included.
  int64_t elements() const { return samples * blocks * pixels * block; }
};

// Which of the layouts the loops read `md` is in (nChw16c, nChw8c or nhwc,
// of any data type), or undef.
inline dnnl::memory::format_tag channel_loop_tag(const dnnl::memory::desc& md) {
  using tag = dnnl::memory::format_tag;
  if (md.dims().size() != 4) return tag::undef;
  for (tag t : {tag::nChw16c, tag::nChw8c, tag::nhwc}) {
    if (dnnl::memory::desc(md.dims(), md.data_type(), t) == md) return t;
  }
  return tag::undef;
}

// The layout the loops read a 4-D f32 tensor `like` in: its own if it is
// nChw16c or nChw8c, else nhwc.
inline dnnl::memory::desc channel_loop_layout(const dnnl::memory::desc& like) {
  using tag = dnnl::memory::format_tag;
  const tag t = channel_loop_tag(like);
  if ((t == tag::nChw16c || t == tag::nChw8c) && like.data_type() == dnnl::memory::data_type::f32) {
    return like;
  }
  return {like.dims(), dnnl::memory::data_type::f32, tag::nhwc};
}

// The blocks of a tensor in channel_loop_layout(...).
inline ChannelBlocks channel_blocks(const dnnl::memory::desc& md) {
  const dnnl::memory::dims d = md.dims();
  const auto& blk = md.data.format_desc.blocking;
  ChannelBlocks c{d[0], d[1], d[2] * d[3], d[1], 1};
  if (blk.inner_nblks == 1) {
    c.block = blk.inner_blks[0];
    c.blocks = (d[1] + c.block - 1) / c.block;
  }
  return c;
}

// y[n * pixels + p] = scale * the sum over x's channels at pixel p.
inline void sum_over_channels(const ChannelBlocks& c, const float* x, float* y, float scale) {
  KernelTimer timer;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < c.samples; ++n) {
    for (int64_t p = 0; p < c.pixels; ++p) {
      float acc = 0.f;
      for (int64_t b = 0; b < c.blocks; ++b) {
        const float* v = x + c.at(n, b, p);
        const int64_t w = c.width(b);
        for (int64_t i = 0; i < w; ++i) acc += v[i];
      }
      y[n * c.pixels + p] = acc * scale;
    }
  }
}

// y[n * pixels + p] = the maximum over x's channels at pixel p.
inline void max_over_channels(const ChannelBlocks& c, const float* x, float* y) {
  KernelTimer timer;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < c.samples; ++n) {
    for (int64_t p = 0; p < c.pixels; ++p) {
      float acc = x[c.at(n, 0, p)];
      for (int64_t b = 0; b < c.blocks; ++b) {
        const float* v = x + c.at(n, b, p);
        const int64_t w = c.width(b);
        for (int64_t i = 0; i < w; ++i) acc = v[i] > acc ? v[i] : acc;
      }
      y[n * c.pixels + p] = acc;
    }
  }
}

}  // namespace dptrain
