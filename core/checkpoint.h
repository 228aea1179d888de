// Checkpoint files: the one reader and writer of their bytes.
//
// A file is a 24-byte header, then a serialized Checkpoint message:
//   0  "DPTRCKPT"            magic
//   8  uint32 LE             format version (kCheckpointVersion)
//   12 uint32 LE             CRC32C of the payload
//   16 uint64 LE             payload length
//   24 payload
// decode_checkpoint() checks each in turn and names what is wrong, so a
// truncated, flipped or foreign file is never taken for a good one.
//
// In a run folder checkpoints are named ckpt-<step, 9 digits>; LATEST holds
// the name of the newest durable one. CheckpointWriter persists them on a
// background thread: temp file, fsync, rename, folder fsync, then LATEST,
// then the oldest beyond `keep` are deleted.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "core/dptrain.pb.h"

namespace dptrain {

constexpr uint32_t kCheckpointVersion = 1;

std::string encode_checkpoint(const Checkpoint& checkpoint);
bool looks_like_checkpoint(std::string_view bytes);
// Throws UserError "SOURCE: what is wrong" for anything but a good file.
Checkpoint decode_checkpoint(std::string_view bytes, const std::string& source);
Checkpoint read_checkpoint(const std::string& path);

std::string checkpoint_file_name(int64_t step);
// Checkpoint files in `dir` (ckpt-*, never *.tmp), highest step first.
std::vector<std::string> list_checkpoints(const std::string& dir);

struct FoundCheckpoint {
  std::string path;
  std::string bytes;  // the whole file, verified
  Checkpoint checkpoint;
};
// The newest checkpoint in `dir` that decodes; each damaged one newer than
// it is reported to `skipped` ("FILE: reason"). Nothing if none is good.
std::optional<FoundCheckpoint> find_newest_good_checkpoint(
    const std::string& dir, const std::function<void(const std::string&)>& skipped);

// final_weights, or the weights inside a checkpoint.
WeightsFile load_weights_or_checkpoint(const std::string& path);

class CheckpointWriter {
 public:
  // Called on the writer thread once the checkpoint of `step` is durable
  // (its path), or with the error that kept it from being written (path
  // empty; previous ones are kept either way).
  using Done = std::function<void(const std::string& path, int64_t step, const std::string& error)>;

  // `before_rename(step)` runs between flushing and renaming a file (a
  // fault point for tests).
  CheckpointWriter(std::string dir, int keep, Done done,
                   std::function<void(int64_t step)> before_rename = {});
  ~CheckpointWriter();  // finishes the pending write
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  // Hands a checkpoint over; waits first while the previous one is still
  // being written (at most one is in flight).
  void write(Checkpoint checkpoint);
  // Waits until everything handed over is written or has failed; returns
  // the path of the last durable checkpoint (empty if none was written or
  // the last one failed).
  std::string flush();

 private:
  void run();

  std::string dir_;
  int keep_;
  Done done_;
  std::function<void(int64_t)> before_rename_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::optional<Checkpoint> pending_;
  bool busy_ = false, stop_ = false;
  std::string last_path_;
  std::thread thread_;
};

}  // namespace dptrain
