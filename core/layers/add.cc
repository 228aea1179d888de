// Add: the elementwise sum of two or more blobs of the same shape (residual
// connections). Forward is one oneDNN sum into the first bottom's layout;
// backward hands the top's gradient to every bottom that needs one. Bottoms
// in the top's layout whose producers only read their gradient (a Split's
// branch, a BatchNorm told to keep its output's gradient) have the top's
// as theirs; failing those, the first in the top's layout has it; the rest
// get a copy, reordered into their layout. An
// activation after an Add of two (ResNet's ReLU) is fused into it: the sum
// becomes oneDNN's binary add with the activation as a post-op, one pass
// instead of two, and its gradient is taken in place on the top's; a ReLU's
// also sums the gradients of the top's Split branches in that pass
// (relu_gradient_loops.h). Where the first bottom is a BatchNorm's output
// that only this Add reads, the BatchNorm leaves it unwritten and the sum
// normalizes its input on the way (FoldableOutput); so too the second
// bottom's BatchNorm, where the first's is folded (ResNet's projection
// shortcut). Their gradient being the top's, the ReLU's gradient pass then
// takes the sums their backward needs too, where that is faster.
#include <omp.h>

#include <algorithm>
#include <optional>

#include "core/engine.h"
#include "core/error.h"
#include "core/layer.h"
#include "core/layers/layers.h"
#include "core/layers/relu_gradient_loops.h"
#include "core/primitive.h"

namespace dptrain {
namespace {

using dnnl::memory;

bool has_padding(const memory::desc& md) {
  size_t elements = 1;
  for (auto d : md.dims()) elements *= static_cast<size_t>(d);
  return md.get_size() != elements * memory::data_type_size(md.data_type());
}

std::string shape_of(const Blob& blob) {
  std::string s;
  for (auto d : blob.dims()) s += (s.empty() ? "" : "x") + std::to_string(d);
  return s;
}

class AddLayer : public Layer {
 public:
  using Layer::Layer;

  void setup(const std::vector<Blob*>& bottoms, Blob* top, SetupContext& ctx) override {
    if (bottoms.size() < 2) {
      throw UserError(error_prefix() + "takes 2 or more bottoms, got " +
                      std::to_string(bottoms.size()));
    }
    const Blob& first = *bottoms[0];
    std::vector<memory::desc> srcs;
    for (const Blob* b : bottoms) {
      if (b->dims() != first.dims()) {
        throw UserError(error_prefix() + "bottoms must have the same shape, '" + first.name +
                        "' is " + shape_of(first) + " but '" + b->name + "' is " + shape_of(*b));
      }
      // Bottoms in another layout than the first's are reordered to it:
      // oneDNN sums mixed layouts with its reference kernel only.
      inputs_.push_back(Relayout::input(b->data, first.desc()));
      srcs.push_back(first.desc());
    }
    const memory::desc dst = first.desc();
    // Where bottoms' gradients are shareable the top's gradient becomes
    // theirs; else the first's in the top's layout is the top's (its
    // producer may overwrite it, so no other bottom can share it).
    std::vector<Blob*> sharing;
    const Blob* in_place_of = nullptr;
    for (Blob* b : bottoms) {
      if (!b->needs_grad || !b->diff || b->diff.get_desc() != dst) continue;
      if (b->gradient_shareable) {
        sharing.push_back(b);
      } else if (!in_place_of) {
        in_place_of = b;
      }
    }
    // oneDNN's binary add writes over its first input in place, where
    // nothing reads that input later: the output then lands on lines just
    // read, not on lines memory must first fetch. (oneDNN 2.6 gets a
    // blocked layout's padded channels wrong in place, 3 of 16 say.)
    // A BatchNorm's normalization is folded into the sum where this Add is
    // its output's only reader: one pass from the BatchNorm's input, its
    // output never written.
    const bool relu = activation_ && activation_->forward == dnnl::algorithm::eltwise_relu &&
                      activation_->alpha == 0.f;
    if (bottoms.size() == 2 && first.foldable && ctx.may_overwrite(first) &&
        (!activation_ || relu)) {
      bottoms[0]->folded = true;
      folded_ = first.foldable;
      const Blob& second = *bottoms[1];
      if (second.foldable && ctx.may_overwrite(second) && second.desc() == dst) {
        bottoms[1]->folded = true;
        folded_second_ = second.foldable;
      }
    }
    const Blob* over = (activation_ || folded_) && ctx.may_overwrite(first) && !has_padding(dst)
                           ? &first
                           : nullptr;
    ctx.define_top(top, dst, sharing.empty() ? in_place_of : nullptr, over);
    for (Blob* b : sharing) {
      if (top->diff) ctx.share_gradient(b, *top);
    }
    top_ = top;
    if (folded_) {
      describe_ = folded_second_ ? "both BatchNorms' normalizations and the sum in one loop"
                                 : "BatchNorm's normalization and the sum in one loop";
    } else if (activation_) {
      dnnl::post_ops ops;
      ops.append_eltwise(1.f, activation_->forward, activation_->alpha, 0.f);
      dnnl::primitive_attr attr = default_attr();
      attr.set_post_ops(ops);
      const dnnl::binary::primitive_desc pd({dnnl::algorithm::binary_add, dst, dst, dst}, attr,
                                            cpu_engine());
      forward_ = BoundPrimitive(dnnl::binary(pd), {{DNNL_ARG_SRC_0, inputs_[0].memory()},
                                                   {DNNL_ARG_SRC_1, inputs_[1].memory()},
                                                   {DNNL_ARG_DST, top->data},
                                                   {DNNL_ARG_SCRATCHPAD, ctx.scratchpad(pd)}});
      describe_ = "binary " + std::string(pd.impl_info_str());
    } else {
      const std::vector<float> scales(bottoms.size(), 1.f);
      const dnnl::sum::primitive_desc pd(dst, scales, srcs, cpu_engine(), default_attr());
      std::vector<std::pair<int, memory>> args;
      for (size_t i = 0; i < bottoms.size(); ++i) {
        args.emplace_back(DNNL_ARG_MULTIPLE_SRC + static_cast<int>(i), inputs_[i].memory());
      }
      args.emplace_back(DNNL_ARG_DST, top->data);
      args.emplace_back(DNNL_ARG_SCRATCHPAD, ctx.scratchpad(pd));
      forward_ = BoundPrimitive(dnnl::sum(pd), std::move(args));
      describe_ = "sum " + std::string(pd.impl_info_str());
    }
    if (activation_ && top->diff) {
      activation_backward_ = fused_activation_backward(*activation_, *top, ctx);
      top->producer_sums_branches = relu;
    }
    auto shares = [&](const Blob* b) {
      return std::find(sharing.begin(), sharing.end(), b) != sharing.end();
    };
    if (relu && folded_ && shares(bottoms[0]) && folded_->takes_gradient_sums_faster()) {
      bottoms[0]->gradient_sums_taken = true;
      if (folded_second_ && shares(bottoms[1])) {
        bottoms[1]->gradient_sums_taken = true;
        sums_of_second_ = folded_second_;
      }
      takes_sums_ = true;
      describe_ += sums_of_second_ ? ", both BatchNorms' gradient sums in its ReLU's pass"
                                   : ", the BatchNorm's gradient sums in its ReLU's pass";
    }
    for (const Blob* b : bottoms) {
      if (b->needs_grad && !shares(b) && b->diff.get() != top->diff.get()) {
        backward_.push_back(make_reorder(top->diff, b->diff));
      }
    }
    if (over) describe_ += ", over its first bottom";
    if (!sharing.empty()) {
      describe_ += ", gradient shared by " + std::to_string(sharing.size()) + " of " +
                   std::to_string(bottoms.size()) + " bottoms";
    }
  }

  void forward(bool) override {
    for (const Relayout& input : inputs_) input.run();
    if (folded_second_) {
      folded_->add_to(*folded_second_, top_->data.get_data_handle(), activation_.has_value());
    } else if (folded_) {
      folded_->add_to(inputs_[1].memory().get_data_handle(), top_->data.get_data_handle(),
                      activation_.has_value());
    } else {
      forward_.run();
    }
  }
  void backward() override {
    if (takes_sums_) {
      relu_gradient_with_sums();
    } else if (top_ && !top_->branch_gradients.empty()) {
      relu_gradient_sum_of(branches_last_first());
    } else if (activation_backward_) {
      activation_backward_.run();
    }
    for (const BoundPrimitive& copy : backward_) copy.run();
  }
  bool fuse_activation(const Activation& act) override {
    if (spec_.bottom_size() != 2) return false;
    activation_ = act;
    fused_ = act.type;
    return true;
  }
  std::string describe() const override {
    if (!top_ || top_->branch_gradients.empty()) return describe_;
    return describe_ + ", ReLU gradient summing " +
           std::to_string(top_->branch_gradients.size() + 1) + " branches";
  }
  bool backward_reads_bottoms() const override { return false; }
  bool backward_reads_top() const override { return activation_.has_value(); }

 private:
  // The top's Split branches' gradients in the order the Splits would have
  // added them (the last first); the vector keeps its capacity, so no step
  // but the first allocates.
  const std::vector<const void*>& branches_last_first() {
    others_.clear();
    for (auto it = top_->branch_gradients.rbegin(); it != top_->branch_gradients.rend(); ++it) {
      others_.push_back(it->get_data_handle());
    }
    return others_;
  }

  // The first of those is added in the pass that takes the sums; any
  // others before it, cut by the same ReLU (a second cut cuts nothing more;
  // in bf16 the sum is then rounded twice, unlike the Splits' order).
  void relu_gradient_with_sums() {
    const std::vector<const void*>& branches = branches_last_first();
    if (branches.size() > 1) {
      rest_.assign(branches.begin() + 1, branches.end());
      relu_gradient_sum_of(rest_);
    }
    folded_->take_gradient_sums(top_->diff.get_data_handle(),
                                branches.empty() ? nullptr : branches.front(),
                                top_->data.get_data_handle(), sums_of_second_);
  }

  void relu_gradient_sum_of(const std::vector<const void*>& branches) {
    cpu_stream().wait();
    const memory::desc md = top_->diff.get_desc();
    const bool bf16 = md.data_type() == memory::data_type::bf16;
    relu_gradient_sum(bf16, top_->diff.get_data_handle(), branches, top_->data.get_data_handle(),
                      static_cast<int64_t>(md.get_size() / (bf16 ? 2 : 4)), omp_get_max_threads());
  }

  std::optional<Activation> activation_;
  const FoldableOutput* folded_ = nullptr;         // the first bottom's producer
  const FoldableOutput* folded_second_ = nullptr;  // the second's, folded too
  // The ReLU's gradient pass takes the first's gradient sums, and those of
  // sums_of_second_ where set.
  bool takes_sums_ = false;
  const FoldableOutput* sums_of_second_ = nullptr;
  Blob* top_ = nullptr;
  std::vector<const void*> others_, rest_;
  BoundPrimitive activation_backward_;
  std::vector<Relayout> inputs_;
  BoundPrimitive forward_;
  std::vector<BoundPrimitive> backward_;
  std::string describe_;
};

}  // namespace

std::unique_ptr<Layer> make_add(const LayerSpec& spec) { return std::make_unique<AddLayer>(spec); }

}  // namespace dptrain
