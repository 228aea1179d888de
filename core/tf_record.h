// TFRecord framing, as TensorBoard's event files use it: each record is
// its length (uint64, little-endian), the masked CRC32C of those 8 bytes,
// the payload, and the masked CRC32C of the payload. The mask (rotate
// right by 15, add 0xa282ead8) is the format's, so a CRC of data that
// holds CRCs does not degenerate.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace dptrain {

uint32_t masked_crc32c(const void* data, size_t size);

// The record holding `payload`, ready to append to a file.
std::string frame_tf_record(std::string_view payload);

}  // namespace dptrain
