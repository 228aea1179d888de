#include "core/net.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "core/engine.h"
#include "core/error.h"
#include "core/primitive.h"
#include "core/timeline.h"

namespace dptrain {
namespace {

struct Node {
  LayerSpec spec;  // bottoms and top resolved
  std::optional<Activation> fused;
};

std::vector<Node> resolve(const NetSpec& spec);

}  // namespace

std::vector<LayerSpec> resolve_layers(const NetSpec& spec) {
  std::vector<LayerSpec> layers;
  for (Node& n : resolve(spec)) layers.push_back(std::move(n.spec));
  return layers;
}

namespace {

// Fills in the default bottoms and tops and checks that every name refers
// to a blob written earlier.
std::vector<Node> resolve(const NetSpec& spec) {
  if (spec.layer_size() == 0) throw UserError("net: has no layers");
  std::vector<Node> nodes;
  std::set<std::string> names;
  std::set<std::string> blobs = {"data", "label"};
  std::string previous = "data";
  for (const LayerSpec& layer : spec.layer()) {
    Node node{layer, std::nullopt};
    LayerSpec& s = node.spec;
    if (s.name().empty())
      throw UserError("net: layer " + std::to_string(nodes.size()) + " has no name");
    if (!names.insert(s.name()).second)
      throw UserError("net: two layers are named '" + s.name() + "'");
    if (s.bottom_size() == 0) s.add_bottom(previous);
    if (is_loss_type(s.type()) && s.bottom_size() == 1) s.add_bottom(default_loss_target(s.type()));
    if (!s.has_top()) s.set_top(s.name());
    for (const std::string& b : s.bottom()) {
      if (!blobs.count(b)) {
        throw UserError("layer '" + s.name() + "': bottom '" + b +
                        "' is not written by any earlier layer (nor is it data or label)");
      }
    }
    if (!blobs.insert(s.top()).second) {
      throw UserError("layer '" + s.name() + "': top '" + s.top() +
                      "' is already written by another layer");
    }
    previous = s.top();
    nodes.push_back(std::move(node));
  }
  return nodes;
}

std::map<std::string, int> count_consumers(const std::vector<Node>& nodes) {
  std::map<std::string, int> count;
  for (const Node& n : nodes) {
    for (const std::string& b : n.spec.bottom()) ++count[b];
  }
  return count;
}

bool can_fuse(const LayerSpec& producer, const Activation& act) {
  const std::string& t = producer.type();
  if (t == "Convolution" || t == "Deconvolution" || t == "InnerProduct") return true;
  // oneDNN's binary add takes an activation post-op; its sum does not.
  if (t == "Add") return producer.bottom_size() == 2;
  // oneDNN's batch normalization folds in a plain ReLU only.
  return t == "BatchNorm" && act.type == "ReLU";
}

// Folds activations into their producers and drops a Flatten in front of an
// InnerProduct, when the intermediate blob has no other reader.
std::vector<Node> fuse(std::vector<Node> nodes) {
  for (size_t j = 0; j < nodes.size(); ++j) {
    auto consumers = count_consumers(nodes);
    Node& n = nodes[j];
    const auto act = activation_of(n.spec);
    const bool flatten_into_ip = n.spec.type() == "InnerProduct";
    if (!act && !flatten_into_ip) continue;
    if (n.spec.bottom_size() != 1) continue;
    const std::string in = n.spec.bottom(0);
    auto producer = std::find_if(nodes.begin(), nodes.begin() + static_cast<long>(j),
                                 [&](const Node& p) { return p.spec.top() == in; });
    if (producer == nodes.begin() + static_cast<long>(j) || consumers[in] != 1) continue;
    if (act) {
      if (producer->fused || !can_fuse(producer->spec, *act)) continue;
      producer->fused = act;
      producer->spec.set_top(n.spec.top());
      nodes.erase(nodes.begin() + static_cast<long>(j));
      --j;
    } else if (producer->spec.type() == "Flatten" && producer->spec.bottom_size() == 1) {
      n.spec.set_bottom(0, producer->spec.bottom(0));
      nodes.erase(producer);
      --j;
    }
  }
  return nodes;
}

// A blob read by several layers gets a Split per reader, so that every
// gradient has exactly one writer; the Splits sum them.
std::vector<Node> insert_splits(std::vector<Node> nodes) {
  auto consumers = count_consumers(nodes);
  std::map<std::string, int> branches;
  std::vector<Node> out;
  auto add_splits = [&](const std::string& blob) {
    for (int i = 0; consumers[blob] > 1 && i < consumers[blob]; ++i) {
      Node split;
      split.spec.set_name(blob + "/split" + std::to_string(i));
      split.spec.set_type("Split");
      split.spec.add_bottom(blob);
      split.spec.set_top(split.spec.name());
      out.push_back(split);
    }
  };
  add_splits("data");
  for (Node& n : nodes) {
    for (int i = 0; i < n.spec.bottom_size(); ++i) {
      const std::string b = n.spec.bottom(i);
      if (consumers[b] > 1) n.spec.set_bottom(i, b + "/split" + std::to_string(branches[b]++));
    }
    out.push_back(n);
    add_splits(n.spec.top());
  }
  return out;
}

using Aliases = std::vector<std::pair<dnnl::memory, dnnl::memory>>;  // storage, alias of it

// The aliases with each one's storage followed to a buffer that is no
// alias (a BatchNorm's input gradient stored over its input may be an
// Add's top gradient, which its bottoms' gradients alias).
Aliases resolve(const Aliases& aliases) {
  std::map<dnnl_memory_t, dnnl::memory> storage_of;
  for (const auto& [storage, alias] : aliases) {
    if (!storage_of.emplace(alias.get(), storage).second) {
      throw std::logic_error("a buffer aliased twice");
    }
  }
  Aliases out;
  for (const auto& [storage, alias] : aliases) {
    dnnl::memory root = storage;
    for (size_t hops = 0; storage_of.count(root.get()); ++hops) {
      if (hops == aliases.size()) throw std::logic_error("aliases in a cycle");
      root = storage_of.at(root.get());
    }
    out.emplace_back(root, alias);
  }
  return out;
}

// A buffer of the arena and the span of the step that uses it, in steps of
// one layer: forward runs layer i at time i, backward at time 2L - 2 - i
// (the loss's forward and backward share a time).
struct Lifetime {
  dnnl::memory memory;
  int first, last;
};

// The span of the step that needs each arena buffer. A blob's value lives
// from its producer's forward to the last forward that reads it, and on to
// the backward of its producer or of a reader where that backward reads
// it; its gradient from the backward of its last reader to that of its
// producer (a Split branch's, whose gradient the blob's producer sums, to
// that producer's). A buffer of several blobs (a Split's top, an in-place
// gradient, a shared gradient's aliases, a gradient stored over its
// blob's values) takes the union of their spans.
std::vector<Lifetime> lifetimes(const std::vector<dnnl::memory>& arena, const Aliases& aliases,
                                const std::vector<std::unique_ptr<Layer>>& layers,
                                const std::vector<Blob*>& tops,
                                const std::map<std::string, std::unique_ptr<Blob>>& blobs) {
  const int count = static_cast<int>(layers.size());
  const int end = 2 * count - 2;
  auto backward_time = [&](int layer) { return end - layer; };
  std::vector<Lifetime> spans;
  std::map<dnnl_memory_t, size_t> index;
  std::set<dnnl_memory_t> aliased;
  for (const auto& [storage, alias] : aliases) aliased.insert(alias.get());
  for (const auto& m : arena) {
    if (aliased.count(m.get())) continue;
    if (index.emplace(m.get(), spans.size()).second) spans.push_back({m, end + 1, -1});
  }
  for (const auto& [storage, alias] : aliases) index[alias.get()] = index.at(storage.get());
  auto need = [&](const dnnl::memory& m, int first, int last) {
    if (!m) return;
    Lifetime& span = spans[index.at(m.get())];
    span.first = std::min(span.first, first);
    span.last = std::max(span.last, last);
  };
  std::map<const Blob*, std::vector<int>> readers;
  for (int i = 0; i < count; ++i) {
    for (const std::string& b : layers[static_cast<size_t>(i)]->bottom_names()) {
      readers[blobs.at(b).get()].push_back(i);
    }
  }
  for (int p = 0; p < count; ++p) {
    const Blob* top = tops[static_cast<size_t>(p)];
    int last = layers[static_cast<size_t>(p)]->backward_reads_top() ? backward_time(p) : p;
    int first_gradient = backward_time(p);
    for (int c : readers[top]) {
      const bool reads = layers[static_cast<size_t>(c)]->backward_reads_bottoms();
      last = std::max(last, reads ? backward_time(c) : c);
      first_gradient = std::min(first_gradient, backward_time(c));
    }
    need(top->data, p, last);
    need(top->diff, first_gradient, backward_time(p));
    for (const dnnl::memory& branch : top->branch_gradients) {
      need(branch, backward_time(p), backward_time(p));
    }
  }
  // The inputs, and anything no blob claims, for the whole step.
  for (Lifetime& span : spans) {
    if (span.last < 0) span = {span.memory, 0, end};
  }
  return spans;
}

// Places the buffers so that those whose spans overlap never share bytes
// (largest first, each at the lowest offset free for its span), in
// cache-line-aligned slots; returns the arena's size in bytes.
size_t place(std::vector<Lifetime>& buffers, std::vector<size_t>& offsets) {
  auto slot = [](size_t bytes) { return (bytes + 63) / 64 * 64; };
  std::vector<size_t> order(buffers.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  auto size = [&](size_t i) { return slot(buffers[i].memory.get_desc().get_size()); };
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return size(a) > size(b); });
  offsets.assign(buffers.size(), 0);
  std::vector<size_t> placed;
  size_t total = 0;
  for (size_t i : order) {
    std::vector<std::pair<size_t, size_t>> taken;  // [begin, end) of overlapping spans
    for (size_t j : placed) {
      if (buffers[j].first <= buffers[i].last && buffers[i].first <= buffers[j].last) {
        taken.emplace_back(offsets[j], offsets[j] + size(j));
      }
    }
    std::sort(taken.begin(), taken.end());
    size_t at = 0;
    for (const auto& [begin, end] : taken) {
      if (at + size(i) <= begin) break;
      at = std::max(at, end);
    }
    offsets[i] = at;
    total = std::max(total, at + size(i));
    placed.push_back(i);
  }
  return total;
}

}  // namespace

Net::Net(const NetSpec& spec, const dnnl::memory::dims& input_dims, uint64_t seed,
         ReplicaReducer* replica_reducer, BlobMemory memory, int ranks_on_host, Precision precision)
    : input_dims_(input_dims) {
  using tag = dnnl::memory::format_tag;
  using dt = dnnl::memory::data_type;
  if (precision == BF16) {
    if (!has_bf16()) {
      throw UserError("precision: BF16 needs a CPU with AVX512-BF16 or AMX; oneDNN runs " +
                      effective_isa_name() + " here (use precision: FP32)");
    }
    state_.compute_type = dt::bf16;
  }
  state_.winograd = spec.convolution_algorithm() == WINOGRAD;
  state_.seed = seed;
  state_.valid = input_dims[0];
  state_.replica_reducer = replica_reducer;

  std::vector<Node> nodes = insert_splits(fuse(resolve(spec)));
  if (!is_loss_type(nodes.back().spec.type())) {
    throw UserError(
        "net: the last layer must be the loss (SoftmaxCrossEntropy, SigmoidCrossEntropy, "
        "TripletLoss, MSELoss or L1Loss), not '" +
        nodes.back().spec.name() + "'");
  }
  auto consumers = count_consumers(nodes);
  for (const Node& n : nodes) {
    if (&n != &nodes.back() && consumers[n.spec.top()] == 0) {
      throw UserError("layer '" + n.spec.name() + "': its top '" + n.spec.top() +
                      "' is read by no later layer");
    }
  }

  // The blobs whose only reader is an Add (see SetupContext::top_gradient_shared).
  std::set<std::string> add_inputs;
  for (const Node& n : nodes) {
    if (n.spec.type() != "Add") continue;
    for (const std::string& b : n.spec.bottom()) {
      if (consumers[b] == 1) add_inputs.insert(b);
    }
  }

  SetupContext::Pending pending;
  std::map<const Blob*, const Layer*> producers;
  auto make_blob = [&](const std::string& name, bool needs_grad) {
    auto blob = std::make_unique<Blob>();
    blob->name = name;
    blob->needs_grad = needs_grad;
    Blob* raw = blob.get();
    blobs_[name] = std::move(blob);
    return raw;
  };
  Blob* data = make_blob("data", false);
  // With one channel NCHW and NHWC are the same bytes; NHWC lets the first
  // convolution's backward-weights run its fast channels-last kernel.
  const tag input_tag = input_dims[1] == 1 ? tag::nhwc : tag::nchw;
  data->data = dnnl::memory({input_dims, dt::f32, input_tag}, cpu_engine(), DNNL_MEMORY_NONE);
  Blob* label = make_blob("label", false);
  label->data = dnnl::memory({{input_dims[0]}, dt::s32, tag::a}, cpu_engine(), DNNL_MEMORY_NONE);
  pending.arena = {data->data, label->data};

  for (Node& n : nodes) {
    std::unique_ptr<Layer> layer = create_layer(n.spec);
    if (n.fused && !layer->fuse_activation(*n.fused)) {
      throw std::logic_error("layer refused a fusion it was offered: " + n.spec.name());
    }
    std::vector<Blob*> bottoms;
    bool any_bottom_grad = false;
    for (const std::string& b : n.spec.bottom()) {
      bottoms.push_back(blobs_.at(b).get());
      any_bottom_grad |= bottoms.back()->needs_grad;
    }
    const bool is_loss = &n == &nodes.back();
    const bool params = layer_has_params(n.spec.type());
    Blob* top = make_blob(n.spec.top(), !is_loss && (params || any_bottom_grad));
    layer->bottom_names_.assign(n.spec.bottom().begin(), n.spec.bottom().end());
    layer->top_name_ = n.spec.top();

    Neighbours neighbours;
    neighbours.top_gradient_shared = add_inputs.count(n.spec.top()) > 0;
    for (const Blob* b : bottoms) {
      auto producer = producers.find(b);
      if (consumers[b->name] != 1 || producer == producers.end() ||
          producer->second->backward_reads_top()) {
        continue;
      }
      const auto same_storage = std::count_if(blobs_.begin(), blobs_.end(), [&](const auto& kv) {
        return kv.second->data.get(true) == b->data.get(true);
      });
      if (same_storage == 1) neighbours.overwritable.push_back(b);
    }
    SetupContext ctx(state_, store_, n.spec.name(), std::move(neighbours));
    layer->setup(bottoms, top, ctx);
    auto& p = ctx.pending();
    pending.arena.insert(pending.arena.end(), p.arena.begin(), p.arena.end());
    pending.views.insert(pending.views.end(), p.views.begin(), p.views.end());
    pending.aliases.insert(pending.aliases.end(), p.aliases.begin(), p.aliases.end());
    pending.scratchpads.insert(pending.scratchpads.end(), p.scratchpads.begin(),
                               p.scratchpads.end());
    pending.scratchpad_bytes = std::max(pending.scratchpad_bytes, p.scratchpad_bytes);

    runs_backward_.push_back(params || any_bottom_grad);
    producers[top] = layer.get();
    tops_.push_back(top);
    layers_.push_back(std::move(layer));
  }
  loss_ = dynamic_cast<LossLayer*>(layers_.back().get());

  const Aliases aliases = resolve(pending.aliases);
  std::vector<Lifetime> buffers = lifetimes(pending.arena, aliases, layers_, tops_, blobs_);
  if (memory == BlobMemory::kKeepAll) {
    for (Lifetime& b : buffers) b = {b.memory, 0, std::numeric_limits<int>::max()};
  }
  std::vector<size_t> offsets;
  const size_t arena_bytes = place(buffers, offsets);
  check_fits_in_memory(arena_bytes + pending.scratchpad_bytes, ranks_on_host);
  arena_ = AlignedFloats(arena_bytes / sizeof(float));
  char* base = reinterpret_cast<char*>(arena_.data());
  for (size_t i = 0; i < buffers.size(); ++i) buffers[i].memory.set_data_handle(base + offsets[i]);
  for (const auto& [storage, alias] : aliases) alias.set_data_handle(storage.get_data_handle());
  for (auto& [from, view] : pending.views) view.set_data_handle(from.get_data_handle());
  scratchpad_ = AlignedFloats((pending.scratchpad_bytes + 3) / 4);
  for (auto& m : pending.scratchpads) m.set_data_handle(scratchpad_.data());
  store_.allocate(seed);
}

Layer::Work Net::work() const {
  Layer::Work total;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer::Work w = layers_[i]->work();
    total.forward += w.forward;
    if (runs_backward_[i]) total.backward += w.backward;
  }
  return total;
}

void Net::set_input(const float* images, const int32_t* labels, int64_t valid) {
  blobs_.at("data")->data.set_data_handle(const_cast<float*>(images));
  blobs_.at("label")->data.set_data_handle(const_cast<int32_t*>(labels));
  state_.valid = valid;
}

void Net::forward(bool training) {
  Timeline* t = state_.timeline && state_.timeline->recording() ? state_.timeline : nullptr;
  for (auto& layer : layers_) {
    const int64_t start = t ? Timeline::now_us() : 0;
    layer->forward(training);
    if (t) {
      cpu_stream().wait();
      t->step_span("forward", layer->name().c_str(), start, Timeline::now_us());
    }
  }
  cpu_stream().wait();
}

void Net::backward(const GradsFinal* on_grads_final) {
  size_t final_from = store_.size();
  for (size_t i = layers_.size(); i-- > 0;) {
    if (!runs_backward_[i]) continue;
    Layer& layer = *layers_[i];
    Timeline* t = state_.timeline && state_.timeline->recording() ? state_.timeline : nullptr;
    const int64_t start = t ? Timeline::now_us() : 0;
    layer.backward();
    if (t) {
      cpu_stream().wait();
      t->step_span("backward", layer.name().c_str(), start, Timeline::now_us());
    }
    if (!layer.params().empty()) final_from = layer.params().front()->offset;
    // Called after every layer, also those without parameters: each call is
    // a chance for the reducer to move communication along.
    if (on_grads_final) {
      cpu_stream().wait();
      (*on_grads_final)(final_from);
    }
  }
  cpu_stream().wait();
}

namespace {

// What the kernel says could be allocated now without swapping (0 if it
// does not say).
size_t available_memory_bytes() {
  std::ifstream in("/proc/meminfo");
  for (std::string key; in >> key;) {
    size_t kb = 0;
    std::string unit;
    in >> kb >> unit;
    if (key == "MemAvailable:") return kb * 1024;
  }
  return 0;
}

std::string gigabytes(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GB", bytes / 1e9);
  return buf;
}

}  // namespace

void Net::check_fits_in_memory(size_t activation_bytes, int ranks_on_host) const {
  // Each parameter float has a value, a gradient and up to two optimizer
  // moments, and the gradient reducer may bank another copy.
  constexpr double kBytesPerParam = 5 * sizeof(float);
  double params = 0;
  double worst = 0;
  size_t worst_layer = 0;
  for (size_t i = 0; i < layers_.size(); ++i) {
    double p = 0;
    for (const Param* param : layers_[i]->params()) p += static_cast<double>(param->size);
    params += p;
    const double top = static_cast<double>(tops_[i]->data.get_desc().get_size());
    const double need = top * (tops_[i]->needs_grad ? 2 : 1) + p * kBytesPerParam;
    if (need > worst) {
      worst = need;
      worst_layer = i;
    }
  }
  const double total = static_cast<double>(activation_bytes) + params * kBytesPerParam;
  const size_t available =
      available_memory_bytes() / static_cast<size_t>(std::max(1, ranks_on_host));
  if (available == 0 || total <= static_cast<double>(available)) return;
  const Layer& l = *layers_[worst_layer];
  throw UserError("net: needs about " + gigabytes(total) + " of memory but " +
                  gigabytes(static_cast<double>(available)) + " are available" +
                  (ranks_on_host > 1
                       ? " to each of the " + std::to_string(ranks_on_host) + " ranks on this host"
                       : std::string()) +
                  "; layer '" + l.name() + "' (" + l.type() + ") alone needs " + gigabytes(worst) +
                  " for its outputs, their gradients, its parameters and their optimizer state");
}

const Blob& Net::blob(const std::string& name) const {
  auto it = blobs_.find(name);
  if (it == blobs_.end()) throw UserError("net: no blob named '" + name + "'");
  return *it->second;
}

std::string Net::summary() const {
  std::ostringstream out;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = *layers_[i];
    const auto md = tops_[i]->desc();
    out << l.name() << " (" << l.type() << (l.fused().empty() ? "" : "+" + l.fused()) << ") -> "
        << dims_text(md.dims()) << " " << layout_name(md);
    const std::string d = l.describe();
    if (!d.empty()) out << "  " << d;
    out << "\n";
  }
  out << "parameters: " << store_.size() << " floats in " << store_.params().size()
      << " tensors; activations: " << arena_bytes() / 1024 << " KiB";
  return out.str();
}

}  // namespace dptrain
