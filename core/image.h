// Images from outside and pictures dptrain draws: PNG and JPEG bytes
// decoded to 8-bit pixels (libpng's simplified API, libjpeg-turbo's
// TurboJPEG), the boxes and resampling an image-folder dataset applies to
// them, and PNG encoding. Every malformed or hostile input is a UserError
// naming its source, never a crash or a runaway allocation: the fuzz
// target tests/fuzz/fuzz_image.cc feeds decode_image and resample
// arbitrary bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/dptrain.pb.h"
#include "core/random.h"

namespace dptrain {

// Larger images are refused before any pixel memory is taken.
constexpr int64_t kMaxImagePixels = int64_t{1} << 26;
constexpr int kMaxImageSide = 1 << 15;

struct Image {
  int width = 0, height = 0, channels = 0;  // channels: 1 (grey) or 3 (RGB)
  std::vector<uint8_t> pixels;              // rows top to bottom, interleaved
};

// Decodes a PNG or a JPEG (told apart by their signatures, not by a file
// name) into `channels` (1: colour by ITU-R BT.601 luma; 3: grey repeated)
// 8-bit values; an alpha channel is composited onto black. A JPEG that
// libjpeg-turbo only warns about (truncated, damaged data) is refused.
Image decode_image(const uint8_t* bytes, size_t size, int channels, const std::string& source);

// The whole file at `path`, into `bytes` (reused across calls).
void read_image_file(const std::string& path, std::vector<uint8_t>* bytes);
// The file at `path` read into `bytes` and decoded as decode_image does,
// named by its path in errors.
Image load_image(const std::string& path, int channels, std::vector<uint8_t>* bytes);

// A rectangle of an image in pixel units, possibly fractional.
struct Box {
  double x = 0, y = 0, width = 0, height = 0;
};

// The box of an evaluation view (ImageFolderSpec.resize): with resize > 0
// the centre out_width x out_height of the image scaled so that its
// shorter side is `resize`; with 0 the whole image.
Box center_box(int width, int height, int resize, int out_width, int out_height);

// torchvision's RandomResizedCrop: up to ten draws of an area fraction in
// [scale_min, scale_max] and a log-uniform aspect ratio in [ratio_min,
// ratio_max] until the box fits, then a uniform position; else the
// largest centred box within the ratio range.
Box random_resized_box(int width, int height, const RandomResizedCrop& spec, Rng& rng);

// Resamples `box` of `image` to out_width x out_height (a triangle filter,
// widened to the box's scale when shrinking, as PIL's antialiased
// bilinear), writing planar channel-major uint8 to `out`. The whole image
// at its own size is copied unchanged.
void resample(const Image& image, const Box& box, int out_width, int out_height, uint8_t* out);

// Throws UserError unless `spec` describes a shape and boxes resample can
// make (naming the data.image_folder field).
void check_image_folder_spec(const ImageFolderSpec& spec);

// The bytes of a PNG of `width` x `height` pixels of `channels` (1 or 3)
// interleaved 8-bit values each, row-major.
std::string png_bytes(const std::vector<uint8_t>& pixels, int width, int height, int channels);

}  // namespace dptrain
