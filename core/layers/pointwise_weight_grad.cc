#include "core/layers/pointwise_weight_grad.h"

#include <string>

#include "core/engine.h"

namespace dptrain {

using dnnl::memory;
using dt = memory::data_type;
using tag = memory::format_tag;

namespace {

// The matmul's operands: dy^T (oc x pixels, read in place), x (pixels x ic)
// and dW (oc x ic, f32, row-major).
struct Operands {
  memory::desc dy_t, x, dw;
};

Operands operands(const memory::desc& src, const memory::desc& dst) {
  const memory::dims in = src.dims(), out = dst.dims();
  const int64_t ic = in[1], oc = out[1], pixels = out[0] * out[2] * out[3];
  return {memory::desc({oc, pixels}, dst.data_type(), memory::dims{1, oc}),
          memory::desc({pixels, ic}, src.data_type(), tag::ab),
          memory::desc({oc, ic}, dt::f32, tag::ab)};
}

}  // namespace

std::optional<PointwiseWeightGrad::Plan> PointwiseWeightGrad::plan(const memory::desc& src,
                                                                   const memory::desc& dst,
                                                                   int64_t stride) {
  if (src != memory::desc(src.dims(), src.data_type(), tag::nhwc) ||
      dst != memory::desc(dst.dims(), dst.data_type(), tag::nhwc)) {
    return std::nullopt;
  }
  // The gather below views the input with strides, which oneDNN accepts
  // only where the rows it picks stay within each image.
  const memory::dims in = src.dims();
  if (in[2] % stride != 0 || in[3] % stride != 0) return std::nullopt;
  const Operands o = operands(src, dst);
  try {
    dnnl::matmul::primitive_desc pd({o.dy_t, o.x, o.dw}, default_attr(), cpu_engine());
    if (std::string(pd.impl_info_str()).rfind("ref", 0) == 0) return std::nullopt;
    return Plan{pd, src, dst, stride};
  } catch (const dnnl::error&) {
    return std::nullopt;
  }
}

PointwiseWeightGrad::PointwiseWeightGrad(const Plan& plan, const memory& src,
                                         const memory& diff_dst, const memory& grad,
                                         SetupContext& ctx) {
  const Operands o = operands(plan.src, plan.diff_dst);
  memory x;
  if (plan.stride == 1) {
    x = ctx.view(src, o.x);
  } else {
    // Every stride-th pixel of every stride-th row, as strides over the
    // channels-last input.
    const memory::dims in = plan.src.dims(), out = plan.diff_dst.dims();
    const int64_t c = in[1], w = in[3], s = plan.stride;
    const memory::desc picked({in[0], c, out[2], out[3]}, plan.src.data_type(),
                              memory::dims{in[2] * w * c, 1, s * w * c, s * c});
    const memory dense(memory::desc(picked.dims(), picked.data_type(), tag::nhwc), cpu_engine());
    gather_ = make_reorder(ctx.view(src, picked), dense);
    x = memory(o.x, cpu_engine(), dense.get_data_handle());
    // The view shares dense's storage, which `gather_` keeps alive.
  }
  const memory dw(o.dw, cpu_engine());
  const memory::dims wdims{o.dw.dims()[0], o.dw.dims()[1], 1, 1};
  to_grad_ =
      make_reorder(memory({wdims, dt::f32, tag::oihw}, cpu_engine(), dw.get_data_handle()), grad);
  matmul_ = BoundPrimitive(dnnl::matmul(plan.matmul),
                           {{DNNL_ARG_SRC, ctx.view(diff_dst, o.dy_t)},
                            {DNNL_ARG_WEIGHTS, x},
                            {DNNL_ARG_DST, dw},
                            {DNNL_ARG_SCRATCHPAD, ctx.scratchpad(plan.matmul)}});
}

void PointwiseWeightGrad::run() const {
  if (gather_) gather_.run();
  matmul_.run();
  to_grad_.run();
}

}  // namespace dptrain
