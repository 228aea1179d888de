// An image file as the image-folder loader reads it: the first byte picks
// the channels and the view (evaluation box, or a random resized crop
// drawn from the second byte), the rest is the file, decoded, then
// resampled to 16 x 12.
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "core/image.h"
#include "core/random.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const int channels = data[0] & 1 ? 3 : 1;
  try {
    const dptrain::Image image = dptrain::decode_image(data + 2, size - 2, channels, "fuzz");
    dptrain::Rng rng(data[1]);
    const dptrain::Box box =
        data[0] & 2 ? dptrain::random_resized_box(image.width, image.height,
                                                  dptrain::RandomResizedCrop(), rng)
                    : dptrain::center_box(image.width, image.height, data[0] & 4 ? 16 : 0, 16, 12);
    std::vector<uint8_t> out(16 * 12 * static_cast<size_t>(channels));
    dptrain::resample(image, box, 16, 12, out.data());
  } catch (const dptrain::UserError&) {
  }
  return 0;
}
