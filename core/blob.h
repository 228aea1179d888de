// A blob is a named tensor flowing between layers: its values and, where a
// gradient flows back through it, its gradient. Both share one layout, the
// one its producer's primitive chose.
#pragma once

#include <string>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

namespace dptrain {

// A producer whose values its reader can compute itself, in a pass it
// makes anyway (BatchNorm's normalization, folded into the residual Add
// after it).
class FoldableOutput {
 public:
  // out = these values + other (then max(out, 0) with relu), all in the
  // blob's layout; valid after the producer's forward, from inputs that
  // live on because the producer's backward reads them.
  virtual void add_to(const void* other, void* out, bool relu) const = 0;
  // The same with other's values those of `other`, a producer of this kind
  // whose values are folded too (the same shape and layout).
  virtual void add_to(const FoldableOutput& other, void* out, bool relu) const = 0;
  // The reader's gradient through its ReLU, dy = dy + other (where not
  // null) where `cut` (its output) is positive, else 0, in place, in the
  // pass that takes the sums this producer's backward needs (and second's,
  // a producer of this kind whose values are folded too); that backward,
  // told by gradient_sums_taken, then skips its own pass for them.
  virtual void take_gradient_sums(void* dy, const void* other, const void* cut,
                                  const FoldableOutput* second) const = 0;
  // Whether that one pass is faster than the reader's and the producer's
  // passes apart, for these values (and a second producer's of their shape).
  virtual bool takes_gradient_sums_faster() const = 0;

 protected:
  ~FoldableOutput() = default;
};

struct Blob {
  std::string name;
  dnnl::memory data;
  dnnl::memory diff;  // null when no gradient is needed here
  bool needs_grad = false;
  int split_branches = 0;  // readers given a branch of their own (see Split)
  // The gradient's storage is this blob's alone and its producer's backward
  // only reads it, so a layer that hands one gradient to several bottoms
  // (Add) can make it theirs instead of copying it.
  bool gradient_shareable = false;
  // Set by a producer whose backward adds the gradients of this blob's
  // Split branches itself (fused into a pass it makes anyway); those
  // Splits then only list their branch's gradient here.
  bool producer_sums_branches = false;
  std::vector<dnnl::memory> branch_gradients;
  // Offered by a producer that can leave its values to a reader; the
  // reader that takes them (its only one) sets `folded`, and the producer
  // then writes nothing here.
  const FoldableOutput* foldable = nullptr;
  bool folded = false;
  // Set by the reader that folded these values and whose backward takes
  // their producer's gradient sums (FoldableOutput::take_gradient_sums).
  bool gradient_sums_taken = false;

  dnnl::memory::desc desc() const { return data.get_desc(); }
  dnnl::memory::dims dims() const { return data.get_desc().dims(); }
  float* data_ptr() const { return static_cast<float*>(data.get_data_handle()); }
  float* diff_ptr() const { return static_cast<float*>(diff.get_data_handle()); }
};

}  // namespace dptrain
