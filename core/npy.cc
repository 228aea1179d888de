#include "core/npy.h"

#include <cstring>
#include <stdexcept>

namespace dptrain {
namespace {

std::string npy(const void* data, size_t bytes, const char* descr,
                const std::vector<int64_t>& shape) {
  std::string dims;
  for (int64_t d : shape) dims += (dims.empty() ? "" : ", ") + std::to_string(d);
  if (shape.size() == 1) dims += ',';  // a tuple of one: (n,)
  std::string header =
      std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  const size_t preamble = 10;  // magic 6, version 2, header length 2
  header.append((64 - (preamble + header.size() + 1) % 64) % 64, ' ');
  header += '\n';
  if (header.size() > 65535) throw std::logic_error("npy header too long");
  std::string out = "\x93NUMPY";
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  out += header;
  const size_t at = out.size();
  out.resize(at + bytes);
  // x86-64 and aarch64 Linux are little-endian, as '<' says.
  std::memcpy(out.data() + at, data, bytes);
  return out;
}

}  // namespace

std::string npy_bytes(const std::vector<float>& data, const std::vector<int64_t>& shape) {
  return npy(data.data(), data.size() * sizeof(float), "<f4", shape);
}

std::string npy_bytes(const std::vector<int32_t>& data, const std::vector<int64_t>& shape) {
  return npy(data.data(), data.size() * sizeof(int32_t), "<i4", shape);
}

}  // namespace dptrain
