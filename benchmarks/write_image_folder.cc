// Writes a dataset dptrain reads (IDX by default: Fashion-MNIST) as an
// image folder of PNGs, OUT/train/CLASS/NNNNN.png and OUT/test/..., for
// the image-folder benchmarks and for trying IMAGE_FOLDER on real data.
//
//   write_image_folder OUT [DATA_PATH]
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/dataset.h"
#include "core/error.h"
#include "core/image.h"

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: write_image_folder OUT [DATA_PATH]\n");
    return 2;
  }
  namespace fs = std::filesystem;
  try {
    dptrain::DataSpec spec;
    if (argc == 3) spec.set_path(argv[2]);
    const dptrain::DatasetSplits data = dptrain::load_dataset(spec, 1);
    for (auto [split, d] : {std::pair{"train", &data.train}, std::pair{"test", &data.test}}) {
      const int64_t sample = d->sample_size();
      std::vector<uint8_t> hwc(static_cast<size_t>(sample));
      for (int64_t i = 0; i < d->size(); ++i) {
        const uint8_t* chw = d->pixels.data() + i * sample;
        const int64_t plane = int64_t{d->height} * d->width;
        for (int64_t p = 0; p < plane; ++p)
          for (int c = 0; c < d->channels; ++c)
            hwc[static_cast<size_t>(p * d->channels + c)] = chw[c * plane + p];
        const fs::path dir = fs::path(argv[1]) / split /
                             ("class" + std::to_string(d->labels[static_cast<size_t>(i)]));
        fs::create_directories(dir);
        char name[32];
        std::snprintf(name, sizeof name, "%05lld.png", static_cast<long long>(i));
        std::ofstream(dir / name, std::ios::binary)
            << dptrain::png_bytes(hwc, d->width, d->height, d->channels);
      }
    }
  } catch (const dptrain::UserError& e) {
    std::fprintf(stderr, "write_image_folder: %s\n", e.what());
    return 2;
  }
  return 0;
}
