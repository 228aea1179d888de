// Files a run writes: every write goes to a temporary file beside the
// target, is flushed to disk and renamed over it, so a crash never leaves a
// torn file behind the name.
#pragma once

#include <string>

#include "core/dptrain.pb.h"

namespace dptrain {

void write_file_atomically(const std::string& path, const std::string& bytes);
std::string read_file(const std::string& path);

// final_weights and friends: a WeightsFile message.
void save_weights(const std::string& path, const WeightsFile& weights);
WeightsFile load_weights(const std::string& path);

}  // namespace dptrain
