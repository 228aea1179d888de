// PNG files written with libpng: 8-bit grayscale (1 channel) or RGB (3),
// rows top to bottom, for pictures people look at (dptrain reconstruct).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dptrain {

// The bytes of a PNG of `width` x `height` pixels of `channels` (1 or 3)
// interleaved 8-bit values each, row-major.
std::string png_bytes(const std::vector<uint8_t>& pixels, int width, int height, int channels);

}  // namespace dptrain
