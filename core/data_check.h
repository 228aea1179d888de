// `dptrain data-check`: what a config's data holds, before a run spends
// time on it: samples per class and split, the images' own sizes, and for
// an image folder every file that could not be read or decoded (each one
// decoded as the run would, on all cores), every file left out for its
// name and every empty class folder.
#pragma once

#include <cstdint>
#include <string>

#include "core/dptrain.pb.h"

namespace dptrain {

struct DataCheck {
  std::string report;  // the table and lists, for people
  int64_t unreadable = 0;
  int64_t empty_classes = 0;
  // What the run would do: unreadable files or empty class folders under
  // image_folder.bad_images STOP stop it.
  bool run_would_stop = false;
};

// Throws UserError for what stops a run before any image is decoded (a
// missing folder, a bad config field).
DataCheck check_data(const DataSpec& spec, uint64_t seed, int threads);

}  // namespace dptrain
