#include <functional>
#include <map>

#include "core/error.h"
#include "core/layers/layers.h"

namespace dptrain {
namespace {

struct Entry {
  std::function<std::unique_ptr<Layer>(const LayerSpec&)> make;
  bool has_params;
};

const std::map<std::string, Entry>& registry() {
  static const std::map<std::string, Entry> table = {
      {"Convolution", {make_convolution, true}},
      {"Deconvolution", {make_deconvolution, true}},
      {"MaxPool", {make_pooling, false}},
      {"AvgPool", {make_pooling, false}},
      {"GlobalMaxPool", {make_pooling, false}},
      {"GlobalAvgPool", {make_pooling, false}},
      {"ChannelMean", {make_channel_reduce, false}},
      {"ChannelMax", {make_channel_reduce, false}},
      {"Mul", {make_mul, false}},
      {"InnerProduct", {make_inner_product, true}},
      {"ReLU", {make_activation, false}},
      {"LeakyReLU", {make_activation, false}},
      {"ELU", {make_activation, false}},
      {"Sigmoid", {make_activation, false}},
      {"Tanh", {make_activation, false}},
      {"BatchNorm", {make_batch_norm, true}},
      {"Dropout", {make_dropout, false}},
      {"Flatten", {make_flatten, false}},
      {"Add", {make_add, false}},
      {"Concat", {make_concat, false}},
      {"L2Normalize", {make_l2_normalize, false}},
      {"SoftmaxCrossEntropy", {make_softmax_cross_entropy, false}},
      {"SigmoidCrossEntropy", {make_sigmoid_cross_entropy, false}},
      {"TripletLoss", {make_triplet_loss, false}},
      {"MSELoss", {make_reconstruction_loss, false}},
      {"L1Loss", {make_reconstruction_loss, false}},
      {"Split", {make_split, false}},  // inserted by the net, not for configs
  };
  return table;
}

}  // namespace

std::vector<std::string> layer_types() {
  std::vector<std::string> names;
  for (const auto& [name, entry] : registry()) {
    if (name != "Split") names.push_back(name);
  }
  return names;
}

std::unique_ptr<Layer> create_layer(const LayerSpec& spec) {
  auto it = registry().find(spec.type());
  if (it == registry().end() ||
      (spec.type() == "Split" && spec.name().find('/') == std::string::npos)) {
    std::string known;
    for (const auto& name : layer_types()) known += (known.empty() ? "" : ", ") + name;
    throw UserError("layer '" + spec.name() + "': unknown type '" + spec.type() +
                    "' (known: " + known + ")");
  }
  return it->second.make(spec);
}

bool is_loss_type(const std::string& type) {
  return type == "SoftmaxCrossEntropy" || type == "SigmoidCrossEntropy" || type == "TripletLoss" ||
         type == "MSELoss" || type == "L1Loss";
}

std::string default_loss_target(const std::string& type) {
  return type == "MSELoss" || type == "L1Loss" ? "data" : "label";
}

bool layer_has_params(const std::string& type) {
  auto it = registry().find(type);
  return it != registry().end() && it->second.has_params;
}

}  // namespace dptrain
