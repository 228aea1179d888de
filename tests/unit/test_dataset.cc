// The dataset readers: IDX (raw and gzip), CIFAR-10, synthetic data and
// limits, every kind of damaged file, and the real Fashion-MNIST.
#include "core/dataset.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"

namespace dptrain {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;
using ::testing::HasSubstr;

void put_be32(Bytes& b, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) b.push_back(static_cast<uint8_t>(v >> shift));
}

Bytes idx_header(uint32_t n, uint32_t rows, uint32_t cols) {
  Bytes b;
  put_be32(b, 0x00000803);
  put_be32(b, n);
  put_be32(b, rows);
  put_be32(b, cols);
  return b;
}

Bytes idx_images(uint32_t n, uint32_t rows, uint32_t cols, uint8_t first = 0) {
  Bytes b = idx_header(n, rows, cols);
  for (uint32_t i = 0; i < n * rows * cols; ++i) b.push_back(static_cast<uint8_t>(first + i * 7));
  return b;
}

Bytes idx_labels(const std::vector<uint8_t>& labels) {
  Bytes b;
  put_be32(b, 0x00000801);
  put_be32(b, static_cast<uint32_t>(labels.size()));
  b.insert(b.end(), labels.begin(), labels.end());
  return b;
}

// CIFAR-10 records: label, then 3x32x32 pixels (pixel p of record r is r + p).
Bytes cifar_records(const std::vector<uint8_t>& labels) {
  Bytes b;
  for (size_t r = 0; r < labels.size(); ++r) {
    b.push_back(labels[r]);
    for (int p = 0; p < 3072; ++p) b.push_back(static_cast<uint8_t>(r + static_cast<size_t>(p)));
  }
  return b;
}

class DatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int counter = 0;
    dir_ = fs::temp_directory_path() /
           ("dptrain_test_dataset_" + std::to_string(getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  std::string write(const std::string& name, const Bytes& bytes) const {
    std::ofstream out(path(name), std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    EXPECT_TRUE(out.good());
    return path(name);
  }

  std::string write_gz(const std::string& name, const Bytes& bytes) const {
    gzFile f = gzopen(path(name).c_str(), "wb");
    EXPECT_NE(f, nullptr);
    if (!bytes.empty()) {
      EXPECT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
                static_cast<int>(bytes.size()));
    }
    EXPECT_EQ(gzclose(f), Z_OK);
    return path(name);
  }

  Bytes read_raw(const std::string& file) const {
    std::ifstream in(file, std::ios::binary);
    return Bytes(std::istreambuf_iterator<char>(in), {});
  }

  // A complete, valid IDX folder: 5 train and 3 test images of 2x3.
  void write_idx_folder(bool gzip) {
    auto put = [&](const std::string& name, const Bytes& b) {
      if (gzip) {
        write_gz(name + ".gz", b);
      } else {
        write(name, b);
      }
    };
    put("train-images-idx3-ubyte", idx_images(5, 2, 3));
    put("train-labels-idx1-ubyte", idx_labels({0, 1, 2, 3, 9}));
    put("t10k-images-idx3-ubyte", idx_images(3, 2, 3, 100));
    put("t10k-labels-idx1-ubyte", idx_labels({4, 5, 6}));
  }

  DataSpec idx_spec() const {
    DataSpec spec;
    spec.set_format(DataSpec::IDX);
    spec.set_path(dir_.string());
    return spec;
  }

  fs::path dir_;
};

// Runs `f`, expecting a UserError whose message contains every one of `parts`.
template <typename F>
void expect_user_error(F f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no UserError thrown; expected one mentioning " << parts.front();
  } catch (const UserError& e) {
    for (const std::string& part : parts) EXPECT_THAT(e.what(), HasSubstr(part));
  }
}

TEST_F(DatasetTest, ReadsRawIdx) {
  std::string images = write("img", idx_images(4, 2, 3));
  std::string labels = write("lbl", idx_labels({3, 0, 9, 1}));
  Dataset d = read_idx(images, labels);
  EXPECT_EQ(d.size(), 4);
  EXPECT_EQ(d.channels, 1);
  EXPECT_EQ(d.height, 2);
  EXPECT_EQ(d.width, 3);
  EXPECT_EQ(d.classes, 10);
  EXPECT_EQ(d.sample_size(), 6);
  EXPECT_EQ(d.labels, (std::vector<int32_t>{3, 0, 9, 1}));
  Bytes file = idx_images(4, 2, 3);
  EXPECT_EQ(d.pixels, Bytes(file.begin() + 16, file.end()));
}

TEST_F(DatasetTest, ReadsGzipIdxLikeRaw) {
  Dataset raw = read_idx(write("img", idx_images(4, 2, 3)), write("lbl", idx_labels({3, 0, 9, 1})));
  Dataset gz = read_idx(write_gz("img.gz", idx_images(4, 2, 3)),
                        write_gz("lbl.gz", idx_labels({3, 0, 9, 1})));
  EXPECT_EQ(gz.pixels, raw.pixels);
  EXPECT_EQ(gz.labels, raw.labels);
  EXPECT_EQ(gz.height, raw.height);
  EXPECT_EQ(gz.width, raw.width);
}

TEST_F(DatasetTest, LoadsIdxFolderGzipOrRaw) {
  for (bool gzip : {false, true}) {
    SCOPED_TRACE(gzip ? "gzip" : "raw");
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    write_idx_folder(gzip);
    DatasetSplits s = load_dataset(idx_spec(), 1);
    EXPECT_EQ(s.train.size(), 5);
    EXPECT_EQ(s.test.size(), 3);
    EXPECT_EQ(s.train.labels, (std::vector<int32_t>{0, 1, 2, 3, 9}));
    EXPECT_EQ(s.test.labels, (std::vector<int32_t>{4, 5, 6}));
    EXPECT_EQ(s.test.pixels[0], 100);
    EXPECT_EQ(s.train.classes, 10);
    EXPECT_EQ(s.test.classes, 10);
  }
}

TEST_F(DatasetTest, LimitsKeepTheFirstSamples) {
  write_idx_folder(false);
  DataSpec spec = idx_spec();
  spec.set_train_limit(2);
  spec.set_test_limit(1);
  DatasetSplits s = load_dataset(spec, 1);
  EXPECT_EQ(s.train.size(), 2);
  EXPECT_EQ(s.train.pixels.size(), 12u);
  EXPECT_EQ(s.train.labels, (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(s.test.size(), 1);
  EXPECT_EQ(s.test.pixels.size(), 6u);
  EXPECT_EQ(s.test.labels, (std::vector<int32_t>{4}));

  spec.set_train_limit(1000);  // more than there is: all
  EXPECT_EQ(load_dataset(spec, 1).train.size(), 5);

  spec.set_train_limit(-1);
  expect_user_error([&] { load_dataset(spec, 1); }, {"train_limit"});
}

TEST_F(DatasetTest, MissingFileNamesWhatWasTried) {
  write_idx_folder(false);
  fs::remove(path("t10k-labels-idx1-ubyte"));
  expect_user_error([&] { load_dataset(idx_spec(), 1); },
                    {"t10k-labels-idx1-ubyte", "t10k-labels-idx1-ubyte.gz", dir_.string()});
  expect_user_error([&] { read_idx(path("nope-images"), path("t10k-images-idx3-ubyte")); },
                    {"nope-images"});

  DataSpec spec = idx_spec();
  spec.set_path(path("no-such-folder"));
  expect_user_error([&] { load_dataset(spec, 1); }, {"no-such-folder"});
}

TEST_F(DatasetTest, TruncatedImagesFile) {
  Bytes images = idx_images(4, 2, 3);
  images.resize(images.size() - 1);
  std::string img = write("short-images", images);
  std::string lbl = write("lbl", idx_labels({1, 2, 3, 4}));
  expect_user_error([&] { read_idx(img, lbl); }, {"short-images", "truncated"});
  // Also when the header itself is cut short.
  images.resize(10);
  img = write("short-header", images);
  expect_user_error([&] { read_idx(img, lbl); }, {"short-header", "truncated"});
}

TEST_F(DatasetTest, TrailingBytesAreAMismatch) {
  Bytes labels = idx_labels({1, 2, 3, 4});
  labels.push_back(0);
  std::string img = write("img", idx_images(4, 2, 3));
  std::string lbl = write("long-labels", labels);
  expect_user_error([&] { read_idx(img, lbl); }, {"long-labels", "4 labels"});
}

TEST_F(DatasetTest, TruncatedGzipStream) {
  std::string full = write_gz("full.gz", idx_images(50, 8, 8));
  Bytes gz = read_raw(full);
  gz.resize(gz.size() / 2);
  std::string img = write("cut-images.gz", gz);
  std::string lbl = write("lbl", idx_labels(std::vector<uint8_t>(50, 1)));
  expect_user_error([&] { read_idx(img, lbl); }, {"cut-images.gz"});
}

TEST_F(DatasetTest, CorruptGzipStream) {
  Bytes gz = read_raw(write_gz("full.gz", idx_images(50, 8, 8)));
  for (size_t i = 20; i < gz.size() - 8; i += 3) gz[i] ^= 0x5a;
  std::string img = write("garbled-images.gz", gz);
  std::string lbl = write("lbl", idx_labels(std::vector<uint8_t>(50, 1)));
  expect_user_error([&] { read_idx(img, lbl); }, {"garbled-images.gz"});
}

TEST_F(DatasetTest, WrongMagic) {
  std::string img = write("img", idx_images(4, 2, 3));
  std::string lbl = write("lbl", idx_labels({1, 2, 3, 4}));
  // Images and labels swapped.
  expect_user_error([&] { read_idx(lbl, img); }, {"lbl", "magic", "0x00000801", "0x00000803"});
  Bytes labels = idx_labels({1, 2, 3, 4});
  labels[3] = 0x03;
  std::string bad = write("bad-magic-labels", labels);
  expect_user_error([&] { read_idx(img, bad); }, {"bad-magic-labels", "magic"});
}

TEST_F(DatasetTest, ImageAndLabelCountsDiffer) {
  std::string img = write("img4", idx_images(4, 2, 3));
  std::string lbl = write("lbl3", idx_labels({1, 2, 3}));
  expect_user_error([&] { read_idx(img, lbl); }, {"img4", "lbl3", "4 images", "3 labels"});
}

TEST_F(DatasetTest, EmptyFile) {
  std::string img = write("img", idx_images(4, 2, 3));
  std::string empty = write("empty-labels", {});
  expect_user_error([&] { read_idx(img, empty); }, {"empty-labels", "empty"});
  std::string empty_gz = write_gz("empty-images.gz", {});
  expect_user_error([&] { read_idx(empty_gz, empty); }, {"empty-images.gz", "empty"});
}

TEST_F(DatasetTest, LabelOutOfRange) {
  std::string img = write("img", idx_images(4, 2, 3));
  std::string lbl = write("bad-labels", idx_labels({1, 2, 10, 4}));
  expect_user_error([&] { read_idx(img, lbl); }, {"bad-labels", "label 10", "sample 2"});
}

TEST_F(DatasetTest, HugeHeaderCountsAreErrorsNotAllocations) {
  std::string img = write("huge-images", idx_header(0xffffffffu, 0x7fff, 0x7fff));
  std::string lbl = write("lbl", idx_labels({1}));
  expect_user_error([&] { read_idx(img, lbl); }, {"huge-images", "truncated"});
  std::string zero = write("zero-images", idx_images(0, 2, 3));
  expect_user_error([&] { read_idx(zero, lbl); }, {"zero-images"});
  std::string flat = write("flat-images", idx_images(1, 0, 3));
  expect_user_error([&] { read_idx(flat, lbl); }, {"flat-images", "0x3"});
}

// Every prefix of a valid file, and every single-byte change to its header,
// gives a clean UserError (or, where the change is harmless, a dataset).
TEST_F(DatasetTest, DamagedFilesNeverCrash) {
  Bytes images = idx_images(3, 2, 2);
  Bytes labels = idx_labels({1, 2, 3});
  std::string lbl = write("lbl", labels);
  for (size_t len = 0; len < images.size(); ++len) {
    std::string img =
        write("img", Bytes(images.begin(), images.begin() + static_cast<std::ptrdiff_t>(len)));
    EXPECT_THROW(read_idx(img, lbl), UserError) << "prefix of " << len << " bytes";
  }
  for (size_t i = 0; i < 16; ++i) {
    for (uint8_t v : {0x00, 0x01, 0x7f, 0xff}) {
      Bytes damaged = images;
      damaged[i] = v;
      std::string img = write("img", damaged);
      try {
        Dataset d = read_idx(img, lbl);
        EXPECT_EQ(d.size(), 3);
      } catch (const UserError&) {
      }
    }
  }
}

TEST_F(DatasetTest, ReadsCifar10) {
  std::string a = write("a.bin", cifar_records({3, 7}));
  std::string b = write_gz("b.bin.gz", cifar_records({9}));
  Dataset d = read_cifar10({a, b});
  EXPECT_EQ(d.size(), 3);
  EXPECT_EQ(d.channels, 3);
  EXPECT_EQ(d.height, 32);
  EXPECT_EQ(d.width, 32);
  EXPECT_EQ(d.classes, 10);
  EXPECT_EQ(d.labels, (std::vector<int32_t>{3, 7, 9}));
  ASSERT_EQ(d.pixels.size(), 3u * 3072);
  EXPECT_EQ(d.pixels[0], 0);
  EXPECT_EQ(d.pixels[3071], static_cast<uint8_t>(3071));
  EXPECT_EQ(d.pixels[3072], 1);          // record 1, pixel 0
  EXPECT_EQ(d.pixels[2 * 3072 + 5], 5);  // b's record 0, pixel 5
}

TEST_F(DatasetTest, LoadsCifar10Folder) {
  for (int i = 1; i <= 5; ++i) {
    write("data_batch_" + std::to_string(i) + ".bin", cifar_records({static_cast<uint8_t>(i)}));
  }
  write("test_batch.bin", cifar_records({0, 8}));
  DataSpec spec;
  spec.set_format(DataSpec::CIFAR10);
  spec.set_path(dir_.string());
  DatasetSplits s = load_dataset(spec, 1);
  EXPECT_EQ(s.train.labels, (std::vector<int32_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(s.test.labels, (std::vector<int32_t>{0, 8}));

  fs::remove(path("data_batch_4.bin"));
  expect_user_error([&] { load_dataset(spec, 1); }, {"data_batch_4.bin", dir_.string()});
}

TEST_F(DatasetTest, LoadsCifar10FromTheArchiveFolder) {
  fs::create_directories(dir_ / "cifar-10-batches-bin");
  for (const char* name : {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                           "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"}) {
    write(std::string("cifar-10-batches-bin/") + name, cifar_records({6}));
  }
  DataSpec spec;
  spec.set_format(DataSpec::CIFAR10);
  spec.set_path(dir_.string());
  DatasetSplits s = load_dataset(spec, 1);
  EXPECT_EQ(s.train.size(), 5);
  EXPECT_EQ(s.test.size(), 1);
}

TEST_F(DatasetTest, ClassNamesComeFromTheConfigOrCifarsMetaFile) {
  for (int i = 1; i <= 5; ++i)
    write("data_batch_" + std::to_string(i) + ".bin", cifar_records({1}));
  write("test_batch.bin", cifar_records({0}));
  DataSpec spec;
  spec.set_format(DataSpec::CIFAR10);
  spec.set_path(dir_.string());
  EXPECT_TRUE(load_dataset(spec, 1).class_names.empty());
  const std::vector<std::string> names = {"airplane", "automobile", "bird",  "cat",  "deer",
                                          "dog",      "frog",       "horse", "ship", "truck"};
  std::string meta;
  for (const auto& n : names) meta += n + "\n";
  write("batches.meta.txt", std::vector<uint8_t>(meta.begin(), meta.end()));
  EXPECT_EQ(load_dataset(spec, 1).class_names, names);
  // The config's names win; they must name every class.
  for (int c = 0; c < 10; ++c) spec.add_class_names("c" + std::to_string(c));
  EXPECT_EQ(load_dataset(spec, 1).class_names.front(), "c0");
  spec.mutable_class_names()->RemoveLast();
  expect_user_error([&] { load_dataset(spec, 1); },
                    {"data.class_names has 9 names but the dataset has 10 classes"});
  // A meta file that does not name every class is ignored.
  spec.clear_class_names();
  write("batches.meta.txt", std::vector<uint8_t>{'c', 'a', 't', '\n'});
  EXPECT_TRUE(load_dataset(spec, 1).class_names.empty());
}

TEST_F(DatasetTest, DamagedCifar10) {
  Bytes records = cifar_records({1, 2});
  records.pop_back();
  std::string cut = write("cut.bin", records);
  expect_user_error([&] { read_cifar10({cut}); }, {"cut.bin", "3073"});
  std::string empty = write("empty.bin", {});
  expect_user_error([&] { read_cifar10({empty}); }, {"empty.bin", "empty"});
  std::string bad = write("bad-label.bin", cifar_records({1, 12}));
  expect_user_error([&] { read_cifar10({bad}); }, {"bad-label.bin", "label 12", "record 1"});
  expect_user_error([&] { read_cifar10({path("absent.bin")}); }, {"absent.bin"});
}

DataSpec synthetic_spec() {
  DataSpec spec;
  spec.set_format(DataSpec::SYNTHETIC);
  spec.mutable_synthetic()->set_train_size(300);
  spec.mutable_synthetic()->set_test_size(100);
  spec.mutable_synthetic()->set_channels(2);
  spec.mutable_synthetic()->set_height(6);
  spec.mutable_synthetic()->set_width(5);
  spec.mutable_synthetic()->set_classes(4);
  return spec;
}

TEST(SyntheticDatasetTest, ShapeAndLabels) {
  DatasetSplits s = load_dataset(synthetic_spec(), 7);
  for (const Dataset* d : {&s.train, &s.test}) {
    EXPECT_EQ(d->channels, 2);
    EXPECT_EQ(d->height, 6);
    EXPECT_EQ(d->width, 5);
    EXPECT_EQ(d->classes, 4);
    EXPECT_EQ(d->pixels.size(), static_cast<size_t>(d->size() * 60));
    std::vector<int> per_class(4);
    for (int32_t l : d->labels) {
      ASSERT_GE(l, 0);
      ASSERT_LT(l, 4);
      ++per_class[static_cast<size_t>(l)];
    }
    for (int n : per_class) EXPECT_GT(n, 0);
  }
  EXPECT_EQ(s.train.size(), 300);
  EXPECT_EQ(s.test.size(), 100);
}

TEST(SyntheticDatasetTest, DeterministicInTheSeed) {
  DatasetSplits a = load_dataset(synthetic_spec(), 7);
  DatasetSplits b = load_dataset(synthetic_spec(), 7);
  DatasetSplits c = load_dataset(synthetic_spec(), 8);
  EXPECT_EQ(a.train.pixels, b.train.pixels);
  EXPECT_EQ(a.train.labels, b.train.labels);
  EXPECT_EQ(a.test.pixels, b.test.pixels);
  EXPECT_NE(a.train.pixels, c.train.pixels);
  EXPECT_NE(a.test.pixels, c.test.pixels);
  EXPECT_NE(a.train.pixels, a.test.pixels);
}

TEST(SyntheticDatasetTest, LimitsApply) {
  DataSpec spec = synthetic_spec();
  spec.set_train_limit(10);
  spec.set_test_limit(3);
  DatasetSplits limited = load_dataset(spec, 7);
  DatasetSplits full = load_dataset(synthetic_spec(), 7);
  EXPECT_EQ(limited.train.size(), 10);
  EXPECT_EQ(limited.test.size(), 3);
  EXPECT_TRUE(std::equal(limited.train.pixels.begin(), limited.train.pixels.end(),
                         full.train.pixels.begin()));
  EXPECT_EQ(limited.train.pixels.size(), 600u);
}

// Learnable: a nearest-class-mean classifier fitted on train is right on
// nearly all of test, so a small net can learn it too.
TEST(SyntheticDatasetTest, ClassesAreSeparable) {
  DatasetSplits s = load_dataset(synthetic_spec(), 3);
  const int64_t n = s.train.sample_size();
  std::vector<double> mean(static_cast<size_t>(4 * n));
  std::vector<int> count(4);
  for (int64_t i = 0; i < s.train.size(); ++i) {
    int32_t l = s.train.labels[static_cast<size_t>(i)];
    ++count[static_cast<size_t>(l)];
    for (int64_t p = 0; p < n; ++p) {
      mean[static_cast<size_t>(l * n + p)] += s.train.pixels[static_cast<size_t>(i * n + p)];
    }
  }
  for (int k = 0; k < 4; ++k) {
    for (int64_t p = 0; p < n; ++p)
      mean[static_cast<size_t>(k * n + p)] /= count[static_cast<size_t>(k)];
  }
  int right = 0;
  for (int64_t i = 0; i < s.test.size(); ++i) {
    int best = 0;
    double best_dist = 1e300;
    for (int k = 0; k < 4; ++k) {
      double dist = 0;
      for (int64_t p = 0; p < n; ++p) {
        double d =
            s.test.pixels[static_cast<size_t>(i * n + p)] - mean[static_cast<size_t>(k * n + p)];
        dist += d * d;
      }
      if (dist < best_dist) {
        best_dist = dist;
        best = k;
      }
    }
    right += best == s.test.labels[static_cast<size_t>(i)];
  }
  EXPECT_GE(right, 95);
}

TEST(ValidationSplitTest, HoldsOutTheSameSamplesForASeedAndNeverTrainsOnThem) {
  DataSpec spec = synthetic_spec();
  const DatasetSplits all = load_dataset(spec, 5);
  spec.set_validation_size(60);
  const DatasetSplits split = load_dataset(spec, 5);
  ASSERT_EQ(split.validation.size(), 60);
  ASSERT_EQ(split.train.size(), all.train.size() - 60);
  EXPECT_EQ(split.test.labels, all.test.labels);
  // Every original sample is in exactly one part, each part in the
  // original order.
  const size_t n = static_cast<size_t>(all.train.sample_size());
  auto sample = [n](const Dataset& d, int64_t i) {
    return std::vector<uint8_t>(d.pixels.begin() + static_cast<std::ptrdiff_t>(i * n),
                                d.pixels.begin() + static_cast<std::ptrdiff_t>((i + 1) * n));
  };
  int64_t t = 0, v = 0;
  for (int64_t i = 0; i < all.train.size(); ++i) {
    const auto x = sample(all.train, i);
    if (v < split.validation.size() && sample(split.validation, v) == x) {
      ++v;
    } else {
      ASSERT_LT(t, split.train.size());
      ASSERT_EQ(sample(split.train, t), x) << i;
      ++t;
    }
  }
  EXPECT_EQ(v, 60);
  EXPECT_EQ(t, split.train.size());
  // The same seed holds out the same samples; another seed others.
  EXPECT_EQ(load_dataset(spec, 5).validation.pixels, split.validation.pixels);
  EXPECT_NE(load_dataset(spec, 6).validation.pixels, split.validation.pixels);
}

TEST(ValidationSplitTest, MustLeaveTrainingSamples) {
  DataSpec spec = synthetic_spec();
  spec.set_validation_size(300);
  EXPECT_THROW(load_dataset(spec, 5), UserError);
  spec.set_validation_size(-1);
  EXPECT_THROW(load_dataset(spec, 5), UserError);
}

TEST(SyntheticDatasetTest, RejectsBadSizes) {
  DataSpec spec = synthetic_spec();
  spec.mutable_synthetic()->set_classes(0);
  expect_user_error([&] { load_dataset(spec, 1); }, {"classes"});
  spec = synthetic_spec();
  spec.mutable_synthetic()->set_height(-3);
  expect_user_error([&] { load_dataset(spec, 1); }, {"height"});
}

TEST(FashionMnistDatasetTest, LoadsTheRealData) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!fs::exists(dir + "/train-images-idx3-ubyte.gz")) {
    GTEST_SKIP() << dir << " is absent (install the Debian package dataset-fashion-mnist)";
  }
  DataSpec spec;  // the defaults point at the real data
  auto t0 = std::chrono::steady_clock::now();
  DatasetSplits s = load_dataset(spec, 1);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("loaded Fashion-MNIST in %.3f s\n", seconds);  // reported, not asserted
  EXPECT_EQ(s.train.size(), 60000);
  EXPECT_EQ(s.test.size(), 10000);
  for (const Dataset* d : {&s.train, &s.test}) {
    EXPECT_EQ(d->channels, 1);
    EXPECT_EQ(d->height, 28);
    EXPECT_EQ(d->width, 28);
    EXPECT_EQ(d->classes, 10);
    EXPECT_EQ(d->pixels.size(), static_cast<size_t>(d->size()) * 784);
  }
  // Fashion-MNIST is balanced: 6000 / 1000 samples of every class.
  std::vector<int> train_counts(10), test_counts(10);
  for (int32_t l : s.train.labels) ++train_counts[static_cast<size_t>(l)];
  for (int32_t l : s.test.labels) ++test_counts[static_cast<size_t>(l)];
  EXPECT_EQ(train_counts, std::vector<int>(10, 6000));
  EXPECT_EQ(test_counts, std::vector<int>(10, 1000));
}

TEST(ClassSelectionTest, KeepsTheChosenClassesRelabelledInTheOrderGiven) {
  DataSpec spec = synthetic_spec();
  for (const char* name : {"a", "b", "c", "d"}) spec.add_class_names(name);
  const DatasetSplits all = load_dataset(spec, 7);
  spec.add_classes(3);
  spec.add_classes(1);
  const DatasetSplits some = load_dataset(spec, 7);
  EXPECT_EQ(some.class_names, (std::vector<std::string>{"d", "b"}));
  for (auto [from, to] : {std::pair{&all.train, &some.train}, std::pair{&all.test, &some.test}}) {
    EXPECT_EQ(to->classes, 2);
    std::vector<int32_t> expected;
    std::vector<uint8_t> pixels;
    const auto sample = static_cast<size_t>(from->sample_size());
    for (size_t i = 0; i < from->labels.size(); ++i) {
      const int32_t l = from->labels[i];
      if (l != 3 && l != 1) continue;
      expected.push_back(l == 3 ? 0 : 1);
      pixels.insert(pixels.end(), from->pixels.begin() + static_cast<ptrdiff_t>(i * sample),
                    from->pixels.begin() + static_cast<ptrdiff_t>((i + 1) * sample));
    }
    EXPECT_EQ(to->labels, expected);
    EXPECT_EQ(to->pixels, pixels);
  }
}

TEST(ClassSelectionTest, PositiveClassesMakeABinaryTask) {
  DataSpec spec = synthetic_spec();
  for (const char* name : {"a", "b", "c", "d"}) spec.add_class_names(name);
  const DatasetSplits all = load_dataset(spec, 7);
  spec.add_classes(0);
  spec.add_classes(2);
  spec.add_positive_classes(2);
  DatasetSplits binary = load_dataset(spec, 7);
  EXPECT_EQ(binary.class_names, (std::vector<std::string>{"a", "c"}));
  std::vector<int32_t> expected;
  for (int32_t l : all.train.labels) {
    if (l == 0 || l == 2) expected.push_back(l == 2);
  }
  EXPECT_EQ(binary.train.labels, expected);
  EXPECT_EQ(binary.train.classes, 2);
  // Without data.classes every class is kept; several negatives are named
  // after the positives.
  spec.clear_classes();
  spec.clear_positive_classes();
  spec.add_positive_classes(1);
  spec.add_positive_classes(3);
  binary = load_dataset(spec, 7);
  EXPECT_EQ(binary.class_names, (std::vector<std::string>{"not b or d", "b or d"}));
  EXPECT_EQ(binary.train.size(), all.train.size());
  for (size_t i = 0; i < all.train.labels.size(); ++i) {
    EXPECT_EQ(binary.train.labels[i], all.train.labels[i] % 2);
  }
}

TEST(ClassSelectionTest, BadSelectionsNameTheField) {
  auto error = [](auto edit) {
    DataSpec spec = synthetic_spec();
    edit(spec);
    try {
      load_dataset(spec, 7);
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_THAT(error([](DataSpec& s) { s.add_classes(4); }),
              HasSubstr("data.classes: class 4 is outside the dataset's [0, 4)"));
  EXPECT_THAT(error([](DataSpec& s) { s.add_classes(1), s.add_classes(1); }),
              HasSubstr("class 1 is named twice"));
  EXPECT_THAT(error([](DataSpec& s) { s.add_classes(1), s.add_positive_classes(2); }),
              HasSubstr("data.positive_classes: class 2"));
  EXPECT_THAT(error([](DataSpec& s) { s.add_classes(1), s.add_positive_classes(1); }),
              HasSubstr("no label 0"));
}

}  // namespace
}  // namespace dptrain
