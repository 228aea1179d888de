// Image files for the tests of image decoding and image-folder datasets:
// PNGs through dptrain's own encoder, JPEGs through TurboJPEG, written
// into class folders.
#pragma once

#include <turbojpeg.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/image.h"

namespace dptrain::testing {

// width x height x channels interleaved pixels, a fixed function of the
// position and `seed`: smooth enough for JPEG, distinct per seed.
inline std::vector<uint8_t> pattern(int width, int height, int channels, int seed) {
  std::vector<uint8_t> p(static_cast<size_t>(width * height * channels));
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x)
      for (int c = 0; c < channels; ++c)
        p[static_cast<size_t>((y * width + x) * channels + c)] =
            static_cast<uint8_t>((x * 7 + y * 3 + c * 50 + seed * 29) % 256);
  return p;
}

inline std::string jpeg_bytes(const std::vector<uint8_t>& pixels, int width, int height,
                              int channels, int quality = 95) {
  tjhandle tj = tjInitCompress();
  unsigned char* out = nullptr;
  unsigned long size = 0;
  const int rc =
      tjCompress2(tj, pixels.data(), width, 0, height, channels == 1 ? TJPF_GRAY : TJPF_RGB, &out,
                  &size, channels == 1 ? TJSAMP_GRAY : TJSAMP_444, quality, 0);
  std::string bytes = rc == 0 ? std::string(reinterpret_cast<char*>(out), size) : std::string();
  tjFree(out);
  tjDestroy(tj);
  if (rc != 0) throw std::runtime_error("tjCompress2 failed");
  return bytes;
}

// Throws if the file cannot be written whole.
inline void write_bytes(const std::filesystem::path& path, const std::string& bytes) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out << bytes;
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

}  // namespace dptrain::testing
