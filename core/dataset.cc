#include "core/dataset.h"

#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>

#include "core/error.h"
#include "core/image.h"
#include "core/random.h"

namespace dptrain {

namespace fs = std::filesystem;

int64_t Dataset::size() const { return static_cast<int64_t>(labels.size()); }

int64_t Dataset::sample_size() const { return static_cast<int64_t>(channels) * height * width; }

std::string Dataset::file_path(int64_t i) const {
  return root + "/" + files[static_cast<size_t>(i)];
}

Dataset Dataset::take(const std::vector<int64_t>& indices) const {
  Dataset d;
  d.channels = channels;
  d.height = height;
  d.width = width;
  d.classes = classes;
  d.from_files = from_files;
  d.root = root;
  d.image_folder = image_folder;
  const auto sample = static_cast<size_t>(sample_size());
  d.labels.reserve(indices.size());
  if (from_files) {
    d.files.reserve(indices.size());
  } else {
    d.pixels.reserve(indices.size() * sample);
  }
  for (int64_t i : indices) {
    const auto at = static_cast<size_t>(i);
    d.labels.push_back(labels.at(at));
    if (from_files) {
      d.files.push_back(files[at]);
    } else {
      const uint8_t* from = pixels.data() + at * sample;
      d.pixels.insert(d.pixels.end(), from, from + sample);
    }
  }
  return d;
}

namespace {

constexpr int kIdxClasses = 10;
constexpr int kCifarClasses = 10;
constexpr uint32_t kIdxImagesMagic = 0x00000803;
constexpr uint32_t kIdxLabelsMagic = 0x00000801;
constexpr int64_t kCifarSide = 32;
constexpr int64_t kCifarPixels = 3 * kCifarSide * kCifarSide;
constexpr int64_t kCifarRecord = 1 + kCifarPixels;

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

// The whole file, decompressed if it is gzip (zlib reads raw files as they
// are). Damaged or truncated gzip streams are errors, not short reads.
std::vector<uint8_t> read_file(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw UserError("cannot read " + path + ": is a folder");
  errno = 0;
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) {
    throw UserError("cannot open " + path + ": " +
                    (errno != 0 ? std::strerror(errno) : "out of memory"));
  }
  // A big buffer: zlib's default 8 KiB makes reading 26 MB of gzip slow.
  gzbuffer(file, 1 << 20);

  auto gz_message = [&](int* err) {
    std::string msg = gzerror(file, err);
    // zlib prefixes its messages with the path; we add it ourselves.
    if (msg.rfind(path + ": ", 0) == 0) msg.erase(0, path.size() + 2);
    return msg;
  };

  std::vector<uint8_t> data;
  size_t used = 0;
  try {
    // Guess from the size on disk (gzip roughly halves images); grow by doubling.
    uintmax_t on_disk = fs::file_size(path, ec);
    size_t guess = ec ? size_t{1} << 16 : static_cast<size_t>(on_disk) * 2 + 4096;
    data.resize(guess);
    for (;;) {
      if (used == data.size()) data.resize(data.size() * 2);
      size_t want = std::min<size_t>(data.size() - used, size_t{1} << 30);
      int got = gzread(file, data.data() + used, static_cast<unsigned>(want));
      if (got < 0) {
        int err = 0;
        std::string msg = gz_message(&err);
        throw UserError(
            "cannot read " + path + ": " + msg +
            (err == Z_BUF_ERROR || err == Z_DATA_ERROR ? " (damaged or truncated gzip)" : ""));
      }
      if (got == 0) break;
      used += static_cast<size_t>(got);
    }
    int err = Z_OK;
    std::string msg = gz_message(&err);
    if (err != Z_OK) {
      throw UserError("cannot read " + path + ": " + msg + " (damaged or truncated gzip)");
    }
  } catch (...) {
    gzclose(file);
    throw;
  }
  int rc = gzclose(file);
  if (rc != Z_OK) {
    throw UserError("cannot read " + path + ": " +
                    (rc == Z_BUF_ERROR ? "unexpected end of gzip data (truncated)"
                                       : "zlib error " + std::to_string(rc)));
  }
  data.resize(used);
  return data;
}

uint32_t be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Checks that `payload` bytes hold exactly `count` items of `item_bytes`.
void check_payload(const std::string& path, const std::string& what, uint64_t count,
                   uint64_t item_bytes, uint64_t payload) {
  uint64_t expected = 0;
  if (__builtin_mul_overflow(count, item_bytes, &expected) || expected > payload) {
    throw UserError(path + ": the header announces " + std::to_string(count) + " " + what +
                    " but the file is too short for them (truncated; " + std::to_string(payload) +
                    " bytes after the header)");
  }
  if (expected < payload) {
    throw UserError(path + ": the header announces " + std::to_string(count) + " " + what + " (" +
                    std::to_string(expected) + " bytes) but " + std::to_string(payload) +
                    " bytes follow the header");
  }
}

struct IdxHeader {
  uint32_t count = 0, rows = 0, cols = 0;
};

IdxHeader parse_idx_header(const std::vector<uint8_t>& data, const std::string& path, bool images) {
  const char* kind = images ? "IDX images file " : "IDX labels file ";
  size_t header = images ? 16 : 8;
  uint32_t want_magic = images ? kIdxImagesMagic : kIdxLabelsMagic;
  if (data.empty()) throw UserError(kind + path + " is empty");
  if (data.size() < 4) {
    throw UserError(kind + path + " is truncated: " + std::to_string(data.size()) + " bytes");
  }
  uint32_t magic = be32(data.data());
  if (magic != want_magic) {
    throw UserError(kind + path + ": wrong magic number " + hex32(magic) + " (expected " +
                    hex32(want_magic) + ")");
  }
  if (data.size() < header) {
    throw UserError(kind + path + " is truncated: " + std::to_string(data.size()) +
                    " bytes, shorter than its " + std::to_string(header) + "-byte header");
  }
  IdxHeader h;
  h.count = be32(data.data() + 4);
  if (h.count == 0) throw UserError(kind + path + " holds no samples");
  if (images) {
    h.rows = be32(data.data() + 8);
    h.cols = be32(data.data() + 12);
    constexpr uint32_t kMaxSide = 1 << 15;
    if (h.rows == 0 || h.cols == 0 || h.rows > kMaxSide || h.cols > kMaxSide) {
      throw UserError(kind + path + ": invalid image size " + std::to_string(h.rows) + "x" +
                      std::to_string(h.cols) + " in the header");
    }
    check_payload(kind + path, "images of " + std::to_string(h.rows) + "x" + std::to_string(h.cols),
                  h.count, uint64_t{h.rows} * h.cols, data.size() - header);
  } else {
    check_payload(kind + path, "labels", h.count, 1, data.size() - header);
  }
  return h;
}

std::string join(const fs::path& dir, const std::string& name) { return (dir / name).string(); }

void require_folder(const std::string& dir, const char* format) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw UserError(std::string(format) + " dataset folder " + dir + " does not exist (data.path)");
  }
}

// The IDX file `name` in `dir`, raw or with a .gz suffix.
std::string find_idx_file(const std::string& dir, const std::string& name) {
  std::error_code ec;
  for (const std::string& candidate : {name, name + ".gz"}) {
    std::string path = join(dir, candidate);
    if (fs::exists(path, ec)) return path;
  }
  throw UserError("IDX dataset: neither " + name + " nor " + name + ".gz found in " + dir);
}

void check_limit(int64_t limit, const char* field) {
  if (limit < 0) {
    throw UserError(std::string("data.") + field + " must be >= 0, got " + std::to_string(limit));
  }
}

std::vector<int64_t> first_n(int64_t n) {
  std::vector<int64_t> indices(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) indices[static_cast<size_t>(i)] = i;
  return indices;
}

void apply_limit(Dataset& d, int64_t limit) {
  if (limit == 0 || limit >= d.size()) return;
  d = d.take(first_n(limit));
}

// Each class has a fixed random template (uniform pixels); a sample is its
// class template plus Gaussian noise, rounded and clipped to 0..255. Labels
// and noise of sample i of a split come from their own counter-based stream,
// so the data does not depend on the order of generation.
DatasetSplits make_synthetic(const SyntheticData& s, uint64_t seed) {
  auto positive = [](int32_t v, const char* field) {
    if (v <= 0) {
      throw UserError(std::string("data.synthetic.") + field + " must be > 0, got " +
                      std::to_string(v));
    }
  };
  positive(s.train_size(), "train_size");
  positive(s.test_size(), "test_size");
  positive(s.channels(), "channels");
  positive(s.height(), "height");
  positive(s.width(), "width");
  positive(s.classes(), "classes");
  constexpr int64_t kMaxBytes = int64_t{1} << 32;
  int64_t sample = int64_t{s.channels()} * s.height() * s.width();
  if (sample > kMaxBytes || sample * std::max(s.train_size(), s.test_size()) > kMaxBytes) {
    throw UserError("data.synthetic: " + std::to_string(sample) + "-pixel samples make too large " +
                    "a dataset (at most 4 GiB per split)");
  }

  constexpr float kNoiseStd = 40.0f;
  std::vector<float> templates(static_cast<size_t>(sample * s.classes()));
  for (int k = 0; k < s.classes(); ++k) {
    Rng rng(derive_seed(seed, RandomStream::kSynthetic, 0, static_cast<uint64_t>(k)));
    for (int64_t p = 0; p < sample; ++p)
      templates[static_cast<size_t>(k * sample + p)] = 255.0f * rng.uniform();
  }

  auto generate = [&](int32_t count, uint64_t split) {
    Dataset d;
    d.channels = s.channels();
    d.height = s.height();
    d.width = s.width();
    d.classes = s.classes();
    d.pixels.resize(static_cast<size_t>(count * sample));
    d.labels.resize(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) {
      Rng rng(derive_seed(seed, RandomStream::kSynthetic, split, static_cast<uint64_t>(i)));
      auto label = static_cast<int32_t>(rng.below(static_cast<uint64_t>(s.classes())));
      d.labels[static_cast<size_t>(i)] = label;
      const float* t = templates.data() + label * sample;
      uint8_t* out = d.pixels.data() + i * sample;
      for (int64_t p = 0; p < sample; ++p) {
        float v = std::nearbyint(t[p] + kNoiseStd * rng.normal());
        out[p] = static_cast<uint8_t>(std::clamp(v, 0.0f, 255.0f));
      }
    }
    return d;
  };
  DatasetSplits splits;
  splits.train = generate(s.train_size(), 1);
  splits.test = generate(s.test_size(), 2);
  return splits;
}

DatasetSplits load_idx(const std::string& dir) {
  require_folder(dir, "IDX");
  DatasetSplits splits;
  std::string train_images = find_idx_file(dir, "train-images-idx3-ubyte");
  std::string train_labels = find_idx_file(dir, "train-labels-idx1-ubyte");
  std::string test_images = find_idx_file(dir, "t10k-images-idx3-ubyte");
  std::string test_labels = find_idx_file(dir, "t10k-labels-idx1-ubyte");
  splits.train = read_idx(train_images, train_labels);
  splits.test = read_idx(test_images, test_labels);
  if (splits.train.height != splits.test.height || splits.train.width != splits.test.width) {
    throw UserError("IDX dataset in " + dir + ": train images are " +
                    std::to_string(splits.train.height) + "x" + std::to_string(splits.train.width) +
                    " but test images (" + test_images + ") are " +
                    std::to_string(splits.test.height) + "x" + std::to_string(splits.test.width));
  }
  return splits;
}

DatasetSplits load_cifar10(const std::string& path) {
  require_folder(path, "CIFAR10");
  // Also accept the folder the official archive unpacks into.
  std::string dir = path;
  std::error_code ec;
  if (!fs::exists(join(dir, "data_batch_1.bin"), ec) &&
      fs::exists(join(join(dir, "cifar-10-batches-bin"), "data_batch_1.bin"), ec)) {
    dir = join(dir, "cifar-10-batches-bin");
  }
  auto need = [&](const std::string& name) {
    std::string file = join(dir, name);
    if (!fs::exists(file, ec)) {
      throw UserError("CIFAR10 dataset: file " + name + " not found in " + dir);
    }
    return file;
  };
  std::vector<std::string> train;
  for (int i = 1; i <= 5; ++i) train.push_back(need("data_batch_" + std::to_string(i) + ".bin"));
  std::string test = need("test_batch.bin");
  DatasetSplits splits;
  splits.train = read_cifar10(train);
  splits.test = read_cifar10({test});
  // The names as the official archive lists them, one per line.
  if (std::FILE* meta = std::fopen(join(dir, "batches.meta.txt").c_str(), "r")) {
    char line[256];
    while (std::fgets(line, sizeof line, meta) != nullptr) {
      std::string name = line;
      while (!name.empty() && std::isspace(static_cast<unsigned char>(name.back())))
        name.pop_back();
      if (!name.empty()) splits.class_names.push_back(name);
    }
    std::fclose(meta);
    if (splits.class_names.size() != static_cast<size_t>(kCifarClasses)) splits.class_names.clear();
  }
  return splits;
}

bool image_name(const fs::path& path) {
  std::string ext = path.extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

bool hidden(const fs::path& path) {
  const std::string name = path.filename().string();
  return !name.empty() && name[0] == '.';
}

// The sorted names of the visible subfolders of `dir`.
std::vector<std::string> subfolders(const fs::path& dir) {
  std::vector<std::string> names;
  try {
    for (const fs::directory_entry& e : fs::directory_iterator(dir)) {
      if (!hidden(e.path()) && e.is_directory()) names.push_back(e.path().filename().string());
    }
  } catch (const fs::filesystem_error& e) {
    throw UserError("cannot list " + dir.string() + ": " + e.code().message());
  }
  std::sort(names.begin(), names.end());
  return names;
}

// Appends the images under `dir` (any depth, sorted) as `label`; notes
// the other files in `ignored`. Returns how many images it found.
int64_t list_class_folder(const fs::path& root, const fs::path& dir, int32_t label, Dataset* d,
                          std::vector<std::string>* ignored) {
  std::vector<std::string> images, others;
  try {
    auto it =
        fs::recursive_directory_iterator(dir, fs::directory_options::follow_directory_symlink);
    for (; it != fs::recursive_directory_iterator(); ++it) {
      if (hidden(it->path())) {
        if (it->is_directory()) it.disable_recursion_pending();
        continue;
      }
      if (it->is_directory()) continue;
      const std::string relative = it->path().lexically_relative(root).string();
      (image_name(it->path()) ? images : others).push_back(relative);
    }
  } catch (const fs::filesystem_error& e) {
    throw UserError("cannot list " + (e.path1().empty() ? dir.string() : e.path1().string()) +
                    ": " + e.code().message());
  }
  std::sort(images.begin(), images.end());
  std::sort(others.begin(), others.end());
  ignored->insert(ignored->end(), others.begin(), others.end());
  for (std::string& f : images) {
    d->files.push_back(std::move(f));
    d->labels.push_back(label);
  }
  return static_cast<int64_t>(images.size());
}

DatasetSplits list_image_folder(const DataSpec& spec) {
  const ImageFolderSpec& f = spec.image_folder();
  check_image_folder_spec(f);
  const std::string& path = spec.path();
  require_folder(path, "IMAGE_FOLDER");
  const fs::path root(path);
  std::error_code ec;
  if (!fs::is_directory(root / "train", ec)) {
    throw UserError("image folder " + path + " has no train/ folder (one subfolder per class)");
  }
  const char* test_name = fs::is_directory(root / "test", ec) ? "test" : "val";
  if (!fs::is_directory(root / test_name, ec)) {
    throw UserError("image folder " + path + " has neither a test/ nor a val/ folder");
  }
  DatasetSplits splits;
  splits.class_names = subfolders(root / "train");
  if (splits.class_names.empty()) {
    throw UserError("image folder " + path + ": train/ holds no class folders");
  }
  const auto classes = static_cast<int>(splits.class_names.size());
  for (Dataset* d : {&splits.train, &splits.test}) {
    d->channels = f.channels();
    d->height = f.height();
    d->width = f.width();
    d->classes = classes;
    d->from_files = true;
    d->root = path;
    d->image_folder = f;
  }
  for (int32_t c = 0; c < classes; ++c) {
    const std::string& name = splits.class_names[static_cast<size_t>(c)];
    if (list_class_folder(root, root / "train" / name, c, &splits.train, &splits.ignored_files) ==
        0) {
      splits.empty_classes.push_back("train/" + name);
    }
  }
  for (const std::string& name : subfolders(root / test_name)) {
    auto at = std::lower_bound(splits.class_names.begin(), splits.class_names.end(), name);
    if (at == splits.class_names.end() || *at != name) {
      throw UserError("image folder " + path + ": " + test_name + "/" + name +
                      " is not one of the classes in train/");
    }
    list_class_folder(root, root / test_name / name,
                      static_cast<int32_t>(at - splits.class_names.begin()), &splits.test,
                      &splits.ignored_files);
  }
  if (splits.train.size() == 0) {
    throw UserError("image folder " + path + ": train/ holds no images (.png, .jpg, .jpeg)");
  }
  if (splits.test.size() == 0) {
    throw UserError("image folder " + path + ": " + test_name + "/ holds no images");
  }
  return splits;
}

}  // namespace

Dataset parse_idx(std::vector<uint8_t> images, const std::string& images_source,
                  const std::vector<uint8_t>& labels, const std::string& labels_source) {
  IdxHeader ih = parse_idx_header(images, images_source, true);
  IdxHeader lh = parse_idx_header(labels, labels_source, false);
  if (ih.count != lh.count) {
    throw UserError("IDX images file " + images_source + " holds " + std::to_string(ih.count) +
                    " images but labels file " + labels_source + " holds " +
                    std::to_string(lh.count) + " labels");
  }
  Dataset d;
  d.channels = 1;
  d.height = static_cast<int>(ih.rows);
  d.width = static_cast<int>(ih.cols);
  d.classes = kIdxClasses;
  d.labels.resize(lh.count);
  for (size_t i = 0; i < lh.count; ++i) {
    uint8_t label = labels[8 + i];
    if (label >= kIdxClasses) {
      throw UserError("IDX labels file " + labels_source + ": label " + std::to_string(label) +
                      " of sample " + std::to_string(i) + " is out of range [0, " +
                      std::to_string(kIdxClasses) + ")");
    }
    d.labels[i] = label;
  }
  // Drop the header in place rather than copying the pixels.
  images.erase(images.begin(), images.begin() + 16);
  d.pixels = std::move(images);
  return d;
}

Dataset read_idx(const std::string& images_path, const std::string& labels_path) {
  std::vector<uint8_t> images = read_file(images_path);
  (void)parse_idx_header(images, images_path, true);  // a bad images file is named first
  return parse_idx(std::move(images), images_path, read_file(labels_path), labels_path);
}

void append_cifar10(const std::vector<uint8_t>& data, const std::string& source, Dataset* d) {
  d->channels = 3;
  d->height = static_cast<int>(kCifarSide);
  d->width = static_cast<int>(kCifarSide);
  d->classes = kCifarClasses;
  if (data.empty()) throw UserError("CIFAR10 batch file " + source + " is empty");
  if (data.size() % kCifarRecord != 0) {
    throw UserError("CIFAR10 batch file " + source + ": size " + std::to_string(data.size()) +
                    " bytes is not a multiple of the " + std::to_string(kCifarRecord) +
                    "-byte record (truncated or not a CIFAR-10 binary batch)");
  }
  size_t records = data.size() / kCifarRecord;
  size_t first = d->labels.size();
  d->labels.resize(first + records);
  size_t pixel_bytes = (first + records) * kCifarPixels;
  if (d->pixels.capacity() < pixel_bytes) {
    d->pixels.reserve(std::max(pixel_bytes, 2 * d->pixels.capacity()));
  }
  d->pixels.resize(pixel_bytes);
  for (size_t r = 0; r < records; ++r) {
    const uint8_t* rec = data.data() + r * kCifarRecord;
    if (rec[0] >= kCifarClasses) {
      throw UserError("CIFAR10 batch file " + source + ": label " + std::to_string(rec[0]) +
                      " of record " + std::to_string(r) + " is out of range [0, " +
                      std::to_string(kCifarClasses) + ")");
    }
    d->labels[first + r] = rec[0];
    std::memcpy(d->pixels.data() + (first + r) * kCifarPixels, rec + 1, kCifarPixels);
  }
}

Dataset read_cifar10(const std::vector<std::string>& batch_paths) {
  if (batch_paths.empty()) throw UserError("CIFAR10: no batch files to read");
  Dataset d;
  for (const std::string& path : batch_paths) append_cifar10(read_file(path), path, &d);
  return d;
}

namespace {

// data.classes and data.positive_classes: keeps the samples of the chosen
// classes and gives them their new labels (and names).
void select_classes(const DataSpec& spec, DatasetSplits& splits) {
  if (spec.classes_size() == 0 && spec.positive_classes_size() == 0) return;
  const int k = splits.train.classes;
  std::vector<int> keep(spec.classes().begin(), spec.classes().end());
  if (keep.empty()) {
    for (int c = 0; c < k; ++c) keep.push_back(c);
  }
  std::vector<int> label_of(static_cast<size_t>(k), -1);
  for (size_t i = 0; i < keep.size(); ++i) {
    const int c = keep[i];
    if (c < 0 || c >= k) {
      throw UserError("data.classes: class " + std::to_string(c) +
                      " is outside the dataset's [0, " + std::to_string(k) + ")");
    }
    if (label_of[static_cast<size_t>(c)] >= 0) {
      throw UserError("data.classes: class " + std::to_string(c) + " is named twice");
    }
    label_of[static_cast<size_t>(c)] = static_cast<int>(i);
  }
  auto name = [&](int c) {
    return splits.class_names.empty() ? std::to_string(c)
                                      : splits.class_names[static_cast<size_t>(c)];
  };
  std::vector<std::string> names;
  for (int c : keep) names.push_back(name(c));
  int classes = static_cast<int>(keep.size());
  if (spec.positive_classes_size() > 0) {
    std::vector<int> binary(static_cast<size_t>(k), -1);
    std::string positive, negative;
    int negatives = 0;
    for (int c : spec.positive_classes()) {
      if (c < 0 || c >= k || label_of[static_cast<size_t>(c)] < 0) {
        throw UserError("data.positive_classes: class " + std::to_string(c) +
                        " is not among the dataset's kept classes");
      }
      binary[static_cast<size_t>(c)] = 1;
    }
    for (int c : keep) {
      std::string& names_of = binary[static_cast<size_t>(c)] == 1 ? positive : negative;
      names_of += (names_of.empty() ? "" : " or ") + name(c);
      if (binary[static_cast<size_t>(c)] != 1) binary[static_cast<size_t>(c)] = 0, ++negatives;
    }
    if (negatives == 0) {
      throw UserError(
          "data.positive_classes: every kept class is positive, so there is no label 0");
    }
    for (int c = 0; c < k; ++c) {
      if (label_of[static_cast<size_t>(c)] < 0) binary[static_cast<size_t>(c)] = -1;
    }
    label_of = binary;
    names = {negatives == 1 ? negative : "not " + positive, positive};
    classes = 2;
  }
  for (Dataset* d : {&splits.train, &splits.test}) {
    std::vector<int64_t> indices;
    for (size_t i = 0; i < d->labels.size(); ++i) {
      if (label_of[static_cast<size_t>(d->labels[i])] >= 0)
        indices.push_back(static_cast<int64_t>(i));
    }
    *d = d->take(indices);
    d->classes = classes;
    for (int32_t& label : d->labels) label = label_of[static_cast<size_t>(label)];
  }
  if (!splits.class_names.empty()) splits.class_names = names;
}

}  // namespace

DatasetSplits load_dataset(const DataSpec& spec, uint64_t seed, bool empty_classes_allowed) {
  check_limit(spec.train_limit(), "train_limit");
  check_limit(spec.test_limit(), "test_limit");
  DatasetSplits splits;
  switch (spec.format()) {
    case DataSpec::IDX:
      splits = load_idx(spec.path());
      break;
    case DataSpec::CIFAR10:
      splits = load_cifar10(spec.path());
      break;
    case DataSpec::SYNTHETIC:
      splits = make_synthetic(spec.synthetic(), seed);
      break;
    case DataSpec::IMAGE_FOLDER:
      splits = list_image_folder(spec);
      if (!splits.empty_classes.empty() && !empty_classes_allowed &&
          spec.image_folder().bad_images() != ImageFolderSpec::SKIP) {
        throw UserError("image folder " + spec.path() + ": class folder " +
                        splits.empty_classes.front() + " holds no images (" +
                        std::to_string(splits.empty_classes.size()) +
                        " such; data.image_folder.bad_images: SKIP allows them)");
      }
      break;
    default:
      throw UserError("data.format: unknown format " + std::to_string(spec.format()));
  }
  if (spec.class_names_size() > 0) {
    if (spec.class_names_size() != splits.train.classes) {
      throw UserError("data.class_names has " + std::to_string(spec.class_names_size()) +
                      " names but the dataset has " + std::to_string(splits.train.classes) +
                      " classes");
    }
    splits.class_names.assign(spec.class_names().begin(), spec.class_names().end());
  }
  select_classes(spec, splits);
  apply_limit(splits.train, spec.train_limit());
  apply_limit(splits.test, spec.test_limit());
  const int64_t held_out = spec.validation_size();
  if (held_out < 0 || held_out >= splits.train.size()) {
    throw UserError("data.validation_size " + std::to_string(held_out) +
                    " must be >= 0 and leave training samples (the training set has " +
                    std::to_string(splits.train.size()) + ")");
  }
  if (held_out > 0) {
    const int64_t n = splits.train.size();
    // Fisher-Yates from the seed; the first held_out positions are held out.
    std::vector<int64_t> perm(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) perm[static_cast<size_t>(i)] = i;
    Rng rng(derive_seed(seed, RandomStream::kValidation));
    for (int64_t i = n - 1; i > 0; --i) {
      std::swap(perm[static_cast<size_t>(i)], perm[rng.below(static_cast<uint64_t>(i + 1))]);
    }
    std::vector<bool> is_validation(static_cast<size_t>(n), false);
    for (int64_t i = 0; i < held_out; ++i)
      is_validation[static_cast<size_t>(perm[static_cast<size_t>(i)])] = true;
    std::vector<int64_t> train, validation;
    for (int64_t i = 0; i < n; ++i)
      (is_validation[static_cast<size_t>(i)] ? validation : train).push_back(i);
    splits.validation = splits.train.take(validation);
    splits.train = splits.train.take(train);
  }
  return splits;
}

}  // namespace dptrain
