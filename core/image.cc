#include "core/image.h"

#include <fcntl.h>
#include <png.h>
#include <sys/stat.h>
#include <turbojpeg.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csetjmp>
#include <cstring>
#include <memory>
#include <stdexcept>

#include "core/error.h"

namespace dptrain {
namespace {

void check_size(int width, int height, const std::string& source) {
  if (width <= 0 || height <= 0 || width > kMaxImageSide || height > kMaxImageSide ||
      int64_t{width} * height > kMaxImagePixels) {
    throw UserError(source + ": image size " + std::to_string(width) + "x" +
                    std::to_string(height) + " is outside what dptrain reads (at most " +
                    std::to_string(kMaxImagePixels) + " pixels, " + std::to_string(kMaxImageSide) +
                    " per side)");
  }
}

// PIL's fixed-point BT.601 luma, so grey versions match what users see there.
uint8_t luma(const uint8_t* rgb) {
  return static_cast<uint8_t>((rgb[0] * 19595u + rgb[1] * 38470u + rgb[2] * 7471u + 0x8000u) >> 16);
}

Image to_channels(Image image, int channels) {
  if (image.channels == channels) return image;
  const size_t n = static_cast<size_t>(image.width) * static_cast<size_t>(image.height);
  std::vector<uint8_t> out(n * static_cast<size_t>(channels));
  if (channels == 1) {
    for (size_t p = 0; p < n; ++p) out[p] = luma(&image.pixels[3 * p]);
  } else {
    for (size_t p = 0; p < n; ++p) out[3 * p] = out[3 * p + 1] = out[3 * p + 2] = image.pixels[p];
  }
  image.pixels = std::move(out);
  image.channels = channels;
  return image;
}

Image decode_png(const uint8_t* bytes, size_t size, const std::string& source) {
  png_image png;
  std::memset(&png, 0, sizeof png);
  png.version = PNG_IMAGE_VERSION;
  // The simplified API reports errors in png.message and frees its state
  // itself; no longjmp reaches this frame.
  if (png_image_begin_read_from_memory(&png, bytes, size) == 0) {
    throw UserError(source + ": not a readable PNG (" + png.message + ")");
  }
  const bool colour = (png.format & PNG_FORMAT_FLAG_COLOR) != 0;
  try {
    check_size(static_cast<int>(std::min<png_uint_32>(png.width, kMaxImageSide + 1)),
               static_cast<int>(std::min<png_uint_32>(png.height, kMaxImageSide + 1)), source);
  } catch (...) {
    png_image_free(&png);
    throw;
  }
  png.format = colour ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
  Image image;
  image.width = static_cast<int>(png.width);
  image.height = static_cast<int>(png.height);
  image.channels = colour ? 3 : 1;
  // Zeroed: alpha is composited onto what the buffer holds, black.
  image.pixels.assign(PNG_IMAGE_SIZE(png), 0);
  if (png_image_finish_read(&png, nullptr, image.pixels.data(), 0, nullptr) == 0) {
    throw UserError(source + ": damaged PNG (" + png.message + ")");
  }
  return image;
}

struct TjDeleter {
  void operator()(void* handle) const { tjDestroy(handle); }
};

Image decode_jpeg(const uint8_t* bytes, size_t size, int channels, const std::string& source) {
  // One decompressor per thread: creating one costs more than decoding a
  // small image.
  thread_local std::unique_ptr<void, TjDeleter> handle(tjInitDecompress());
  if (!handle) throw std::runtime_error("TurboJPEG: cannot create a decompressor");
  tjhandle tj = handle.get();
  if (size > std::numeric_limits<unsigned long>::max()) throw UserError(source + ": too large");
  int width = 0, height = 0, subsampling = 0, colorspace = 0;
  const auto length = static_cast<unsigned long>(size);
  if (tjDecompressHeader3(tj, bytes, length, &width, &height, &subsampling, &colorspace) != 0) {
    throw UserError(source + ": not a readable JPEG (" + tjGetErrorStr2(tj) + ")");
  }
  if (width <= 0 || height <= 0) {
    throw UserError(source + ": not a readable JPEG (it ends before its frame header)");
  }
  check_size(width, height, source);
  Image image;
  image.width = width;
  image.height = height;
  image.channels = channels;
  image.pixels.resize(static_cast<size_t>(width) * static_cast<size_t>(height) *
                      static_cast<size_t>(channels));
  if (tjDecompress2(tj, bytes, length, image.pixels.data(), width, 0, height,
                    channels == 1 ? TJPF_GRAY : TJPF_RGB, TJFLAG_STOPONWARNING) != 0) {
    throw UserError(source + ": damaged or truncated JPEG (" + tjGetErrorStr2(tj) + ")");
  }
  return image;
}

// One output coordinate's filter: weights of input pixels first, first+1...
struct Taps {
  std::vector<int> first, count;
  std::vector<float> weights;  // count[o] of them per output o, in order
};

void make_taps(int in_size, double begin, double length, int out_size, Taps* taps) {
  const double scale = length / out_size;
  const double support = std::max(1.0, scale);
  taps->first.resize(static_cast<size_t>(out_size));
  taps->count.resize(static_cast<size_t>(out_size));
  taps->weights.clear();
  for (int o = 0; o < out_size; ++o) {
    const double center = begin + (o + 0.5) * scale;
    int lo = std::max(0, static_cast<int>(std::floor(center - support)));
    int hi = std::min(in_size, static_cast<int>(std::ceil(center + support)));
    const size_t at = taps->weights.size();
    double sum = 0;
    for (int i = lo; i < hi; ++i) {
      const double w = std::max(0.0, 1.0 - std::abs(i + 0.5 - center) / support);
      taps->weights.push_back(static_cast<float>(w));
      sum += w;
    }
    if (sum <= 0) {  // a box beyond the edge: the nearest edge pixel
      taps->weights.resize(at);
      lo = std::clamp(static_cast<int>(std::floor(center)), 0, in_size - 1);
      hi = lo + 1;
      taps->weights.push_back(1.f);
      sum = 1;
    }
    for (size_t k = at; k < taps->weights.size(); ++k)
      taps->weights[k] = static_cast<float>(taps->weights[k] / sum);
    taps->first[static_cast<size_t>(o)] = lo;
    taps->count[static_cast<size_t>(o)] = hi - lo;
  }
}

void append(png_structp png, png_bytep data, png_size_t length) {
  auto* out = static_cast<std::string*>(png_get_io_ptr(png));
  out->append(reinterpret_cast<const char*>(data), length);
}

void flush(png_structp) {}

}  // namespace

Image decode_image(const uint8_t* bytes, size_t size, int channels, const std::string& source) {
  if (channels != 1 && channels != 3) {
    throw std::logic_error("decode_image: channels must be 1 or 3");
  }
  static constexpr uint8_t kPng[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (size >= sizeof kPng && std::memcmp(bytes, kPng, sizeof kPng) == 0) {
    return to_channels(decode_png(bytes, size, source), channels);
  }
  if (size >= 3 && bytes[0] == 0xff && bytes[1] == 0xd8 && bytes[2] == 0xff) {
    return decode_jpeg(bytes, size, channels, source);
  }
  if (size == 0) throw UserError(source + ": empty file, not an image");
  throw UserError(source + ": neither a PNG nor a JPEG (its first bytes are no image signature)");
}

void read_image_file(const std::string& path, std::vector<uint8_t>* bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw UserError("cannot open " + path + ": " + std::strerror(errno));
  struct stat st {};
  size_t used = 0;
  try {
    if (::fstat(fd, &st) != 0) throw UserError("cannot read " + path + ": " + std::strerror(errno));
    if (S_ISDIR(st.st_mode)) throw UserError("cannot read " + path + ": is a folder");
    bytes->resize(static_cast<size_t>(std::max<off_t>(st.st_size, 0)) + 1);
    for (;;) {
      if (used == bytes->size()) bytes->resize(bytes->size() * 2);
      const ssize_t got = ::read(fd, bytes->data() + used, bytes->size() - used);
      if (got < 0) {
        if (errno == EINTR) continue;
        throw UserError("cannot read " + path + ": " + std::strerror(errno));
      }
      if (got == 0) break;
      used += static_cast<size_t>(got);
    }
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  bytes->resize(used);
}

Image load_image(const std::string& path, int channels, std::vector<uint8_t>* bytes) {
  read_image_file(path, bytes);
  return decode_image(bytes->data(), bytes->size(), channels, path);
}

Box center_box(int width, int height, int resize, int out_width, int out_height) {
  if (resize <= 0) return Box{0, 0, static_cast<double>(width), static_cast<double>(height)};
  // Source pixels per pixel of the image scaled to `resize` on its shorter side.
  const double s = static_cast<double>(std::min(width, height)) / resize;
  const double w = out_width * s, h = out_height * s;
  return Box{(width - w) / 2, (height - h) / 2, w, h};
}

Box random_resized_box(int width, int height, const RandomResizedCrop& spec, Rng& rng) {
  const double area = static_cast<double>(width) * height;
  const double log_lo = std::log(static_cast<double>(spec.ratio_min()));
  const double log_hi = std::log(static_cast<double>(spec.ratio_max()));
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target =
        area * (spec.scale_min() + (spec.scale_max() - spec.scale_min()) * rng.uniform());
    const double ratio = std::exp(log_lo + (log_hi - log_lo) * rng.uniform());
    const double w = std::nearbyint(std::sqrt(target * ratio));
    const double h = std::nearbyint(std::sqrt(target / ratio));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const double y = static_cast<double>(rng.below(static_cast<uint64_t>(height - h) + 1));
      const double x = static_cast<double>(rng.below(static_cast<uint64_t>(width - w) + 1));
      return Box{x, y, w, h};
    }
  }
  double w = width, h = height;
  const double ratio = static_cast<double>(width) / height;
  if (ratio < spec.ratio_min()) {
    h = std::max(1.0, std::nearbyint(w / spec.ratio_min()));
  } else if (ratio > spec.ratio_max()) {
    w = std::max(1.0, std::nearbyint(h * spec.ratio_max()));
  }
  return Box{(width - w) / 2, (height - h) / 2, w, h};
}

void resample(const Image& image, const Box& box, int out_width, int out_height, uint8_t* out) {
  const int channels = image.channels;
  const size_t plane = static_cast<size_t>(out_width) * static_cast<size_t>(out_height);
  if (box.x == 0 && box.y == 0 && box.width == image.width && box.height == image.height &&
      out_width == image.width && out_height == image.height) {
    for (size_t p = 0; p < plane; ++p)
      for (int c = 0; c < channels; ++c)
        out[static_cast<size_t>(c) * plane + p] =
            image.pixels[p * static_cast<size_t>(channels) + static_cast<size_t>(c)];
    return;
  }
  thread_local Taps across, down;
  thread_local std::vector<float> rows;
  make_taps(image.width, box.x, box.width, out_width, &across);
  make_taps(image.height, box.y, box.height, out_height, &down);
  // Horizontal pass over the source rows the vertical taps read.
  const int row_lo = down.first.front();
  const int row_hi = down.first.back() + down.count.back();
  rows.assign(static_cast<size_t>(row_hi - row_lo) * static_cast<size_t>(out_width) *
                  static_cast<size_t>(channels),
              0.f);
  for (int y = row_lo; y < row_hi; ++y) {
    const uint8_t* in = image.pixels.data() + static_cast<size_t>(y) *
                                                  static_cast<size_t>(image.width) *
                                                  static_cast<size_t>(channels);
    float* to = rows.data() + static_cast<size_t>(y - row_lo) * static_cast<size_t>(out_width) *
                                  static_cast<size_t>(channels);
    const float* w = across.weights.data();
    for (int x = 0; x < out_width; ++x) {
      const int first = across.first[static_cast<size_t>(x)];
      const int count = across.count[static_cast<size_t>(x)];
      for (int c = 0; c < channels; ++c) {
        float sum = 0;
        for (int k = 0; k < count; ++k) sum += w[k] * in[(first + k) * channels + c];
        to[x * channels + c] = sum;
      }
      w += count;
    }
  }
  const float* w = down.weights.data();
  for (int y = 0; y < out_height; ++y) {
    const int first = down.first[static_cast<size_t>(y)] - row_lo;
    const int count = down.count[static_cast<size_t>(y)];
    for (int x = 0; x < out_width; ++x) {
      for (int c = 0; c < channels; ++c) {
        float sum = 0;
        for (int k = 0; k < count; ++k) {
          sum += w[k] * rows[(static_cast<size_t>(first + k) * static_cast<size_t>(out_width) +
                              static_cast<size_t>(x)) *
                                 static_cast<size_t>(channels) +
                             static_cast<size_t>(c)];
        }
        out[static_cast<size_t>(c) * plane + static_cast<size_t>(y) * out_width + x] =
            static_cast<uint8_t>(std::clamp(std::nearbyint(sum), 0.f, 255.f));
      }
    }
    w += count;
  }
}

void check_image_folder_spec(const ImageFolderSpec& spec) {
  const std::string f = "data.image_folder.";
  if (spec.channels() != 1 && spec.channels() != 3) {
    throw UserError(f + "channels must be 1 (grey) or 3 (RGB), got " +
                    std::to_string(spec.channels()));
  }
  constexpr int kMaxSide = 4096;
  if (spec.height() <= 0 || spec.width() <= 0 || spec.height() > kMaxSide ||
      spec.width() > kMaxSide) {
    throw UserError(f + "height and width must be in [1, " + std::to_string(kMaxSide) + "], got " +
                    std::to_string(spec.height()) + "x" + std::to_string(spec.width()));
  }
  if (spec.resize() != 0 &&
      (spec.resize() < std::max(spec.height(), spec.width()) || spec.resize() > kMaxImageSide)) {
    throw UserError(f + "resize " + std::to_string(spec.resize()) +
                    " must be 0 or at least height and width (the centre crop must fit)");
  }
  if (spec.has_random_resized_crop()) {
    const RandomResizedCrop& r = spec.random_resized_crop();
    if (!(r.scale_min() > 0 && r.scale_min() <= r.scale_max() && r.scale_max() <= 1)) {
      throw UserError(f + "random_resized_crop: need 0 < scale_min <= scale_max <= 1, got " +
                      std::to_string(r.scale_min()) + " and " + std::to_string(r.scale_max()));
    }
    if (!(r.ratio_min() > 0 && r.ratio_min() <= r.ratio_max() && std::isfinite(r.ratio_max()))) {
      throw UserError(f + "random_resized_crop: need 0 < ratio_min <= ratio_max, got " +
                      std::to_string(r.ratio_min()) + " and " + std::to_string(r.ratio_max()));
    }
  }
}

std::string png_bytes(const std::vector<uint8_t>& pixels, int width, int height, int channels) {
  if ((channels != 1 && channels != 3) || width <= 0 || height <= 0 ||
      pixels.size() != static_cast<size_t>(width) * static_cast<size_t>(height) *
                           static_cast<size_t>(channels)) {
    throw std::logic_error("png_bytes: pixels and shape differ");
  }
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) {
    png_destroy_write_struct(&png, nullptr);
    throw std::runtime_error("libpng: out of memory");
  }
  std::string out;
  std::vector<png_const_bytep> rows(static_cast<size_t>(height));
  for (int y = 0; y < height; ++y) {
    rows[static_cast<size_t>(y)] =
        pixels.data() + static_cast<size_t>(y) * static_cast<size_t>(width * channels);
  }
  // libpng reports errors by longjmp; nothing above owns resources then.
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    throw std::runtime_error("libpng failed to encode an image");
  }
  png_set_write_fn(png, &out, append, flush);
  png_set_IHDR(png, info, static_cast<png_uint_32>(width), static_cast<png_uint_32>(height), 8,
               channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_set_rows(png, info, const_cast<png_bytepp>(rows.data()));
  png_write_png(png, info, PNG_TRANSFORM_IDENTITY, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

}  // namespace dptrain
