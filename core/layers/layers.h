// Factories of the layer types; registry.cc maps type names to them.
#pragma once

#include <memory>

#include "core/layer.h"

namespace dptrain {

std::unique_ptr<Layer> make_convolution(const LayerSpec& spec);
std::unique_ptr<Layer> make_deconvolution(const LayerSpec& spec);
std::unique_ptr<Layer> make_pooling(const LayerSpec& spec);
std::unique_ptr<Layer> make_channel_reduce(const LayerSpec& spec);
std::unique_ptr<Layer> make_mul(const LayerSpec& spec);
std::unique_ptr<Layer> make_inner_product(const LayerSpec& spec);
std::unique_ptr<Layer> make_activation(const LayerSpec& spec);
std::unique_ptr<Layer> make_batch_norm(const LayerSpec& spec);
std::unique_ptr<Layer> make_dropout(const LayerSpec& spec);
std::unique_ptr<Layer> make_flatten(const LayerSpec& spec);
std::unique_ptr<Layer> make_add(const LayerSpec& spec);
std::unique_ptr<Layer> make_concat(const LayerSpec& spec);
std::unique_ptr<Layer> make_l2_normalize(const LayerSpec& spec);
std::unique_ptr<Layer> make_softmax_cross_entropy(const LayerSpec& spec);
std::unique_ptr<Layer> make_sigmoid_cross_entropy(const LayerSpec& spec);
std::unique_ptr<Layer> make_triplet_loss(const LayerSpec& spec);
std::unique_ptr<Layer> make_reconstruction_loss(const LayerSpec& spec);
std::unique_ptr<Layer> make_split(const LayerSpec& spec);

}  // namespace dptrain
