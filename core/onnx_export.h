// ONNX export of a trained net's inference graph: ONNX IR 7, opset 13,
// written through the schema Debian's libonnx-dev ships (onnx.proto,
// compiled by our own protoc; its prebuilt libonnx_proto is never linked,
// whose second copy of the descriptors would abort at start).
//
// The graph's input "pixels" is N x C x H x W float in [0, 1] (blobs of
// the net named like the graph's own values are renamed name_1); the
// dataset normalisation is its first nodes (Sub, Div), so it takes images
// as other runtimes load them. Its output is what the net predicts:
// "probabilities" (Softmax) for a classifier, "probability" (Sigmoid) for
// a yes/no net, "embedding" for a triplet net, "reconstruction" in pixels
// for an autoencoder. BatchNorm becomes BatchNormalization with the
// running statistics; Dropout disappears.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/batch_loader.h"
#include "core/dptrain.pb.h"

namespace dptrain {

// The bytes of the .onnx file for `net` with `weights` (every parameter
// and running statistic by name, as final_weights holds them) on
// channels x height x width images normalised by `norm`; `output_dims`:
// one sample's output (the loss's input); `batch`: the batch dimension,
// 0 for a symbolic one ("batch", any size; OpenCV 4.6's dnn mis-shapes a
// broadcast Mul under it, as in CBAM, and wants a fixed one there). A
// layer with no ONNX counterpart is a UserError naming it and its type.
std::string onnx_model_bytes(const NetSpec& net, const WeightsFile& weights,
                             const Normalization& norm, int channels, int height, int width,
                             const std::vector<int64_t>& output_dims, int64_t batch = 0);

}  // namespace dptrain
