// Labelled image datasets: the IDX (MNIST / Fashion-MNIST) and CIFAR-10
// binary readers and a synthetic generator for tests, held in memory, and
// image folders (PNG and JPEG files), listed here and decoded by the
// BatchLoader as it needs them. Every rank holds the whole listing; the
// sampler and the BatchLoader pick from it. A damaged or missing file is a
// UserError naming the file, never a crash.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dptrain.pb.h"

namespace dptrain {

// Labelled images kept as uint8 (CHW per sample) to keep memory small, or
// named by file; normalised on the fly by the loader.
struct Dataset {
  int channels = 0, height = 0, width = 0, classes = 0;  // of every sample
  std::vector<uint8_t> pixels;                           // size() * C*H*W, unless from_files
  std::vector<int32_t> labels;                           // in [0, classes)
  // IMAGE_FOLDER: sample i is the image root/files[i] (files relative to
  // data.path, so ranks with node-local copies agree), turned into a
  // sample as image_folder says.
  bool from_files = false;
  std::string root;
  std::vector<std::string> files;
  ImageFolderSpec image_folder;
  int64_t size() const;
  int64_t sample_size() const;  // C*H*W
  // IMAGE_FOLDER: the path of sample i's file.
  std::string file_path(int64_t i) const;
  // The samples at `indices`, in that order, of the same shape and kind.
  Dataset take(const std::vector<int64_t>& indices) const;
};

struct DatasetSplits {
  Dataset train, test;
  Dataset validation;  // empty unless data.validation_size > 0
  // data.class_names, or CIFAR10's batches.meta.txt, or IMAGE_FOLDER's
  // class folders; empty if none of them.
  std::vector<std::string> class_names;
  // IMAGE_FOLDER: files in class folders that are not images by their
  // names (left out), and class folders holding no images (as
  // "train/NAME"), both relative to data.path.
  std::vector<std::string> ignored_files;
  std::vector<std::string> empty_classes;
};

// Reads the splits named by spec:
//  IDX: train-images-idx3-ubyte, train-labels-idx1-ubyte,
//    t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte in spec.path(), each
//    raw or gzip-compressed with a .gz suffix (the raw file wins if both
//    exist);
//  CIFAR10: data_batch_1..5.bin and test_batch.bin in spec.path() (or in
//    its cifar-10-batches-bin/, where the official archive unpacks);
//  SYNTHETIC: per spec.synthetic(), generated from `seed` (each class a
//    fixed random template, each sample its template plus Gaussian noise),
//    so a small net can learn it; deterministic in the seed;
//  IMAGE_FOLDER: the files named .png, .jpg or .jpeg (any case) under
//    spec.path()/train/CLASS/ and test/CLASS/ (or val/CLASS/), at any
//    depth, in sorted path order; hidden files and folders are left out.
//    A test class folder that train/ lacks is a UserError, and so is an
//    empty train/ class folder unless image_folder.bad_images is SKIP or
//    `empty_classes_allowed` (what data-check uses to report them all).
// Then keeps the first spec.train_limit() / spec.test_limit() samples
// (0 = all), and moves spec.validation_size() training samples, chosen by
// a permutation drawn from `seed` alone (so every rank count holds out the
// same ones), into `validation`; both keep their original order. classes
// is 10 for IDX and CIFAR10. data.class_names must name every class
// (UserError otherwise); a batches.meta.txt that does not is ignored.
DatasetSplits load_dataset(const DataSpec& spec, uint64_t seed, bool empty_classes_allowed = false);

// The readers of the bytes themselves, which the file readers call and the
// fuzz targets (tests/fuzz/) call alike; `source` names the bytes in
// errors. Every malformed input is a UserError.
Dataset parse_idx(std::vector<uint8_t> images, const std::string& images_source,
                  const std::vector<uint8_t>& labels, const std::string& labels_source);
// Adds one CIFAR-10 batch's records (and sets d's shape).
void append_cifar10(const std::vector<uint8_t>& batch, const std::string& source, Dataset* d);

// Lower-level readers, for tests and tools. Files are read through zlib's
// gz* API, which reads gzip and raw files alike whatever their names.
Dataset read_idx(const std::string& images_path, const std::string& labels_path);
// Concatenates the 3073-byte records (label, then 3x32x32 CHW) of all files.
Dataset read_cifar10(const std::vector<std::string>& batch_paths);

}  // namespace dptrain
