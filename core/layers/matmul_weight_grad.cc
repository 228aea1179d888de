#include "core/layers/matmul_weight_grad.h"

#include <cstring>

#include "core/engine.h"
#include "core/layers/channel_blocks.h"

namespace dptrain {

using dnnl::memory;
using dt = memory::data_type;
using tag = memory::format_tag;

namespace {

// The matmul's operands: dy^T (oc x pixels, read in place), the patches
// (pixels x k * k * ic) and dW (oc x k * k * ic, f32, row-major).
struct Operands {
  memory::desc dy_t, patches, dw;
};

Operands operands(const memory::desc& src, const memory::desc& dst, int64_t k) {
  const memory::dims in = src.dims(), out = dst.dims();
  const int64_t ic = in[1], oc = out[1], pixels = out[0] * out[2] * out[3];
  return {memory::desc({oc, pixels}, dst.data_type(), memory::dims{1, oc}),
          memory::desc({pixels, k * k * ic}, src.data_type(), tag::ab),
          memory::desc({oc, k * k * ic}, dt::f32, tag::ab)};
}

// Every stride-th pixel of every stride-th row of a channels-last tensor
// of rows x cols pixels, over `out` = {n, c, oh, ow}.
memory::desc strided(const memory::dims& out, dt type, int64_t rows, int64_t cols, int64_t stride) {
  const int64_t c = out[1];
  return memory::desc(out, type, memory::dims{rows * cols * c, 1, stride * cols * c, stride * c});
}

}  // namespace

std::optional<MatmulWeightGrad::Plan> MatmulWeightGrad::plan(const memory::desc& src,
                                                             const memory::desc& dst,
                                                             int64_t kernel, int64_t stride,
                                                             int64_t pad) {
  if (channel_loop_tag(src) != tag::nhwc || channel_loop_tag(dst) != tag::nhwc) return std::nullopt;
  // oneDNN takes a strided view only where the rows it picks stay within
  // each image.
  const memory::dims in = src.dims(), out = dst.dims();
  if (stride * out[2] > in[2] + 2 * pad || stride * out[3] > in[3] + 2 * pad) return std::nullopt;
  const Operands o = operands(src, dst, kernel);
  try {
    dnnl::matmul::primitive_desc pd({o.dy_t, o.patches, o.dw}, default_attr(), cpu_engine());
    if (is_reference(pd)) return std::nullopt;
    return Plan{pd, src, dst, kernel, stride, pad};
  } catch (const dnnl::error&) {
    return std::nullopt;
  }
}

MatmulWeightGrad::MatmulWeightGrad(const Plan& plan, const memory& src, const memory& diff_dst,
                                   const memory& grad, SetupContext& ctx) {
  const int64_t k = plan.kernel, s = plan.stride, pad = plan.pad;
  const Operands o = operands(plan.src, plan.diff_dst, k);
  const memory::dims in = plan.src.dims(), out = plan.diff_dst.dims();
  const dt type = plan.src.data_type();
  const auto& eng = cpu_engine();
  memory patches;
  if (k == 1 && s == 1 && pad == 0) {
    patches = ctx.view(src, o.patches);
  } else if (k == 1 && pad == 0) {
    // One tap: the strided input, gathered straight from it.
    patches = memory(o.patches, eng);
    const memory dense(memory::desc({out[0], in[1], out[2], out[3]}, type, tag::nhwc), eng,
                       patches.get_data_handle());
    taps_.push_back(make_reorder(
        ctx.view(src, strided(dense.get_desc().dims(), type, in[2], in[3], s)), dense));
  } else {
    // A padded copy of the input (its border zeroed once), then one
    // gather per kernel position into that position's columns.
    const int64_t c = in[1], hp = in[2] + 2 * pad, wp = in[3] + 2 * pad;
    const size_t elt = memory::data_type_size(type);
    padded_ = memory(memory::desc({in[0], c, hp, wp}, type, tag::nhwc), eng);
    auto* base = static_cast<char*>(padded_.get_data_handle());
    std::memset(base, 0, padded_.get_desc().get_size());
    const memory interior(memory::desc(in, type, memory::dims{hp * wp * c, 1, wp * c, c}), eng,
                          base + static_cast<size_t>((pad * wp + pad) * c) * elt);
    pad_ = make_reorder(src, interior);
    patches = memory(o.patches, eng);
    auto* cols = static_cast<char*>(patches.get_data_handle());
    const memory::dims tap_dims{out[0], c, out[2], out[3]};
    const int64_t row = k * k * c;
    const memory::desc into(tap_dims, type,
                            memory::dims{out[2] * out[3] * row, 1, out[3] * row, row});
    for (int64_t kh = 0; kh < k; ++kh) {
      for (int64_t kw = 0; kw < k; ++kw) {
        const memory from(strided(tap_dims, type, hp, wp, s), eng,
                          base + static_cast<size_t>((kh * wp + kw) * c) * elt);
        const memory to(into, eng, cols + static_cast<size_t>((kh * k + kw) * c) * elt);
        taps_.push_back(make_reorder(from, to));
      }
    }
  }
  const memory dw(o.dw, eng);
  to_grad_ = make_reorder(
      memory({{out[1], in[1], k, k}, dt::f32, tag::acdb}, eng, dw.get_data_handle()), grad);
  matmul_ = BoundPrimitive(dnnl::matmul(plan.matmul),
                           {{DNNL_ARG_SRC, ctx.view(diff_dst, o.dy_t)},
                            {DNNL_ARG_WEIGHTS, patches},
                            {DNNL_ARG_DST, dw},
                            {DNNL_ARG_SCRATCHPAD, ctx.scratchpad(plan.matmul)}});
}

void MatmulWeightGrad::run() const {
  if (pad_) pad_.run();
  for (const BoundPrimitive& tap : taps_) tap.run();
  matmul_.run();
  to_grad_.run();
}

}  // namespace dptrain
