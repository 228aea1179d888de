// Control-channel framing: each ControlMessage travels as a 4-byte
// little-endian payload length followed by the serialized message. The
// decoder is the one reader of bytes from a peer; it never trusts a
// length beyond its limit, and any frame it cannot parse is an error that
// ends the connection (the caller drops the peer).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "core/dptrain.pb.h"

namespace dptrain {

constexpr size_t kMaxFrameBytes = 1 << 20;

std::string encode_frame(const ControlMessage& message);

class FrameDecoder {
 public:
  explicit FrameDecoder(size_t max_frame_bytes = kMaxFrameBytes) : max_(max_frame_bytes) {}

  enum class Result { kNeedMore, kMessage, kError };
  // Appends bytes received from the peer.
  void feed(std::string_view bytes);
  // kMessage: *out holds the next complete frame's message. kNeedMore: no
  // complete frame buffered. kError: the stream is bad (oversized length,
  // unparseable payload, a message with no body); error() says why, and
  // every later call returns kError.
  Result next(ControlMessage* out);
  const std::string& error() const { return error_; }
  size_t buffered() const { return buffer_.size(); }

 private:
  size_t max_;
  std::string buffer_;
  std::string error_;
};

}  // namespace dptrain
