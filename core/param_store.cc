#include "core/param_store.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <set>

#include "core/engine.h"
#include "core/error.h"
#include "core/primitive.h"
#include "core/random.h"

namespace dptrain {
namespace {

std::vector<float> initial_values(const ParamInit& init, size_t count, uint64_t seed) {
  std::vector<float> v(count, init.kind == ParamInit::Kind::kOne ? 1.f : 0.f);
  if (init.kind != ParamInit::Kind::kRandom) return v;
  Rng rng(seed);
  // He: variance 2/fan_in (keeps ReLU activations' scale); Xavier: 2/(fan_in + fan_out).
  const bool he = init.rule == HE_NORMAL || init.rule == HE_UNIFORM;
  const double variance = he ? 2.0 / static_cast<double>(init.fan_in)
                             : 2.0 / static_cast<double>(init.fan_in + init.fan_out);
  if (init.rule == HE_NORMAL || init.rule == XAVIER_NORMAL) {
    const auto stddev = static_cast<float>(std::sqrt(variance));
    for (float& x : v) x = stddev * rng.normal();
  } else {
    const auto a = static_cast<float>(std::sqrt(3.0 * variance));  // Uniform(-a, a)
    for (float& x : v) x = a * (2.f * rng.uniform() - 1.f);
  }
  return v;
}

void copy_in(const Param& p, const float* plain, float* to = nullptr) {
  dnnl::memory src(p.plain_desc, cpu_engine(), const_cast<float*>(plain));
  if (to) {
    dnnl::memory dst(p.value.get_desc(), cpu_engine(), to + p.offset);
    make_reorder(src, dst).run();
  } else {
    make_reorder(src, p.value).run();
  }
  cpu_stream().wait();
}

// p's slice of a buffer laid out like the store, as a plain tensor.
void copy_out(const Param& p, const float* from, NamedTensor* t, const std::string& name) {
  dnnl::memory plain(p.plain_desc, cpu_engine());
  dnnl::memory src(p.value.get_desc(), cpu_engine(), const_cast<float*>(from) + p.offset);
  make_reorder(src, plain).run();
  cpu_stream().wait();
  t->set_name(name);
  for (auto d : p.export_dims) t->add_dims(d);
  // x86-64 is little-endian, the file's byte order.
  t->set_data(plain.get_data_handle(), p.plain_desc.get_size());
}

bool same_shape(const NamedTensor& t, const Param& p) {
  const std::vector<int64_t> dims(t.dims().begin(), t.dims().end());
  return dims == p.export_dims && t.data().size() == p.plain_desc.get_size();
}

}  // namespace

Param* ParamStore::add(bool trainable, std::string name, const dnnl::memory::desc& plain_desc,
                       const dnnl::memory::desc& desc, dnnl::memory::dims export_dims,
                       ParamInit init) {
  auto p = std::make_unique<Param>();
  p->name = std::move(name);
  p->plain_desc = plain_desc;
  p->export_dims = std::move(export_dims);
  p->value = dnnl::memory(desc, cpu_engine(), DNNL_MEMORY_NONE);
  if (trainable) p->grad = dnnl::memory(desc, cpu_engine(), DNNL_MEMORY_NONE);
  p->init = init;
  p->size = desc.get_size() / sizeof(float);
  auto& list = trainable ? params_ : buffers_;
  list.push_back(std::move(p));
  return list.back().get();
}

void ParamStore::allocate(uint64_t seed) {
  auto place = [](std::vector<std::unique_ptr<Param>>& list) {
    size_t offset = 0;
    for (auto& p : list) {
      p->offset = offset;
      offset += AlignedFloats::whole_lines(p->size);
    }
    return offset;
  };
  values_ = AlignedFloats(place(params_));
  grads_ = AlignedFloats(values_.size());
  buffer_values_ = AlignedFloats(place(buffers_));
  for (auto& p : params_) {
    p->value.set_data_handle(values_.data() + p->offset);
    p->grad.set_data_handle(grads_.data() + p->offset);
  }
  for (auto& p : buffers_) p->value.set_data_handle(buffer_values_.data() + p->offset);

  // Each tensor draws from its own stream, keyed by its position, so adding
  // a layer at the end leaves the others' initial values unchanged.
  uint64_t index = 0;
  for (auto* list : {&params_, &buffers_}) {
    for (auto& p : *list) {
      const size_t count = p->plain_desc.get_size() / sizeof(float);
      auto v = initial_values(p->init, count, derive_seed(seed, RandomStream::kInit, index++));
      copy_in(*p, v.data());
    }
  }
}

WeightsFile ParamStore::export_weights() const {
  WeightsFile file;
  for (const auto& p : params_) copy_out(*p, values_.data(), file.add_tensor(), p->name);
  for (const auto& p : buffers_) copy_out(*p, buffer_values_.data(), file.add_tensor(), p->name);
  return file;
}

void ParamStore::import_weights(const WeightsFile& file, const std::string& source) {
  const size_t expected = params_.size() + buffers_.size();
  if (static_cast<size_t>(file.tensor_size()) != expected) {
    throw UserError(source + ": holds " + std::to_string(file.tensor_size()) +
                    " tensors, the net has " + std::to_string(expected));
  }
  int i = 0;
  for (auto* list : {&params_, &buffers_}) {
    for (auto& p : *list) {
      const NamedTensor& t = file.tensor(i++);
      if (t.name() != p->name || !same_shape(t, *p)) {
        throw UserError(source + ": tensor " + std::to_string(i - 1) + " is '" + t.name() +
                        "' of a different shape or size than the net's '" + p->name + "'");
      }
      copy_in(*p, reinterpret_cast<const float*>(t.data().data()));
    }
  }
}

void ParamStore::import_by_name(const WeightsFile& file, const std::string& source,
                                const std::vector<std::string>& reinit) {
  std::map<std::string, const NamedTensor*> by_name;
  for (const NamedTensor& t : file.tensor()) by_name[t.name()] = &t;
  std::set<std::string> unused(reinit.begin(), reinit.end());
  for (auto* list : {&params_, &buffers_}) {
    for (auto& p : *list) {
      const std::string layer = p->name.substr(0, p->name.rfind('.'));
      if (std::find(reinit.begin(), reinit.end(), layer) != reinit.end()) {
        unused.erase(layer);
        continue;
      }
      const auto it = by_name.find(p->name);
      if (it == by_name.end()) {
        throw UserError(source + " has no tensor '" + p->name + "' (the net's, " +
                        dims_text(p->export_dims) + "); pass --reinit " + layer +
                        " to start that layer afresh");
      }
      const NamedTensor& t = *it->second;
      if (!same_shape(t, *p)) {
        throw UserError(source + ": tensor '" + p->name + "' is " +
                        dims_text({t.dims().begin(), t.dims().end()}) + ", the net's is " +
                        dims_text(p->export_dims) + "; pass --reinit " + layer +
                        " to start that layer afresh");
      }
      copy_in(*p, reinterpret_cast<const float*>(t.data().data()));
    }
  }
  if (!unused.empty())
    throw UserError("--reinit " + *unused.begin() + ": the net has no such layer with parameters");
}

void ParamStore::export_state(const float* flat, const std::string& suffix,
                              google::protobuf::RepeatedPtrField<NamedTensor>* out) const {
  for (const auto& p : params_) copy_out(*p, flat, out->Add(), p->name + "/" + suffix);
}

void ParamStore::import_state(const google::protobuf::RepeatedPtrField<NamedTensor>& tensors,
                              const std::string& suffix, float* flat,
                              const std::string& source) const {
  std::map<std::string, const NamedTensor*> by_name;
  for (const NamedTensor& t : tensors) by_name[t.name()] = &t;
  for (const auto& p : params_) {
    const std::string name = p->name + "/" + suffix;
    const auto it = by_name.find(name);
    if (it == by_name.end() || !same_shape(*it->second, *p)) {
      throw UserError(source + ": optimizer state '" + name + "' is missing or misshapen");
    }
    copy_in(*p, reinterpret_cast<const float*>(it->second->data().data()), flat);
  }
}

}  // namespace dptrain
