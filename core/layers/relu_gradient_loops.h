// The gradient through a ReLU fused into a layer whose top several layers
// read (ResNet's Add, whose output is the next block's input and its
// shortcut): dx = (d0 + d1 + ...) where y > 0, else 0, in one pass over
// memory, in place on d0. Unfused, each Split adds its branch's gradient
// into the blob's (a pass reading two tensors and writing one), and the
// ReLU's backward then cuts it (another): two tensors' bytes more moved.
//
// Any dense layout (padding lanes included), f32 or bf16 (summed in float,
// rounded once, as batch_norm_loops.h rounds); compiled for each
// instruction set as the other loops are (simd.h) and split between the
// threads in equal runs.
#pragma once

#include <cstdint>
#include <vector>

#include "core/layers/simd.h"

namespace dptrain {

// `count` elements of each of d0, the others and y, bf16 or f32 alike, on
// up to `threads` threads.
void relu_gradient_sum(bool bf16, void* d0, const std::vector<const void*>& others, const void* y,
                       int64_t count, int threads, Simd simd = best_simd());

}  // namespace dptrain
