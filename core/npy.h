// NumPy's .npy format, version 1.0, for arrays users load with
// numpy.load: the magic "\x93NUMPY", the version, a little-endian header
// length, a Python dict literal (descr, fortran_order, shape) padded with
// spaces and a newline to a multiple of 64 bytes, then the data in C order.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dptrain {

// The file's bytes for a little-endian float32 or int32 array of `shape`.
std::string npy_bytes(const std::vector<float>& data, const std::vector<int64_t>& shape);
std::string npy_bytes(const std::vector<int32_t>& data, const std::vector<int64_t>& shape);

}  // namespace dptrain
