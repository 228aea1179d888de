// Primitives with their arguments bound once at set-up, and the reorders
// that adapt a tensor to the layout a primitive chose.
//
// run() hands the pre-built argument array to oneDNN's C API: the C++
// execute() builds a std::vector on every call, and a step must not
// allocate.
#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

namespace dptrain {

// Seconds this thread has spent in run() (oneDNN primitives, reorders
// included) and in the loops that stand in for primitives oneDNN runs
// slowly (each inside a KernelTimer), since it started: what a step spends
// computing, against the framework's own time around it.
double primitive_seconds();

// Counts its lifetime into primitive_seconds().
class KernelTimer {
 public:
  KernelTimer();
  ~KernelTimer();
  KernelTimer(const KernelTimer&) = delete;
  KernelTimer& operator=(const KernelTimer&) = delete;

 private:
  std::chrono::steady_clock::time_point start_;
};

class BoundPrimitive {
 public:
  BoundPrimitive() = default;
  BoundPrimitive(dnnl::primitive primitive, std::vector<std::pair<int, dnnl::memory>> args);

  void run() const;
  explicit operator bool() const { return static_cast<bool>(primitive_); }

 private:
  dnnl::primitive primitive_;
  std::vector<dnnl::memory> memories_;  // keeps the bound memories alive
  std::vector<dnnl_exec_arg_t> args_;
};

// Presents a tensor in the layout a primitive wants. When the layouts agree
// `memory` is the tensor itself and run() does nothing; otherwise `memory`
// is a private copy kept up to date by a reorder.
class Relayout {
 public:
  Relayout() = default;
  // For a primitive input: `from` shown in layout `want`.
  static Relayout input(const dnnl::memory& from, const dnnl::memory::desc& want);
  // For a primitive output written in layout `have`, delivered into `to`.
  static Relayout output(const dnnl::memory::desc& have, const dnnl::memory& to);

  const dnnl::memory& memory() const { return memory_; }
  bool needed() const { return static_cast<bool>(reorder_); }
  void run() const {
    if (reorder_) reorder_.run();
  }

 private:
  dnnl::memory memory_;
  BoundPrimitive reorder_;
};

// Reorders between two memories of the same logical dims (any layouts).
BoundPrimitive make_reorder(const dnnl::memory& from, const dnnl::memory& to);

// Attributes every primitive is created with: the scratchpad is ours (one
// shared buffer, so execution never allocates).
dnnl::primitive_attr default_attr();

// Whether oneDNN chose one of its reference (unoptimized) kernels.
inline bool is_reference(const dnnl::primitive_desc_base& pd) {
  return std::string(pd.impl_info_str()).rfind("ref", 0) == 0;
}

// Creates the first primitive descriptor among `candidates` (functions
// returning one) that oneDNN can build with an optimized implementation,
// falling back to the last one. Lets a layer prefer the layouts its
// neighbours already use, so no reorder is needed, without accepting a slow
// reference kernel for it.
template <class PD, class... Make>
PD first_fast(Make&&... candidates) {
  PD chosen;
  auto attempt = [&](auto& make, bool last) {
    if (chosen) return;
    try {
      PD pd = make();
      if (last || !is_reference(pd)) chosen = pd;
    } catch (const dnnl::error&) {
      if (last) throw;
    }
  };
  size_t i = 0;
  const size_t n = sizeof...(candidates);
  (attempt(candidates, ++i == n), ...);
  return chosen;
}

// The plain (row-major) layout of `dims`, for any rank.
dnnl::memory::desc plain_desc(const dnnl::memory::dims& dims,
                              dnnl::memory::data_type type = dnnl::memory::data_type::f32);
// A tensor of `dims` (same rank) in the layout of `like` when that is one
// of the common ones (plain, channels-last, channel-blocked by 8 or 16),
// else plain: for layers whose inputs must share a layout to get a fast
// kernel (sum, concat).
dnnl::memory::desc layout_like(const dnnl::memory::desc& like, const dnnl::memory::dims& dims);
// `md`'s layout with elements of another type (fp32 master weights laid
// out like their bf16 copies).
dnnl::memory::desc with_type(const dnnl::memory::desc& md, dnnl::memory::data_type type);

// Short layout name for logs, e.g. "nchw", "nChw8c", "OIhw8i8o".
std::string layout_name(const dnnl::memory::desc& md);
// Dimensions as people write them: "64x32x14x14" ("scalar" for none).
std::string dims_text(const std::vector<int64_t>& dims);

}  // namespace dptrain
