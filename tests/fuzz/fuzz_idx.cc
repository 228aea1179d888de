// An IDX images and labels pair as load_dataset reads them: the input is
// a 4-byte little-endian length n, n bytes of images file, and the labels
// file after them.
#include <cstdint>
#include <vector>

#include "core/dataset.h"
#include "core/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  size_t n = data[0] | (size_t{data[1]} << 8) | (size_t{data[2]} << 16) | (size_t{data[3]} << 24);
  if (n > size - 4) n = size - 4;
  std::vector<uint8_t> images(data + 4, data + 4 + n), labels(data + 4 + n, data + size);
  try {
    (void)dptrain::parse_idx(std::move(images), "images", labels, "labels");
  } catch (const dptrain::UserError&) {
  }
  return 0;
}
