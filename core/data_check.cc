#include "core/data_check.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <thread>
#include <vector>

#include "core/dataset.h"
#include "core/error.h"
#include "core/image.h"

namespace dptrain {
namespace {

struct Decoded {
  int width = 0, height = 0;
  std::string error;  // empty: read and decoded
};

// Every file of `d`, decoded as the loader would, on `threads` threads.
std::vector<Decoded> decode_all(const Dataset& d, int threads) {
  std::vector<Decoded> out(static_cast<size_t>(d.size()));
  auto work = [&](int part) {
    std::vector<uint8_t> bytes;
    for (size_t i = static_cast<size_t>(part); i < out.size(); i += static_cast<size_t>(threads)) {
      try {
        const Image image = load_image(d.file_path(static_cast<int64_t>(i)), d.channels, &bytes);
        out[i].width = image.width;
        out[i].height = image.height;
      } catch (const UserError& e) {
        out[i].error = e.what();
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work, t);
  work(0);
  for (std::thread& t : pool) t.join();
  return out;
}

std::string format(const char* fmt, auto... values) {
  char line[512];
  std::snprintf(line, sizeof line, fmt, values...);
  return line;
}

}  // namespace

DataCheck check_data(const DataSpec& spec, uint64_t seed, int threads) {
  const DatasetSplits splits = load_dataset(spec, seed, true);
  const Dataset& train = splits.train;
  std::vector<std::pair<const char*, const Dataset*>> parts = {{"train", &splits.train},
                                                               {"test", &splits.test}};
  if (splits.validation.size() > 0) parts.emplace_back("validation", &splits.validation);

  DataCheck check;
  std::string& r = check.report;
  r += "data: " + DataSpec::Format_Name(spec.format()) +
       (spec.format() == DataSpec::SYNTHETIC ? "" : " " + spec.path()) +
       format(", samples %dx%dx%d (channels x height x width), %d classes\n", train.channels,
              train.height, train.width, train.classes);

  auto name = [&](int c) {
    return splits.class_names.empty() ? std::to_string(c)
                                      : splits.class_names[static_cast<size_t>(c)];
  };
  size_t name_width = 5;
  for (int c = 0; c < train.classes; ++c) name_width = std::max(name_width, name(c).size());
  const int w = static_cast<int>(name_width);
  r += format("%-*s", w, "class");
  for (const auto& [title, d] : parts) r += format(" %10s", title);
  r += "\n";
  std::vector<std::vector<int64_t>> counts;
  for (const auto& [title, d] : parts) {
    std::vector<int64_t> n(static_cast<size_t>(train.classes), 0);
    for (int32_t label : d->labels) ++n[static_cast<size_t>(label)];
    counts.push_back(std::move(n));
  }
  for (int c = 0; c < train.classes; ++c) {
    r += format("%-*s", w, name(c).c_str());
    for (const auto& n : counts)
      r += format(" %10lld", static_cast<long long>(n[static_cast<size_t>(c)]));
    r += "\n";
  }
  r += format("%-*s", w, "total");
  for (const auto& [title, d] : parts) r += format(" %10lld", static_cast<long long>(d->size()));
  r += "\n";

  if (!train.from_files) return check;

  // The validation split's files are training files: decoded once.
  std::map<std::pair<int, int>, int64_t> sizes;
  std::vector<std::string> unreadable;
  for (const Dataset* d : {&splits.train, &splits.validation, &splits.test}) {
    if (d->size() == 0) continue;
    const std::vector<Decoded> decoded = decode_all(*d, std::max(1, threads));
    for (const Decoded& f : decoded) {
      if (f.error.empty()) {
        ++sizes[{f.width, f.height}];
      } else {
        unreadable.push_back(f.error);
      }
    }
  }
  std::sort(unreadable.begin(), unreadable.end());
  std::vector<std::pair<int64_t, std::pair<int, int>>> by_count;
  for (const auto& [size, n] : sizes) by_count.emplace_back(n, size);
  std::sort(by_count.begin(), by_count.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  r += format("image sizes (width x height): %zu different", by_count.size());
  constexpr size_t kShown = 5;
  for (size_t i = 0; i < std::min(kShown, by_count.size()); ++i) {
    r += format("%s %dx%d (%lld)", i == 0 ? ";" : ",", by_count[i].second.first,
                by_count[i].second.second, static_cast<long long>(by_count[i].first));
  }
  if (!sizes.empty()) {
    int min_w = sizes.begin()->first.first, max_w = min_w, min_h = sizes.begin()->first.second,
        max_h = min_h;
    for (const auto& [size, n] : sizes) {
      min_w = std::min(min_w, size.first), max_w = std::max(max_w, size.first);
      min_h = std::min(min_h, size.second), max_h = std::max(max_h, size.second);
    }
    r += format("; widths %d-%d, heights %d-%d", min_w, max_w, min_h, max_h);
  }
  r += "\n";
  auto list = [&](const std::string& title, const std::vector<std::string>& items) {
    r += title + ": " + std::to_string(items.size()) + "\n";
    for (const std::string& item : items) r += "  " + item + "\n";
  };
  list("left out (not .png, .jpg or .jpeg)", splits.ignored_files);
  list("empty class folders", splits.empty_classes);
  list("unreadable images", unreadable);
  check.unreadable = static_cast<int64_t>(unreadable.size());
  check.empty_classes = static_cast<int64_t>(splits.empty_classes.size());
  const bool stop = spec.image_folder().bad_images() == ImageFolderSpec::STOP;
  check.run_would_stop = stop && (check.unreadable > 0 || check.empty_classes > 0);
  if (check.unreadable > 0 || check.empty_classes > 0) {
    r += stop ? "a run would stop at these (data.image_folder.bad_images: STOP)\n"
              : "a run would skip these (data.image_folder.bad_images: SKIP)\n";
  }
  return check;
}

}  // namespace dptrain
