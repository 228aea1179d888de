// The layer interface. A layer reads its bottom blobs and writes one top
// blob; it creates its oneDNN primitives once in setup() for the shapes and
// layouts it is given and only executes them in forward() and backward().
//
// Adding a layer: a message in dptrain.proto if it has options, one .cc in
// core/layers/, one line in core/layers/registry.cc, one gradient test.
#pragma once

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "core/blob.h"
#include "core/dptrain.pb.h"
#include "core/param_store.h"
#include "core/primitive.h"

namespace dptrain {

class Timeline;

// What a layer sees of the other replicas of the net: sums of small
// arrays (synchronized BatchNorm) and every replica's rows of a batch
// (the triplet loss's global mining). core knows nothing of MPI; dist
// provides the implementation.
class ReplicaReducer {
 public:
  virtual ~ReplicaReducer() = default;
  virtual void sum(double* data, size_t count) = 0;
  virtual int replicas() const = 0;
  // This replica's place in the global batch: 0 .. replicas() - 1.
  virtual int replica() const { return 0; }
  // Every replica's `bytes` (the same size on all), in replica order, into
  // `all` (bytes * replicas()).
  virtual void gather(const void* local, size_t bytes, void* all);
};

// Net-wide values layers read while running.
struct NetState {
  // The type of activations and of the weights' copies the primitives read
  // (f32, or bf16 with precision BF16); master weights and gradients of
  // parameters are always f32.
  dnnl::memory::data_type compute_type = dnnl::memory::data_type::f32;
  // net.convolution_algorithm is WINOGRAD.
  bool winograd = false;
  uint64_t seed = 0;
  int64_t step = 0;           // the optimizer step: keys dropout masks
  int64_t sample_offset = 0;  // position of the batch's first sample in the
                              // global batch: keys dropout masks
  int64_t valid = 0;          // real samples in the batch; the rest is padding
  float loss_scale = 1.f;     // multiplies the loss gradient (accumulation)
  // false: a forward for the net's outputs only; the loss layer fills its
  // scores and skips the loss (an embedding gallery needs no triplets).
  bool compute_loss = true;
  ReplicaReducer* replica_reducer = nullptr;
  Timeline* timeline = nullptr;  // per-layer spans when recording
};

// An elementwise activation as oneDNN runs it: forward algorithm, and the
// backward variant that needs only the output (so it can be fused into the
// producer as a post-op and run in place).
struct Activation {
  dnnl::algorithm forward;
  dnnl::algorithm backward;
  float alpha = 0.f;
  std::string type;
};
// The activation a layer spec describes, or nothing if it is not one.
std::optional<Activation> activation_of(const LayerSpec& spec);

// What the net knows of a layer's neighbours when it sets the layer up.
struct Neighbours {
  // The top's only reader is an Add, which shares its gradient with the
  // other branches when the top's gradient is shareable: a layer that would
  // write its input gradient over its top's had better not.
  bool top_gradient_shared = false;
  // Bottoms whose values nothing reads after this layer's forward (their
  // only reader, their storage their own, their producer's backward not
  // reading them): the top may be written over one of them.
  std::vector<const Blob*> overwritable;
};

class SetupContext {
 public:
  SetupContext(const NetState& state, ParamStore& store, const std::string& layer_name,
               Neighbours neighbours = {})
      : state_(state), store_(store), layer_name_(layer_name), neighbours_(std::move(neighbours)) {}

  const NetState& state() const { return state_; }
  bool top_gradient_shared() const { return neighbours_.top_gradient_shared; }
  bool may_overwrite(const Blob& bottom) const {
    const auto& o = neighbours_.overwritable;
    return std::find(o.begin(), o.end(), &bottom) != o.end();
  }

  // Gives `top` the layout `md`; its storage comes from the net's arena,
  // held only while a forward or backward needs it. With `in_place_of`,
  // the top's gradient is that blob's (same layout): for a backward that
  // overwrites the gradient it reads.
  // With `over` (a bottom the layer may overwrite, same layout), the top's
  // values are written over that bottom's.
  void define_top(Blob* top, const dnnl::memory::desc& md, const Blob* in_place_of = nullptr,
                  const Blob* over = nullptr);
  // `top` with the same storage as `bottom` (a Split's branch, or a bottom
  // the layer may overwrite); its gradient stays separate unless
  // share_gradient, when it is the bottom's too.
  void share_top(Blob* top, const Blob& bottom, bool share_gradient = false);
  // The gradient of `bottom` (gradient_shareable, same layout) becomes the
  // storage of `top`'s: what the top's gradient holds after this layer's
  // backward is the bottom's.
  void share_gradient(Blob* bottom, const Blob& top);
  // The gradient of `bottom` (one this layer may overwrite, its gradient
  // in its values' layout) stored over its values: for a backward that
  // reads them and writes the gradient elementwise, the gradient's lines
  // already in cache. Nothing may read the values after this layer's
  // backward.
  void store_gradient_over_values(Blob* bottom);
  // Declares a trainable parameter (or, with trainable=false, a buffer).
  Param* add_param(const std::string& suffix, const dnnl::memory::desc& plain_desc,
                   const dnnl::memory::desc& desc, dnnl::memory::dims export_dims, ParamInit init,
                   bool trainable = true);
  // The shared scratchpad, viewed with this primitive's scratchpad layout.
  dnnl::memory scratchpad(const dnnl::primitive_desc_base& pd);
  // A memory with layout `md` over `base`'s storage (a sub-tensor view).
  dnnl::memory view(const dnnl::memory& base, const dnnl::memory::desc& md);

  // Filled in by the net and read back when it allocates.
  struct Pending {
    std::vector<dnnl::memory> arena;
    std::vector<std::pair<dnnl::memory, dnnl::memory>> views;    // base, view
    std::vector<std::pair<dnnl::memory, dnnl::memory>> aliases;  // storage, alias of it
    std::vector<dnnl::memory> scratchpads;
    size_t scratchpad_bytes = 0;
  };
  Pending& pending() { return pending_; }

 private:
  const NetState& state_;
  ParamStore& store_;
  std::string layer_name_;
  Neighbours neighbours_;
  Pending pending_;
};

// The gradient of an activation fused into the layer that writes `top`,
// from the activated output alone, in place on the top's gradient.
BoundPrimitive fused_activation_backward(const Activation& act, const Blob& top, SetupContext& ctx);

class Layer {
 public:
  explicit Layer(const LayerSpec& spec) : spec_(spec) {}
  virtual ~Layer() = default;
  Layer(const Layer&) = delete;
  Layer& operator=(const Layer&) = delete;

  const std::string& name() const { return spec_.name(); }
  const std::string& type() const { return spec_.type(); }
  const LayerSpec& spec() const { return spec_; }

  // Validates the shapes it is given (UserError naming the layer), creates
  // primitives, declares parameters and defines `top`.
  virtual void setup(const std::vector<Blob*>& bottoms, Blob* top, SetupContext& ctx) = 0;
  virtual void forward(bool training) = 0;
  // Writes the gradients of the bottoms that need one, and of the params.
  virtual void backward() = 0;

  // Takes over a following activation as a post-op; true if it did. Called
  // before setup().
  virtual bool fuse_activation(const Activation&) { return false; }
  // One line on the primitives chosen (implementations and layouts).
  virtual std::string describe() const { return ""; }
  // Whether backward reads the values of the bottoms, or of the top. Where
  // it reads neither, their bytes serve other blobs once forward is past.
  virtual bool backward_reads_bottoms() const { return true; }
  virtual bool backward_reads_top() const { return true; }
  // Multiply-adds of convolutions and inner products (the work FLOP/s
  // figures count) for the whole batch: one forward, and one backward
  // (backward-weights, plus backward-data where the bottom needs it).
  struct Work {
    int64_t forward = 0;
    int64_t backward = 0;
  };
  virtual Work work() const { return {}; }

  const std::vector<Param*>& params() const { return params_; }
  const std::vector<std::string>& bottom_names() const { return bottom_names_; }
  const std::string& top_name() const { return top_name_; }
  const std::string& fused() const { return fused_; }

 protected:
  std::string error_prefix() const { return "layer '" + name() + "' (" + type() + "): "; }
  void check_bottoms(const std::vector<Blob*>& bottoms, size_t count) const;
  void check_rank(const Blob& bottom, std::initializer_list<int> ranks) const;

  LayerSpec spec_;
  std::vector<Param*> params_;
  std::string fused_;  // type of a fused activation, for describe()

 private:
  friend class Net;
  std::vector<std::string> bottom_names_;
  std::string top_name_;
};

// Every layer type by name. Throws UserError for an unknown type.
std::unique_ptr<Layer> create_layer(const LayerSpec& spec);
// Whether layers of this type hold trainable parameters.
bool layer_has_params(const std::string& type);
std::vector<std::string> layer_types();

}  // namespace dptrain

namespace dptrain {

// The last layer of every net: turns its input and the labels into a loss
// and seeds the gradient in backward().
class LossLayer : public Layer {
 public:
  using Layer::Layer;
  // What the net computes: class scores (SoftmaxCrossEntropy), the
  // probability of label 1 (SigmoidCrossEntropy), an embedding
  // (TripletLoss), whose labels only say which samples belong together, or
  // a reconstruction of its input (MSELoss, L1Loss), which reads no labels.
  enum class Kind { kClassifier, kBinary, kEmbedding, kReconstruction };
  virtual Kind kind() const = 0;
  // The loss of the last forward (its mean over the valid samples, or the
  // triplet loss's own normalisation).
  virtual float loss() const = 0;
  // Valid samples whose prediction equals the label (0 for embeddings).
  virtual int64_t correct() const = 0;
  // The predicted class per sample (padding rows included; zeros for
  // embeddings).
  virtual const std::vector<int32_t>& predictions() const = 0;
  // The classes labels range over (2 for kBinary, 0 for kEmbedding: any).
  virtual int classes() const = 0;
  // score_width() floats per sample of the last forward (padding rows
  // included): class probabilities, the probability of label 1, the
  // embedding, or the squared error per channel.
  virtual const float* scores() const = 0;
  virtual int score_width() const = 0;
  // kEmbedding: the fraction of mined triplets with a positive loss in the
  // last forward.
  virtual double active_fraction() const { return 0; }

 protected:
  // A loss reads the labels as its second bottom.
  void check_label_bottom(const Blob& bottom) const;
};

// Whether a layer type is a loss (the last layer of a net), and the blob it
// reads besides the net's output unless told: "label", or "data" for the
// reconstruction losses.
bool is_loss_type(const std::string& type);
std::string default_loss_target(const std::string& type);

}  // namespace dptrain
