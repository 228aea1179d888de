// A net built from a NetSpec for one fixed input shape: the layer graph
// (walkable, in execution order), its blobs, and its parameters in one flat
// store. Owns every primitive and every byte it runs on; forward() and
// backward() allocate nothing. The blobs live in one arena, planned from
// when each value and gradient is needed in a step, so that a net needs
// little more memory than the values its backward reads (BlobMemory).
//
// Building also rewrites the graph for speed: an activation that follows a
// Convolution or InnerProduct (or a ReLU after BatchNorm) is fused into it,
// a Flatten in front of an InnerProduct is dropped (it reads any layout),
// and a blob read by several layers gets a Split whose backward sums their
// gradients.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/layer.h"
#include "core/param_store.h"

namespace dptrain {

// The layers of `spec` as written, each with its bottoms and top filled in
// (the first reads "data", a loss its default target); UserError for a
// name that refers to no earlier blob.
std::vector<LayerSpec> resolve_layers(const NetSpec& spec);

class Net {
 public:
  // How blobs get their bytes. kReuse: blobs whose lifetimes in a step do
  // not overlap share them, so a blob's value (or gradient) is readable
  // only while forward and backward still need it. kKeepAll: each blob
  // has bytes of its own and stays readable after the step (inspection,
  // tests), except a gradient a layer's backward overwrites in place
  // (BatchNorm's output gradient becomes its input's) and the values a
  // layer's backward writes a gradient over (a channels-last BatchNorm's
  // input, whose gradient an Add shares: see store_gradient_over_values).
  enum class BlobMemory { kReuse, kKeepAll };

  // input_dims: {N, C, H, W} of the batch one replica sees.
  // ranks_on_host: the processes sharing this host's memory, each with a
  // net like this one (the memory check gives each its share).
  // precision BF16 needs has_bf16() (UserError otherwise).
  Net(const NetSpec& spec, const dnnl::memory::dims& input_dims, uint64_t seed,
      ReplicaReducer* replica_reducer = nullptr, BlobMemory memory = BlobMemory::kReuse,
      int ranks_on_host = 1, Precision precision = FP32);

  // Points the inputs at a batch (NCHW floats, N labels); only the first
  // `valid` samples count in the loss and the metrics.
  void set_input(const float* images, const int32_t* labels, int64_t valid);

  void forward(bool training);
  // Called after each layer's backward with the offset into the gradient
  // store from which on all gradients are final (they fill up from the end).
  using GradsFinal = std::function<void(size_t offset)>;
  void backward(const GradsFinal* on_grads_final = nullptr);

  NetState& state() { return state_; }
  ParamStore& params() { return store_; }
  const ParamStore& params() const { return store_; }
  const std::vector<std::unique_ptr<Layer>>& layers() const { return layers_; }
  // Whether backward() runs layer i's backward (some gradient flows through it).
  bool runs_backward(size_t i) const { return runs_backward_[i]; }
  // After forward, a blob an Add wrote over (SetupContext::define_top's
  // `over`) holds the Add's output; the net's outputs are never such.
  const Blob& blob(const std::string& name) const;
  const LossLayer& loss_layer() const { return *loss_; }
  const dnnl::memory::dims& input_dims() const { return input_dims_; }

  // One line per layer: type, top shape and layout, primitive choices.
  std::string summary() const;
  size_t arena_bytes() const { return arena_.size() * sizeof(float); }
  // The multiply-adds of one forward and one backward over the batch.
  Layer::Work work() const;

 private:
  // Refuses (UserError naming the hungriest layer and the bytes) a net
  // whose arena, parameters and optimizer state would not fit in the
  // memory available, before anything is allocated.
  void check_fits_in_memory(size_t activation_bytes, int ranks_on_host) const;
  dnnl::memory::dims input_dims_;
  NetState state_;
  ParamStore store_;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::vector<bool> runs_backward_;
  std::map<std::string, std::unique_ptr<Blob>> blobs_;
  std::vector<Blob*> tops_;
  LossLayer* loss_ = nullptr;
  AlignedFloats arena_;
  AlignedFloats scratchpad_;
};

}  // namespace dptrain
