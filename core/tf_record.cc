#include "core/tf_record.h"

#include "core/crc32c.h"
#include "core/little_endian.h"

namespace dptrain {

uint32_t masked_crc32c(const void* data, size_t size) {
  const uint32_t crc = crc32c(data, size);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

std::string frame_tf_record(std::string_view payload) {
  std::string out;
  out.reserve(payload.size() + 16);
  put_le<uint64_t>(out, payload.size());
  put_le<uint32_t>(out, masked_crc32c(out.data(), 8));
  out.append(payload);
  put_le<uint32_t>(out, masked_crc32c(payload.data(), payload.size()));
  return out;
}

}  // namespace dptrain
