#include "core/frame.h"

#include <cstdint>

namespace dptrain {

std::string encode_frame(const ControlMessage& message) {
  const std::string payload = message.SerializeAsString();
  const auto n = static_cast<uint32_t>(payload.size());
  std::string frame(4, '\0');
  for (int i = 0; i < 4; ++i)
    frame[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return frame + payload;
}

void FrameDecoder::feed(std::string_view bytes) {
  if (error_.empty()) buffer_.append(bytes);
}

FrameDecoder::Result FrameDecoder::next(ControlMessage* out) {
  if (!error_.empty()) return Result::kError;
  if (buffer_.size() < 4) return Result::kNeedMore;
  uint32_t n = 0;
  for (int i = 0; i < 4; ++i)
    n |= static_cast<uint32_t>(static_cast<unsigned char>(buffer_[static_cast<size_t>(i)]))
         << (8 * i);
  if (n > max_) {
    error_ =
        "frame of " + std::to_string(n) + " bytes exceeds the limit of " + std::to_string(max_);
    buffer_.clear();
    return Result::kError;
  }
  if (buffer_.size() < 4 + static_cast<size_t>(n)) return Result::kNeedMore;
  out->Clear();
  const bool parsed = out->ParseFromArray(buffer_.data() + 4, static_cast<int>(n));
  buffer_.erase(0, 4 + static_cast<size_t>(n));
  if (!parsed || out->body_case() == ControlMessage::BODY_NOT_SET) {
    error_ = parsed ? "frame holds no message" : "frame is not a control message";
    buffer_.clear();
    return Result::kError;
  }
  return Result::kMessage;
}

}  // namespace dptrain
