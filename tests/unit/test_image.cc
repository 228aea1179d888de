// Image decoding (PNG in every colour type dptrain meets, JPEG, damaged
// and hostile bytes), the boxes of the evaluation and random views, and
// resampling against a direct evaluation of its filter.
#include "core/image.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <png.h>
#include <zlib.h>

#include <cmath>
#include <cstring>
#include <set>

#include "core/error.h"
#include "tests/unit/image_test_util.h"

namespace dptrain {
namespace {

using ::testing::HasSubstr;
using testing::jpeg_bytes;
using testing::pattern;
using Bytes = std::vector<uint8_t>;

Image decode(const std::string& bytes, int channels, const std::string& source = "img") {
  return decode_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), channels,
                      source);
}

// A PNG of any colour type and bit depth, through libpng's simplified API.
std::string png_of(const Bytes& pixels, int width, int height, png_uint_32 format) {
  png_image image;
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(width);
  image.height = static_cast<png_uint_32>(height);
  image.format = format;
  png_alloc_size_t size = 0;
  EXPECT_NE(png_image_write_get_memory_size(image, size, 0, pixels.data(), 0, nullptr), 0);
  std::string out(size, '\0');
  EXPECT_NE(png_image_write_to_memory(&image, out.data(), &size, 0, pixels.data(), 0, nullptr), 0);
  out.resize(size);
  return out;
}

uint8_t luma(uint8_t r, uint8_t g, uint8_t b) {
  return static_cast<uint8_t>((r * 19595u + g * 38470u + b * 7471u + 0x8000u) >> 16);
}

TEST(ImageDecode, GreyAndRgbPngsRoundTripExactly) {
  const Bytes grey = pattern(13, 7, 1, 1), rgb = pattern(13, 7, 3, 2);
  const Image g = decode(png_bytes(grey, 13, 7, 1), 1);
  EXPECT_EQ(g.width, 13);
  EXPECT_EQ(g.height, 7);
  EXPECT_EQ(g.channels, 1);
  EXPECT_EQ(g.pixels, grey);
  const Image c = decode(png_bytes(rgb, 13, 7, 3), 3);
  EXPECT_EQ(c.pixels, rgb);
}

TEST(ImageDecode, ConvertsBetweenGreyAndRgb) {
  const Bytes grey = pattern(5, 4, 1, 3), rgb = pattern(5, 4, 3, 4);
  const Image g3 = decode(png_bytes(grey, 5, 4, 1), 3);
  ASSERT_EQ(g3.channels, 3);
  for (size_t p = 0; p < grey.size(); ++p) {
    for (int c = 0; c < 3; ++c) EXPECT_EQ(g3.pixels[3 * p + static_cast<size_t>(c)], grey[p]);
  }
  const Image c1 = decode(png_bytes(rgb, 5, 4, 3), 1);
  ASSERT_EQ(c1.channels, 1);
  for (size_t p = 0; p < 20; ++p)
    EXPECT_EQ(c1.pixels[p], luma(rgb[3 * p], rgb[3 * p + 1], rgb[3 * p + 2])) << p;
}

TEST(ImageDecode, AlphaIsCompositedOntoBlackAndSixteenBitIsReduced) {
  // RGBA: opaque, transparent and half-transparent white.
  const Bytes rgba = {255, 255, 255, 255, 255, 255, 255, 0, 255, 255, 255, 128};
  const Image a = decode(png_of(rgba, 3, 1, PNG_FORMAT_RGBA), 3);
  EXPECT_EQ(a.pixels[0], 255);
  EXPECT_EQ(a.pixels[3], 0);
  EXPECT_GT(a.pixels[6], 0);
  EXPECT_LT(a.pixels[6], 255);
  // 16-bit linear grey: 0 and 65535 stay black and white.
  std::vector<uint16_t> wide = {0, 65535};
  Bytes bytes(4);
  std::memcpy(bytes.data(), wide.data(), 4);
  const Image w = decode(png_of(bytes, 2, 1, PNG_FORMAT_LINEAR_Y), 1);
  EXPECT_EQ(w.pixels, (Bytes{0, 255}));
}

TEST(ImageDecode, JpegsDecodeCloseToWhatWasEncoded) {
  for (int channels : {1, 3}) {
    const Bytes pixels = pattern(32, 24, channels, 5);
    const Image image = decode(jpeg_bytes(pixels, 32, 24, channels, 100), channels);
    ASSERT_EQ(image.width, 32);
    ASSERT_EQ(image.height, 24);
    ASSERT_EQ(image.pixels.size(), pixels.size());
    double error = 0;
    for (size_t i = 0; i < pixels.size(); ++i) error += std::abs(image.pixels[i] - pixels[i]);
    EXPECT_LT(error / static_cast<double>(pixels.size()), 4.0) << channels << " channels";
  }
  // A colour JPEG read as grey is its luma.
  const Image grey = decode(jpeg_bytes(pattern(16, 16, 3, 6), 16, 16, 3), 1);
  EXPECT_EQ(grey.channels, 1);
  EXPECT_EQ(grey.pixels.size(), 256u);
}

TEST(ImageDecode, DamagedBytesAreErrorsNamingTheSource) {
  const std::string jpeg = jpeg_bytes(pattern(64, 64, 3, 7), 64, 64, 3);
  const std::string png = png_bytes(pattern(64, 64, 3, 7), 64, 64, 3);
  struct Case {
    std::string bytes, message;
  };
  std::string flipped = png;
  flipped[png.size() / 2] = static_cast<char>(flipped[png.size() / 2] ^ 0x55);
  const std::vector<Case> cases = {
      {"", "empty file"},
      {"hello, world", "neither a PNG nor a JPEG"},
      {jpeg.substr(0, jpeg.size() / 2), "damaged or truncated JPEG"},
      {jpeg.substr(0, 40), "JPEG"},
      {png.substr(0, png.size() / 2), "PNG"},
      {png.substr(0, 20), "not a readable PNG"},
      {flipped, "PNG"},
  };
  for (const Case& c : cases) {
    try {
      decode(c.bytes, 3, "dir/cat/x.img");
      ADD_FAILURE() << "decoded " << c.bytes.size() << " damaged bytes";
    } catch (const UserError& e) {
      EXPECT_THAT(e.what(), HasSubstr("dir/cat/x.img: "));
      EXPECT_THAT(e.what(), HasSubstr(c.message));
    }
  }
}

TEST(ImageDecode, HugeHeadersAreRefusedBeforeAnyAllocation) {
  // A valid PNG header claiming 100000 x 100000 pixels, and nothing else.
  std::string png = png_bytes(pattern(1, 1, 1, 0), 1, 1, 1);
  auto put = [&](size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i)
      png[at + static_cast<size_t>(i)] = static_cast<char>(v >> (24 - 8 * i));
  };
  put(16, 100000);
  put(20, 100000);
  // The IHDR chunk's CRC over type and data.
  put(29, static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(png.data() + 12), 17)));
  try {
    decode(png, 1, "big.png");
    ADD_FAILURE() << "decoded a 10-gigapixel header";
  } catch (const UserError& e) {
    EXPECT_THAT(e.what(), HasSubstr("big.png"));
  }
}

TEST(ImageBoxes, CenterBoxScalesTheShorterSide) {
  const Box whole = center_box(40, 30, 0, 8, 8);
  EXPECT_EQ(whole.width, 40);
  EXPECT_EQ(whole.height, 30);
  // Shorter side 30 -> 15: half scale; the centre 10 x 10 of that is 20 x 20 here.
  const Box b = center_box(40, 30, 15, 10, 10);
  EXPECT_DOUBLE_EQ(b.width, 20);
  EXPECT_DOUBLE_EQ(b.height, 20);
  EXPECT_DOUBLE_EQ(b.x, 10);
  EXPECT_DOUBLE_EQ(b.y, 5);
}

TEST(ImageBoxes, RandomResizedBoxesFitAndFollowTheirRanges) {
  RandomResizedCrop spec;
  spec.set_scale_min(0.25f);
  spec.set_scale_max(0.5f);
  std::set<std::pair<double, double>> seen;
  for (uint64_t s = 0; s < 500; ++s) {
    Rng rng(s);
    const Box b = random_resized_box(200, 100, spec, rng);
    ASSERT_GE(b.x, 0);
    ASSERT_GE(b.y, 0);
    ASSERT_LE(b.x + b.width, 200);
    ASSERT_LE(b.y + b.height, 100);
    ASSERT_EQ(b.x, std::floor(b.x));
    const double area = b.width * b.height / 20000.0;
    if (b.width * b.height < 200 * 100) {
      EXPECT_GT(area, 0.23);
      EXPECT_LT(area, 0.52);
      const double ratio = b.width / b.height;
      EXPECT_GT(ratio, 0.7);
      EXPECT_LT(ratio, 1.4);
    }
    seen.insert({b.x, b.y});
    Rng again(s);
    const Box c = random_resized_box(200, 100, spec, again);
    EXPECT_EQ(b.x, c.x);
    EXPECT_EQ(b.width, c.width);
  }
  EXPECT_GT(seen.size(), 300u);
  // No box of the ratio range fits a 1000 x 1 strip: the fallback is the
  // widest centred box of ratio_max.
  Rng rng(1);
  const Box strip = random_resized_box(1000, 1, RandomResizedCrop(), rng);
  EXPECT_EQ(strip.height, 1);
  EXPECT_LE(strip.width, 2);
  EXPECT_GE(strip.x, 0);
}

// Output pixel (x, y) of resample by the filter's definition, in doubles.
double reference(const Image& image, const Box& box, int out_w, int out_h, int x, int y, int c) {
  auto taps = [](int size, double begin, double length, int out, int o) {
    const double scale = length / out, support = std::max(1.0, scale);
    const double center = begin + (o + 0.5) * scale;
    std::vector<std::pair<int, double>> w;
    double sum = 0;
    for (int i = 0; i < size; ++i) {
      const double v = std::max(0.0, 1.0 - std::abs(i + 0.5 - center) / support);
      if (v > 0) w.emplace_back(i, v), sum += v;
    }
    for (auto& [i, v] : w) v /= sum;
    return w;
  };
  double sum = 0;
  for (auto [i, wy] : taps(image.height, box.y, box.height, out_h, y))
    for (auto [j, wx] : taps(image.width, box.x, box.width, out_w, x))
      sum +=
          wy * wx * image.pixels[static_cast<size_t>((i * image.width + j) * image.channels + c)];
  return sum;
}

TEST(ImageResample, WholeImageAtItsSizeIsCopiedAsPlanes) {
  Image image{6, 4, 3, pattern(6, 4, 3, 8)};
  Bytes out(72);
  resample(image, Box{0, 0, 6, 4}, 6, 4, out.data());
  for (int c = 0; c < 3; ++c)
    for (int p = 0; p < 24; ++p)
      EXPECT_EQ(out[static_cast<size_t>(c * 24 + p)], image.pixels[static_cast<size_t>(p * 3 + c)]);
}

TEST(ImageResample, MatchesTheFilterWhenShrinkingGrowingAndCropping) {
  Image image{37, 23, 3, pattern(37, 23, 3, 9)};
  struct Case {
    Box box;
    int w, h;
  };
  const std::vector<Case> cases = {{{0, 0, 37, 23}, 9, 5},      {{0, 0, 37, 23}, 80, 50},
                                   {{5.5, 3.25, 20, 12}, 7, 7}, {{10, 4, 8, 8}, 8, 8},
                                   {{0, 0, 37, 23}, 1, 1},      {{30, 0, 7, 23}, 13, 3}};
  for (const Case& k : cases) {
    Bytes out(static_cast<size_t>(k.w * k.h * 3));
    resample(image, k.box, k.w, k.h, out.data());
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < k.h; ++y)
        for (int x = 0; x < k.w; ++x) {
          const double want = reference(image, k.box, k.w, k.h, x, y, c);
          EXPECT_NEAR(out[static_cast<size_t>((c * k.h + y) * k.w + x)], want, 0.5 + 1e-3)
              << k.w << "x" << k.h << " at " << x << "," << y;
        }
  }
  // An integer box at scale 1 is an exact crop.
  Bytes crop(64 * 3);
  resample(image, Box{10, 4, 8, 8}, 8, 8, crop.data());
  for (int y = 0; y < 8; ++y)
    for (int x = 0; x < 8; ++x)
      EXPECT_EQ(crop[static_cast<size_t>(y * 8 + x)],
                image.pixels[static_cast<size_t>(((4 + y) * 37 + 10 + x) * 3)]);
}

TEST(ImageFolderSpecCheck, NamesTheBadField) {
  ImageFolderSpec spec;
  spec.set_channels(2);
  EXPECT_THROW(check_image_folder_spec(spec), UserError);
  spec.set_channels(3);
  spec.set_resize(100);
  try {
    check_image_folder_spec(spec);
    ADD_FAILURE();
  } catch (const UserError& e) {
    EXPECT_THAT(e.what(), HasSubstr("data.image_folder.resize"));
  }
  spec.set_resize(256);
  spec.mutable_random_resized_crop()->set_scale_min(0.9f);
  spec.mutable_random_resized_crop()->set_scale_max(0.5f);
  EXPECT_THROW(check_image_folder_spec(spec), UserError);
  spec.mutable_random_resized_crop()->set_scale_max(1.f);
  EXPECT_NO_THROW(check_image_folder_spec(spec));
}

}  // namespace
}  // namespace dptrain
