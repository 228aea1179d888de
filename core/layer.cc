#include "core/layer.h"

#include <cstring>
#include <stdexcept>

#include "core/engine.h"
#include "core/error.h"

namespace dptrain {

void ReplicaReducer::gather(const void* local, size_t bytes, void* all) {
  if (replicas() != 1) throw std::logic_error("this replica reducer cannot gather");
  std::memcpy(all, local, bytes);
}

BoundPrimitive fused_activation_backward(const Activation& act, const Blob& top,
                                         SetupContext& ctx) {
  const dnnl::memory::desc md = top.desc();
  dnnl::eltwise_forward::primitive_desc hint(
      {dnnl::prop_kind::forward_training, act.backward, md, act.alpha, 0.f}, cpu_engine());
  dnnl::eltwise_backward::primitive_desc pd({act.backward, md, md, act.alpha, 0.f}, default_attr(),
                                            cpu_engine(), hint);
  return BoundPrimitive(dnnl::eltwise_backward(pd), {{DNNL_ARG_DST, top.data},
                                                     {DNNL_ARG_DIFF_DST, top.diff},
                                                     {DNNL_ARG_DIFF_SRC, top.diff},
                                                     {DNNL_ARG_SCRATCHPAD, ctx.scratchpad(pd)}});
}

std::optional<Activation> activation_of(const LayerSpec& spec) {
  using A = dnnl::algorithm;
  const std::string& t = spec.type();
  const bool has_alpha = spec.activation().has_alpha();
  const float alpha = spec.activation().alpha();
  if (t == "ReLU") return Activation{A::eltwise_relu, A::eltwise_relu_use_dst_for_bwd, 0.f, t};
  if (t == "LeakyReLU") {
    return Activation{A::eltwise_relu, A::eltwise_relu_use_dst_for_bwd, has_alpha ? alpha : 0.01f,
                      t};
  }
  if (t == "ELU") {
    return Activation{A::eltwise_elu, A::eltwise_elu_use_dst_for_bwd, has_alpha ? alpha : 1.f, t};
  }
  if (t == "Sigmoid") {
    return Activation{A::eltwise_logistic, A::eltwise_logistic_use_dst_for_bwd, 0.f, t};
  }
  if (t == "Tanh") return Activation{A::eltwise_tanh, A::eltwise_tanh_use_dst_for_bwd, 0.f, t};
  return std::nullopt;
}

void SetupContext::define_top(Blob* top, const dnnl::memory::desc& md, const Blob* in_place_of,
                              const Blob* over) {
  if (over) {
    if (!may_overwrite(*over) || over->desc() != md) {
      throw std::logic_error("top written over '" + over->name + "', which it may not be");
    }
    top->data = over->data;
  } else {
    top->data = dnnl::memory(md, cpu_engine(), DNNL_MEMORY_NONE);
    pending_.arena.push_back(top->data);
  }
  if (top->needs_grad && in_place_of && in_place_of->diff) {
    if (in_place_of->diff.get_desc() != md) {
      throw std::logic_error("in-place gradient of another layout");
    }
    top->diff = in_place_of->diff;
  } else if (top->needs_grad) {
    top->diff = dnnl::memory(md, cpu_engine(), DNNL_MEMORY_NONE);
    pending_.arena.push_back(top->diff);
  }
}

void SetupContext::share_top(Blob* top, const Blob& bottom, bool share_gradient) {
  top->data = bottom.data;
  if (top->needs_grad && share_gradient && bottom.diff) {
    top->diff = bottom.diff;
  } else if (top->needs_grad) {
    top->diff = dnnl::memory(bottom.desc(), cpu_engine(), DNNL_MEMORY_NONE);
    pending_.arena.push_back(top->diff);
  }
}

void SetupContext::share_gradient(Blob* bottom, const Blob& top) {
  if (!bottom->gradient_shareable || bottom->diff.get_desc() != top.diff.get_desc()) {
    throw std::logic_error("gradient of '" + bottom->name + "' cannot be shared");
  }
  pending_.aliases.emplace_back(top.diff, bottom->diff);
  bottom->gradient_shareable = false;
}

void SetupContext::store_gradient_over_values(Blob* bottom) {
  if (!may_overwrite(*bottom) || !bottom->diff || bottom->diff.get_desc() != bottom->desc()) {
    throw std::logic_error("gradient of '" + bottom->name + "' cannot be stored over its values");
  }
  pending_.aliases.emplace_back(bottom->data, bottom->diff);
}

Param* SetupContext::add_param(const std::string& suffix, const dnnl::memory::desc& plain_desc,
                               const dnnl::memory::desc& desc, dnnl::memory::dims export_dims,
                               ParamInit init, bool trainable) {
  return store_.add(trainable, layer_name_ + "." + suffix, plain_desc, desc, std::move(export_dims),
                    init);
}

dnnl::memory SetupContext::scratchpad(const dnnl::primitive_desc_base& pd) {
  const dnnl::memory::desc md = pd.scratchpad_desc();
  if (md.get_size() == 0) return {};
  dnnl::memory mem(md, cpu_engine(), DNNL_MEMORY_NONE);
  pending_.scratchpads.push_back(mem);
  pending_.scratchpad_bytes = std::max(pending_.scratchpad_bytes, md.get_size());
  return mem;
}

dnnl::memory SetupContext::view(const dnnl::memory& base, const dnnl::memory::desc& md) {
  dnnl::memory mem(md, cpu_engine(), DNNL_MEMORY_NONE);
  pending_.views.emplace_back(base, mem);
  return mem;
}

void Layer::check_bottoms(const std::vector<Blob*>& bottoms, size_t count) const {
  if (bottoms.size() != count) {
    throw UserError(error_prefix() + "takes " + std::to_string(count) + " bottom(s), got " +
                    std::to_string(bottoms.size()));
  }
}

void Layer::check_rank(const Blob& bottom, std::initializer_list<int> ranks) const {
  const int rank = bottom.desc().data.ndims;
  for (int r : ranks) {
    if (r == rank) return;
  }
  std::string want;
  for (int r : ranks) want += (want.empty() ? "" : " or ") + std::to_string(r);
  throw UserError(error_prefix() + "needs a " + want + "-d input, '" + bottom.name + "' is " +
                  std::to_string(rank) + "-d" +
                  (rank == 2 ? " (it was flattened; move Flatten after this layer)" : ""));
}

void LossLayer::check_label_bottom(const Blob& bottom) const {
  if (bottom.name != "label") {
    throw UserError(error_prefix() + "second bottom must be 'label', not '" + bottom.name + "'");
  }
}

}  // namespace dptrain
