#include "core/frame.h"

#include <cstdint>

#include "core/little_endian.h"

namespace dptrain {

std::string encode_frame(const ControlMessage& message) {
  const std::string payload = message.SerializeAsString();
  std::string frame;
  put_le<uint32_t>(frame, static_cast<uint32_t>(payload.size()));
  return frame + payload;
}

void FrameDecoder::feed(std::string_view bytes) {
  if (error_.empty()) buffer_.append(bytes);
}

FrameDecoder::Result FrameDecoder::next(ControlMessage* out) {
  if (!error_.empty()) return Result::kError;
  if (buffer_.size() < 4) return Result::kNeedMore;
  const auto n = get_le<uint32_t>(buffer_, 0);
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
