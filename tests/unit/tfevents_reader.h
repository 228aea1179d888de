// A reader of TensorBoard event files for the tests, written from the
// format's description and sharing no code with dptrain's writer: its own
// CRC32C (bit by bit, polynomial 0x82f63b78), its own TFRecord framing
// (uint64 length, masked CRC of the length, payload, masked CRC of the
// payload) and its own protobuf wire decoding with the field numbers of
// TensorBoard's event.proto (wall_time 1, step 2, file_version 3,
// summary 5, session_log 6) and summary.proto (Summary.value 1;
// Value.tag 1, simple_value 2, tensor 8, metadata 9; TensorProto.dtype 1,
// string_val 8; SummaryMetadata.plugin_data 1, PluginData.plugin_name 1).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace dptrain::testing {

struct TfScalar {
  std::string tag;
  float value = 0;
  int64_t step = 0;
  double wall_time = 0;
};

struct TfText {
  std::string tag, plugin, text;
  int dtype = 0;
};

struct TfEventFile {
  int records = 0;
  std::string file_version;
  std::vector<TfScalar> scalars;
  std::vector<TfText> texts;
  std::vector<int64_t> session_starts;  // steps of SessionLog START events
  std::string error;                    // the first problem; empty if none
};

namespace tfevents_detail {

inline uint32_t crc32c_bitwise(const uint8_t* p, size_t n) {
  uint32_t crc = 0xffffffffu;
  for (size_t i = 0; i < n; ++i) {
    crc ^= p[i];
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1u)));
  }
  return ~crc;
}

inline uint32_t masked(const uint8_t* p, size_t n) {
  const uint32_t c = crc32c_bitwise(p, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

inline uint64_t le(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

// One field of a protobuf message: its number, wire type and value.
struct Field {
  int number = 0, type = 0;
  uint64_t scalar = 0;     // varint, fixed64, fixed32
  std::string_view bytes;  // length-delimited
};

// Splits a message into its fields; false if it is not well formed.
inline bool fields(std::string_view m, std::vector<Field>* out) {
  size_t i = 0;
  auto varint = [&](uint64_t* v) {
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (i >= m.size()) return false;
      const auto b = static_cast<uint8_t>(m[i++]);
      *v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return true;
    }
    return false;
  };
  while (i < m.size()) {
    uint64_t key = 0;
    if (!varint(&key)) return false;
    Field f;
    f.number = static_cast<int>(key >> 3);
    f.type = static_cast<int>(key & 7);
    const auto* p = reinterpret_cast<const uint8_t*>(m.data());
    switch (f.type) {
      case 0:
        if (!varint(&f.scalar)) return false;
        break;
      case 1:
        if (i + 8 > m.size()) return false;
        f.scalar = le(p + i, 8);
        i += 8;
        break;
      case 5:
        if (i + 4 > m.size()) return false;
        f.scalar = le(p + i, 4);
        i += 4;
        break;
      case 2: {
        uint64_t n = 0;
        if (!varint(&n) || n > m.size() - i) return false;
        f.bytes = m.substr(i, n);
        i += n;
        break;
      }
      default:
        return false;
    }
    out->push_back(f);
  }
  return true;
}

}  // namespace tfevents_detail

inline TfEventFile read_tfevents(const std::string& file) {
  using namespace tfevents_detail;
  TfEventFile out;
  const auto* p = reinterpret_cast<const uint8_t*>(file.data());
  size_t at = 0;
  auto fail = [&](const std::string& what) {
    out.error = "record " + std::to_string(out.records) + ": " + what;
    return out;
  };
  while (at < file.size()) {
    if (file.size() - at < 12) return fail("truncated header");
    const uint64_t length = le(p + at, 8);
    if (masked(p + at, 8) != le(p + at + 8, 4)) return fail("length CRC mismatch");
    if (file.size() - at - 12 < length + 4) return fail("truncated payload");
    const uint8_t* payload = p + at + 12;
    if (masked(payload, length) != le(payload + length, 4)) return fail("payload CRC mismatch");
    at += 12 + length + 4;
    std::vector<Field> event;
    if (!fields(std::string_view(reinterpret_cast<const char*>(payload), length), &event))
      return fail("not a protobuf message");
    double wall_time = 0;
    int64_t step = 0;
    for (const Field& f : event) {
      if (f.number == 1 && f.type == 1) std::memcpy(&wall_time, &f.scalar, 8);
      if (f.number == 2 && f.type == 0) step = static_cast<int64_t>(f.scalar);
    }
    for (const Field& f : event) {
      if (f.number == 3 && f.type == 2) out.file_version = std::string(f.bytes);
      if (f.number == 6 && f.type == 2) {
        std::vector<Field> log;
        if (!fields(f.bytes, &log)) return fail("bad session_log");
        for (const Field& l : log)
          if (l.number == 1 && l.scalar == 1) out.session_starts.push_back(step);
      }
      if (f.number != 5 || f.type != 2) continue;
      std::vector<Field> summary;
      if (!fields(f.bytes, &summary)) return fail("bad summary");
      for (const Field& s : summary) {
        std::vector<Field> value;
        if (s.number != 1 || !fields(s.bytes, &value)) return fail("bad summary value");
        std::string tag;
        bool has_scalar = false;
        float scalar = 0;
        TfText text;
        bool has_tensor = false;
        for (const Field& v : value) {
          if (v.number == 1) tag = std::string(v.bytes);
          if (v.number == 2 && v.type == 5) {
            const auto bits = static_cast<uint32_t>(v.scalar);
            std::memcpy(&scalar, &bits, 4);
            has_scalar = true;
          }
          if (v.number == 8) {
            has_tensor = true;
            std::vector<Field> tensor;
            if (!fields(v.bytes, &tensor)) return fail("bad tensor");
            for (const Field& t : tensor) {
              if (t.number == 1) text.dtype = static_cast<int>(t.scalar);
              if (t.number == 8) text.text = std::string(t.bytes);
            }
          }
          if (v.number == 9) {
            std::vector<Field> meta, plugin;
            if (!fields(v.bytes, &meta)) return fail("bad metadata");
            for (const Field& m : meta)
              if (m.number == 1 && fields(m.bytes, &plugin))
                for (const Field& pd : plugin)
                  if (pd.number == 1) text.plugin = std::string(pd.bytes);
          }
        }
        if (has_scalar) out.scalars.push_back({tag, scalar, step, wall_time});
        if (has_tensor) {
          text.tag = tag;
          out.texts.push_back(text);
        }
      }
    }
    ++out.records;
  }
  return out;
}

}  // namespace dptrain::testing
