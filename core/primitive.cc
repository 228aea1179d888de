#include "core/primitive.h"

#include <cassert>
#include <chrono>
#include <string>

#include "core/engine.h"

namespace dptrain {

BoundPrimitive::BoundPrimitive(dnnl::primitive primitive,
                               std::vector<std::pair<int, dnnl::memory>> args)
    : primitive_(std::move(primitive)) {
  for (auto& [arg, mem] : args) {
    if (!mem) continue;
    memories_.push_back(mem);
    args_.push_back({arg, mem.get()});
  }
}

namespace {
thread_local double primitive_time = 0;
}  // namespace

double primitive_seconds() { return primitive_time; }

KernelTimer::KernelTimer() : start_(std::chrono::steady_clock::now()) {}

KernelTimer::~KernelTimer() {
  primitive_time +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void BoundPrimitive::run() const {
  dnnl_status_t status;
  {
    KernelTimer timer;
    status = dnnl_primitive_execute(primitive_.get(), cpu_stream().get(),
                                    static_cast<int>(args_.size()), args_.data());
  }
  if (status != dnnl_success) {
    throw dnnl::error(status, "could not execute a primitive");
  }
}

BoundPrimitive make_reorder(const dnnl::memory& from, const dnnl::memory& to) {
  dnnl::reorder::primitive_desc pd(from, to, default_attr());
  dnnl::memory scratch;
  if (pd.scratchpad_desc().get_size() > 0)
    scratch = dnnl::memory(pd.scratchpad_desc(), cpu_engine());
  return BoundPrimitive(dnnl::reorder(pd),
                        {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}, {DNNL_ARG_SCRATCHPAD, scratch}});
}

Relayout Relayout::input(const dnnl::memory& from, const dnnl::memory::desc& want) {
  Relayout r;
  if (from.get_desc() == want) {
    r.memory_ = from;
  } else {
    r.memory_ = dnnl::memory(want, cpu_engine());
    r.reorder_ = make_reorder(from, r.memory_);
  }
  return r;
}

Relayout Relayout::output(const dnnl::memory::desc& have, const dnnl::memory& to) {
  Relayout r;
  if (to.get_desc() == have) {
    r.memory_ = to;
  } else {
    r.memory_ = dnnl::memory(have, cpu_engine());
    r.reorder_ = make_reorder(r.memory_, to);
  }
  return r;
}

dnnl::primitive_attr default_attr() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

dnnl::memory::desc plain_desc(const dnnl::memory::dims& dims, dnnl::memory::data_type type) {
  dnnl::memory::dims strides(dims.size(), 1);
  for (size_t i = dims.size() - 1; i-- > 0;) strides[i] = strides[i + 1] * dims[i + 1];
  return dnnl::memory::desc(dims, type, strides);
}

dnnl::memory::desc layout_like(const dnnl::memory::desc& like, const dnnl::memory::dims& dims) {
  using tag = dnnl::memory::format_tag;
  const auto type = like.data_type();
  if (like.dims().size() != dims.size()) return plain_desc(dims, type);
  for (tag t : {tag::nchw, tag::nhwc, tag::nChw16c, tag::nChw8c, tag::nc}) {
    try {
      if (dnnl::memory::desc(like.dims(), type, t) == like) return {dims, type, t};
    } catch (const dnnl::error&) {
      // a tag of another rank
    }
  }
  return plain_desc(dims, type);
}

dnnl::memory::desc with_type(const dnnl::memory::desc& md, dnnl::memory::data_type type) {
  if (md.data_type() == type || md.data.format_kind != dnnl_blocked) return md;
  dnnl::memory::desc out = md;
  // Blocking strides count elements, so the layout carries over as it is.
  out.data.data_type = static_cast<dnnl_data_type_t>(type);
  out.data.extra = dnnl_memory_extra_desc_t{};
  return out;
}

std::string dims_text(const std::vector<int64_t>& dims) {
  std::string out;
  for (int64_t d : dims) out += (out.empty() ? "" : "x") + std::to_string(d);
  return out.empty() ? "scalar" : out;
}

std::string layout_name(const dnnl::memory::desc& md) {
  const dnnl_memory_desc_t& d = md.data;
  if (d.format_kind != dnnl_blocked) return "any";
  const auto& blk = d.format_desc.blocking;
  const int ndims = d.ndims;
  // Outer dims ordered by stride (largest first), then the inner blocks.
  std::vector<int> order(ndims);
  for (int i = 0; i < ndims; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return blk.strides[a] > blk.strides[b]; });
  auto letter = [&](int dim, bool upper) {
    static const char* lower = "abcdef";
    char c = lower[dim];
    if (ndims == 4 || ndims == 2) c = "nchw"[dim];
    if (ndims == 5) c = "gnchw"[dim];
    if (upper) c = static_cast<char>(c - 'a' + 'A');
    return c;
  };
  std::string name;
  for (int dim : order) {
    bool blocked = false;
    for (int i = 0; i < blk.inner_nblks; ++i) blocked |= blk.inner_idxs[i] == dim;
    name += letter(dim, blocked);
  }
  for (int i = 0; i < blk.inner_nblks; ++i) {
    name += std::to_string(blk.inner_blks[i]) + letter(static_cast<int>(blk.inner_idxs[i]), false);
  }
  return name;
}

}  // namespace dptrain
