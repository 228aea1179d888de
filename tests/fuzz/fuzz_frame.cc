// Bytes from a control-channel peer as the launcher's server and the
// worker's client decode them: fed in pieces whose sizes come from the
// input's first byte, every complete frame taken out, until the decoder
// wants more or gives up (and then keeps giving up).
#include <cstdint>
#include <string_view>

#include "core/frame.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t piece = 1 + data[0];
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  dptrain::FrameDecoder decoder(4096);
  dptrain::ControlMessage message;
  while (!rest.empty()) {
    const size_t n = rest.size() < piece ? rest.size() : piece;
    decoder.feed(rest.substr(0, n));
    rest.remove_prefix(n);
    for (;;) {
      const auto r = decoder.next(&message);
      if (r == dptrain::FrameDecoder::Result::kMessage) continue;
      if (r == dptrain::FrameDecoder::Result::kError) {
        if (decoder.next(&message) != dptrain::FrameDecoder::Result::kError) __builtin_trap();
        return 0;
      }
      break;
    }
  }
  return 0;
}
