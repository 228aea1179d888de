// CRC32C (Castagnoli), the checksum of checkpoints and, masked, of
// TensorBoard's record framing.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dptrain {

uint32_t crc32c(const void* data, size_t size);

}  // namespace dptrain
