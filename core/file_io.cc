#include "core/file_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include "core/error.h"

namespace dptrain {

void write_file_atomically(const std::string& path, const std::string& bytes,
                           const std::function<void()>& before_rename) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw UserError("cannot write " + tmp + ": " + std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw UserError("cannot write " + tmp + ": " + std::strerror(err));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw UserError("cannot flush " + tmp + ": " + std::strerror(err));
  }
  if (before_rename) {
    try {
      before_rename();
    } catch (...) {
      ::unlink(tmp.c_str());
      throw;
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw UserError("cannot rename " + tmp + " to " + path + ": " + std::strerror(err));
  }
  // The rename itself is durable only once the folder's entry is.
  const std::string dir = std::filesystem::path(path).parent_path().string();
  const int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError("cannot read " + path + ": " + std::strerror(errno));
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) throw UserError("cannot read " + path);
  return buf.str();
}

void save_weights(const std::string& path, const WeightsFile& weights) {
  std::string bytes;
  // Deterministic serialization: equal weights give equal files.
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    weights.SerializeToCodedStream(&coded);
  }
  write_file_atomically(path, bytes);
}

WeightsFile load_weights(const std::string& path) {
  const std::string bytes = read_file(path);
  WeightsFile weights;
  if (bytes.empty() || !weights.ParseFromString(bytes)) {
    throw UserError(path + ": not a weights file (empty or damaged)");
  }
  for (const NamedTensor& t : weights.tensor()) {
    int64_t count = 1;
    for (int64_t d : t.dims()) count *= d;
    if (count < 0 || t.data().size() != static_cast<size_t>(count) * sizeof(float)) {
      throw UserError(path + ": tensor '" + t.name() + "' holds " +
                      std::to_string(t.data().size()) + " bytes, its shape needs " +
                      std::to_string(count * 4) + " (damaged file)");
    }
  }
  return weights;
}

}  // namespace dptrain
