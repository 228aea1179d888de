#include "core/param_store.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

#include "core/engine.h"
#include "core/error.h"
#include "core/primitive.h"
#include "core/random.h"

namespace dptrain {
namespace {

constexpr size_t kAlignFloats = 16;  // 64 bytes: a cache line, an AVX-512 vector

size_t round_up(size_t n) { return (n + kAlignFloats - 1) / kAlignFloats * kAlignFloats; }

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

void copy_in(const Param& p, const float* plain) {
  dnnl::memory src(p.plain_desc, cpu_engine(), const_cast<float*>(plain));
  make_reorder(src, p.value).run();
  cpu_stream().wait();
}

}  // namespace

AlignedFloats::AlignedFloats(size_t n) : size_(n) {
  void* p = nullptr;
  if (posix_memalign(&p, 64, std::max<size_t>(n, 1) * sizeof(float)) != 0) throw std::bad_alloc();
  std::memset(p, 0, std::max<size_t>(n, 1) * sizeof(float));
  data_.reset(static_cast<float*>(p));
}

void AlignedFloats::Free::operator()(float* p) const { std::free(p); }

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
      offset += round_up(p->size);
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
  for (const auto* list : {&params_, &buffers_}) {
    for (const auto& p : *list) {
      dnnl::memory plain(p->plain_desc, cpu_engine());
      make_reorder(p->value, plain).run();
      cpu_stream().wait();
      NamedTensor* t = file.add_tensor();
      t->set_name(p->name);
      for (auto d : p->export_dims) t->add_dims(d);
      // x86-64 is little-endian, the file's byte order.
      t->set_data(plain.get_data_handle(), p->plain_desc.get_size());
    }
  }
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
      std::vector<int64_t> dims(t.dims().begin(), t.dims().end());
      if (t.name() != p->name || dims != p->export_dims ||
          t.data().size() != p->plain_desc.get_size()) {
        throw UserError(source + ": tensor " + std::to_string(i - 1) + " is '" + t.name() +
                        "' of a different shape or size than the net's '" + p->name + "'");
      }
      copy_in(*p, reinterpret_cast<const float*>(t.data().data()));
    }
  }
}

}  // namespace dptrain
