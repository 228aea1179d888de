// A CIFAR-10 binary batch as load_dataset reads one.
#include <cstdint>
#include <vector>

#include "core/dataset.h"
#include "core/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dptrain::Dataset d;
  try {
    dptrain::append_cifar10(std::vector<uint8_t>(data, data + size), "batch", &d);
  } catch (const dptrain::UserError&) {
  }
  return 0;
}
