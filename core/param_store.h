// All trainable parameters of a net in one flat float buffer, and their
// gradients in another of the same length, so that optimizers and the
// gradient reducer work on plain ranges. Each parameter is stored in the
// layout its primitive chose (possibly blocked with zero padding); plain
// layouts (OIHW, OI, C) appear only in export and import.
//
// Non-trainable state (BatchNorm running statistics) lives in a second
// store of "buffers" with no gradients.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "core/aligned_array.h"
#include "core/dptrain.pb.h"

namespace dptrain {

struct ParamInit {
  enum class Kind { kZero, kOne, kRandom };
  Kind kind = Kind::kZero;
  WeightInit rule = HE_NORMAL;
  int64_t fan_in = 1;
  int64_t fan_out = 1;
};

struct Param {
  std::string name;                // "<layer>.<suffix>"
  dnnl::memory::desc plain_desc;   // user-facing layout
  dnnl::memory::dims export_dims;  // shape written to weight files
  dnnl::memory value;              // primitive's layout, inside the store
  dnnl::memory grad;               // same layout; null for buffers
  ParamInit init;
  size_t offset = 0;  // in floats, into the store
  size_t size = 0;    // floats, including layout padding
};

class ParamStore {
 public:
  // Declares a parameter; its memories get storage at allocate().
  Param* add(bool trainable, std::string name, const dnnl::memory::desc& plain_desc,
             const dnnl::memory::desc& desc, dnnl::memory::dims export_dims, ParamInit init);
  // Gives every declared parameter its place and fills it from the seed.
  void allocate(uint64_t seed);

  const std::vector<std::unique_ptr<Param>>& params() const { return params_; }
  const std::vector<std::unique_ptr<Param>>& buffers() const { return buffers_; }
  float* values() const { return values_.data(); }
  float* grads() const { return grads_.data(); }
  size_t size() const { return values_.size(); }
  float* buffer_values() const { return buffer_values_.data(); }
  size_t buffer_size() const { return buffer_values_.size(); }

  // Parameters then buffers, in declaration order, in plain layouts.
  WeightsFile export_weights() const;
  // Loads weights written by export_weights(); names, order and shapes must
  // match. `source` names the file for error messages.
  void import_weights(const WeightsFile& file, const std::string& source);
  // Loads tensors by name (fine-tuning): every parameter and buffer must be
  // in `file` with its shape, except those of the layers in `reinit`, which
  // keep their initial values. Throws UserError naming the tensor.
  void import_by_name(const WeightsFile& file, const std::string& source,
                      const std::vector<std::string>& reinit);

  // A buffer laid out like values() (optimizer state), as one plain tensor
  // per parameter named "<param>/<suffix>", and back. import_state throws
  // UserError naming a missing or misshapen tensor.
  void export_state(const float* flat, const std::string& suffix,
                    google::protobuf::RepeatedPtrField<NamedTensor>* out) const;
  void import_state(const google::protobuf::RepeatedPtrField<NamedTensor>& tensors,
                    const std::string& suffix, float* flat, const std::string& source) const;

 private:
  std::vector<std::unique_ptr<Param>> params_;
  std::vector<std::unique_ptr<Param>> buffers_;
  AlignedFloats values_, grads_, buffer_values_;
};

}  // namespace dptrain
