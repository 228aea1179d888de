// A checkpoint file's bytes as resume, eval and diff-weights decode them.
#include <cstdint>
#include <string_view>

#include "core/checkpoint.h"
#include "core/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    (void)dptrain::decode_checkpoint(std::string_view(reinterpret_cast<const char*>(data), size),
                                     "ckpt");
  } catch (const dptrain::UserError&) {
  }
  return 0;
}
