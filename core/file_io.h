// Files a run writes: every write goes to a temporary file beside the
// target, is flushed to disk and renamed over it, so a crash never leaves a
// torn file behind the name.
#pragma once

#include <functional>
#include <string>

#include "core/dptrain.pb.h"

namespace dptrain {

// Temp file (path + ".tmp"), fsync, rename, fsync of the folder: once it
// returns the file is durable under its name. `before_rename` runs between
// the flush and the rename (a fault point for tests). Whatever fails, or
// throws from `before_rename`, leaves no temporary behind.
void write_file_atomically(const std::string& path, const std::string& bytes,
                           const std::function<void()>& before_rename = {});
std::string read_file(const std::string& path);

// final_weights and friends: a WeightsFile message.
void save_weights(const std::string& path, const WeightsFile& weights);
WeightsFile load_weights(const std::string& path);

}  // namespace dptrain
