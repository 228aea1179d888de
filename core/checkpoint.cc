#include "core/checkpoint.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include "core/crc32c.h"
#include "core/error.h"
#include "core/file_io.h"
#include "core/little_endian.h"

namespace dptrain {
namespace {

namespace fs = std::filesystem;

constexpr char kMagic[8] = {'D', 'P', 'T', 'R', 'C', 'K', 'P', 'T'};
constexpr size_t kHeader = 24;
constexpr const char* kPrefix = "ckpt-";

// The step a checkpoint file name carries, or -1 if it is not one.
int64_t step_of(const std::string& name) {
  if (name.rfind(kPrefix, 0) != 0 || name.size() <= std::strlen(kPrefix)) return -1;
  const std::string digits = name.substr(std::strlen(kPrefix));
  if (digits.size() > 18 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return -1;
  return std::stoll(digits);
}

}  // namespace

std::string encode_checkpoint(const Checkpoint& checkpoint) {
  std::string payload;
  {
    google::protobuf::io::StringOutputStream stream(&payload);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    checkpoint.SerializeToCodedStream(&coded);
  }
  std::string out(kMagic, sizeof kMagic);
  put_le<uint32_t>(out, kCheckpointVersion);
  put_le<uint32_t>(out, crc32c(payload.data(), payload.size()));
  put_le<uint64_t>(out, payload.size());
  return out + payload;
}

bool looks_like_checkpoint(std::string_view bytes) {
  return bytes.size() >= sizeof kMagic && std::memcmp(bytes.data(), kMagic, sizeof kMagic) == 0;
}

Checkpoint decode_checkpoint(std::string_view bytes, const std::string& source) {
  if (!looks_like_checkpoint(bytes))
    throw UserError(source + ": not a checkpoint (no DPTRCKPT header)");
  if (bytes.size() < kHeader) {
    throw UserError(source + ": checkpoint truncated (" + std::to_string(bytes.size()) +
                    " bytes, shorter than its header)");
  }
  const auto version = get_le<uint32_t>(bytes, 8);
  if (version != kCheckpointVersion) {
    throw UserError(source + ": checkpoint format version " + std::to_string(version) +
                    " is unknown (this dptrain reads version " +
                    std::to_string(kCheckpointVersion) + ")");
  }
  const auto crc = get_le<uint32_t>(bytes, 12);
  const auto length = get_le<uint64_t>(bytes, 16);
  if (bytes.size() - kHeader != length) {
    throw UserError(source +
                    (bytes.size() - kHeader < length ? ": checkpoint truncated"
                                                     : ": checkpoint has trailing bytes") +
                    " (payload of " + std::to_string(bytes.size() - kHeader) +
                    " bytes, the header says " + std::to_string(length) + ")");
  }
  if (crc32c(bytes.data() + kHeader, length) != crc) {
    throw UserError(source + ": checkpoint checksum mismatch (the file is damaged)");
  }
  Checkpoint checkpoint;
  if (length > static_cast<uint64_t>(INT32_MAX) ||
      !checkpoint.ParseFromArray(bytes.data() + kHeader, static_cast<int>(length))) {
    throw UserError(source + ": checkpoint payload does not parse (damaged)");
  }
  for (const NamedTensor& t : checkpoint.weights().tensor()) {
    int64_t count = 1;
    for (int64_t d : t.dims()) count *= d;
    if (count < 0 || t.data().size() != static_cast<size_t>(count) * sizeof(float)) {
      throw UserError(source + ": tensor '" + t.name() + "' does not match its shape (damaged)");
    }
  }
  return checkpoint;
}

Checkpoint read_checkpoint(const std::string& path) {
  return decode_checkpoint(read_file(path), path);
}

std::string checkpoint_file_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%s%09lld", kPrefix, static_cast<long long>(step));
  return buf;
}

std::vector<std::string> list_checkpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const int64_t step = step_of(name);
    if (step >= 0 && entry.is_regular_file(ec)) found.emplace_back(step, entry.path().string());
  }
  std::sort(found.begin(), found.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::string> paths;
  for (auto& f : found) paths.push_back(std::move(f.second));
  return paths;
}

std::optional<FoundCheckpoint> find_newest_good_checkpoint(
    const std::string& dir, const std::function<void(const std::string&)>& skipped) {
  for (const std::string& path : list_checkpoints(dir)) {
    try {
      FoundCheckpoint found;
      found.path = path;
      found.bytes = read_file(path);
      found.checkpoint = decode_checkpoint(found.bytes, fs::path(path).filename().string());
      return found;
    } catch (const UserError& e) {
      skipped(e.what());
    }
  }
  return std::nullopt;
}

WeightsFile load_weights_or_checkpoint(const std::string& path) {
  const std::string bytes = read_file(path);
  if (looks_like_checkpoint(bytes)) return decode_checkpoint(bytes, path).weights();
  return load_weights(path);
}

CheckpointWriter::CheckpointWriter(std::string dir, int keep, Done done,
                                   std::function<void(int64_t)> before_rename)
    : dir_(std::move(dir)),
      keep_(std::max(keep, 1)),
      done_(std::move(done)),
      before_rename_(std::move(before_rename)),
      thread_([this] { run(); }) {}

CheckpointWriter::~CheckpointWriter() {
  {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return !pending_ && !busy_; });
    stop_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

void CheckpointWriter::write(Checkpoint checkpoint) {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return !pending_ && !busy_; });
  pending_ = std::move(checkpoint);
  changed_.notify_all();
}

std::string CheckpointWriter::flush() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return !pending_ && !busy_; });
  return last_path_;
}

void CheckpointWriter::run() {
  for (;;) {
    Checkpoint checkpoint;
    {
      std::unique_lock lock(mutex_);
      changed_.wait(lock, [&] { return pending_ || stop_; });
      if (!pending_) return;
      checkpoint = std::move(*pending_);
      pending_.reset();
      busy_ = true;
    }
    const std::string name = checkpoint_file_name(checkpoint.step());
    const std::string path = (fs::path(dir_) / name).string();
    std::string error;
    try {
      write_file_atomically(path, encode_checkpoint(checkpoint), [&] {
        if (before_rename_) before_rename_(checkpoint.step());
      });
      write_file_atomically((fs::path(dir_) / "LATEST").string(), name + "\n");
      const std::vector<std::string> all = list_checkpoints(dir_);
      for (size_t i = static_cast<size_t>(keep_); i < all.size(); ++i) {
        std::error_code ec;
        fs::remove(all[i], ec);
      }
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (done_) done_(error.empty() ? path : "", checkpoint.step(), error);
    {
      std::lock_guard lock(mutex_);
      last_path_ = error.empty() ? path : "";
      busy_ = false;
    }
    changed_.notify_all();
  }
}

}  // namespace dptrain
