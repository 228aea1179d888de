// Concat: two or more blobs joined along the channels (axis 1); the other
// dimensions must agree. Forward is one oneDNN concat; backward reorders
// each bottom's slice of the top's gradient (a sub-tensor view) into that
// bottom's gradient. When a slice cannot be viewed in the blocked layout
// oneDNN picked (a channel offset that is not a multiple of the block), the
// top is made plain instead.
#include "core/engine.h"
#include "core/error.h"
#include "core/layer.h"
#include "core/layers/layers.h"
#include "core/primitive.h"

namespace dptrain {
namespace {

using dnnl::memory;

std::string shape_of(const Blob& blob) {
  std::string s;
  for (auto d : blob.dims()) s += (s.empty() ? "" : "x") + std::to_string(d);
  return s;
}

class ConcatLayer : public Layer {
 public:
  using Layer::Layer;

  void setup(const std::vector<Blob*>& bottoms, Blob* top, SetupContext& ctx) override {
    if (bottoms.size() < 2) {
      throw UserError(error_prefix() + "takes 2 or more bottoms, got " +
                      std::to_string(bottoms.size()));
    }
    const Blob& first = *bottoms[0];
    memory::dims out = first.dims();
    if (out.size() < 2) throw UserError(error_prefix() + "needs inputs with a channel axis");
    out[1] = 0;
    std::vector<memory::desc> srcs;
    std::vector<memory::dims> offsets;
    for (const Blob* b : bottoms) {
      memory::dims d = b->dims();
      bool same = d.size() == out.size();
      for (size_t i = 0; same && i < d.size(); ++i) same = i == 1 || d[i] == out[i];
      if (!same) {
        throw UserError(error_prefix() + "bottoms must agree in all but the channels, '" +
                        first.name + "' is " + shape_of(first) + " but '" + b->name + "' is " +
                        shape_of(*b));
      }
      memory::dims offset(d.size(), 0);
      offset[1] = out[1];
      offsets.push_back(offset);
      out[1] += d[1];
      // In the first bottom's layout: oneDNN concatenates mixed layouts
      // with its reference kernel only.
      inputs_.push_back(Relayout::input(b->data, layout_like(first.desc(), d)));
      srcs.push_back(inputs_.back().memory().get_desc());
    }

    // The layout oneDNN derives from the inputs, if every slice of it can be
    // viewed; else plain.
    auto& eng = cpu_engine();
    auto slices_fit = [&](const memory::desc& dst) {
      for (size_t i = 0; i < bottoms.size(); ++i) {
        if (!dst.submemory_desc(bottoms[i]->dims(), offsets[i], true)) return false;
      }
      return true;
    };
    dnnl::concat::primitive_desc pd;
    try {
      pd = dnnl::concat::primitive_desc(1, srcs, eng, default_attr());
      if (!slices_fit(pd.dst_desc())) pd = {};
    } catch (const dnnl::error&) {
      pd = {};
    }
    if (!pd) {
      pd = dnnl::concat::primitive_desc(plain_desc(out, srcs[0].data_type()), 1, srcs, eng,
                                        default_attr());
    }

    ctx.define_top(top, pd.dst_desc());
    std::vector<std::pair<int, memory>> args;
    for (size_t i = 0; i < bottoms.size(); ++i) {
      args.emplace_back(DNNL_ARG_MULTIPLE_SRC + static_cast<int>(i), inputs_[i].memory());
    }
    args.emplace_back(DNNL_ARG_DST, top->data);
    args.emplace_back(DNNL_ARG_SCRATCHPAD, ctx.scratchpad(pd));
    forward_ = BoundPrimitive(dnnl::concat(pd), std::move(args));
    describe_ = "concat " + std::string(pd.impl_info_str()) + " dst " + layout_name(pd.dst_desc());

    for (size_t i = 0; i < bottoms.size(); ++i) {
      const Blob& b = *bottoms[i];
      if (!b.needs_grad) continue;
      const memory::desc slice = top->desc().submemory_desc(b.dims(), offsets[i]);
      backward_.push_back(make_reorder(ctx.view(top->diff, slice), b.diff));
    }
  }

  void forward(bool) override {
    for (const Relayout& input : inputs_) input.run();
    forward_.run();
  }
  void backward() override {
    for (const BoundPrimitive& copy : backward_) copy.run();
  }
  std::string describe() const override { return describe_; }
  bool backward_reads_bottoms() const override { return false; }
  bool backward_reads_top() const override { return false; }

 private:
  std::vector<Relayout> inputs_;
  BoundPrimitive forward_;
  std::vector<BoundPrimitive> backward_;
  std::string describe_;
};

}  // namespace

std::unique_ptr<Layer> make_concat(const LayerSpec& spec) {
  return std::make_unique<ConcatLayer>(spec);
}

}  // namespace dptrain
