// Fixed-width little-endian integers in byte strings: the length and
// checksum fields of the formats dptrain frames itself (checkpoint
// headers, control-channel frames, TensorBoard records), the same on
// every host.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace dptrain {

template <typename T>
void put_le(std::string& out, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// Reads sizeof(T) bytes at `at`; the caller has checked they are there.
template <typename T>
T get_le(std::string_view in, size_t at) {
  T v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) {
    v |= static_cast<T>(static_cast<unsigned char>(in[at + i])) << (8 * i);
  }
  return v;
}

}  // namespace dptrain
