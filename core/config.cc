#include "core/config.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/message.h>
#include <google/protobuf/text_format.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#include "core/error.h"
#include "core/image.h"

namespace dptrain {
namespace {

namespace pb = google::protobuf;

// ---------------------------------------------------------------------------
// Small helpers

std::string in_quotes(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out.push_back('"');
  out.append(s);
  out.push_back('"');
  return out;
}

// Shortest text that reads back as the same value.
template <typename T>
std::string num(T v) {
  if constexpr (std::is_floating_point_v<T>) {
    if (std::isnan(v)) return "nan";
    if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  }
  char buf[64];
  std::to_chars_result r;
  if constexpr (std::is_floating_point_v<T>) {
    // Like %g: "0.0001", not "1e-04".
    r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::general);
  } else {
    r = std::to_chars(buf, buf + sizeof buf, v);
  }
  if (r.ec != std::errc()) return "?";
  return std::string(buf, r.ptr);
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

std::string_view trim(std::string_view s) {
  const char* ws = " \t\r\n";
  auto b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  auto e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

std::string join(const std::vector<std::string>& items, std::string_view sep) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out += sep;
    out += items[i];
  }
  return out;
}

std::string field_names(const pb::Descriptor* d) {
  std::vector<std::string> names;
  for (int i = 0; i < d->field_count(); ++i) names.push_back(d->field(i)->name());
  return join(names, ", ");
}

std::string enum_names(const pb::EnumDescriptor* e) {
  std::vector<std::string> names;
  for (int i = 0; i < e->value_count(); ++i) names.push_back(e->value(i)->name());
  return join(names, ", ");
}

// ---------------------------------------------------------------------------
// Parsing

// Keeps the first error the text format parser reports (the later ones
// usually follow from it). Lines and columns are 0-based, columns with tabs
// expanded to multiples of 8.
class FirstErrorCollector : public pb::io::ErrorCollector {
 public:
  void AddError(int line, pb::io::ColumnNumber column, const std::string& message) override {
    if (has_error_) return;
    has_error_ = true;
    line_ = line;
    column_ = column;
    message_ = message;
  }

  bool has_error() const { return has_error_; }
  int line() const { return line_; }
  int column() const { return column_; }
  const std::string& message() const { return message_; }

 private:
  bool has_error_ = false;
  int line_ = -1;
  int column_ = -1;
  std::string message_;
};

// The text between `before` and the next '"' in `message`, if any.
std::optional<std::string> quoted_after(const std::string& message, std::string_view before) {
  const std::size_t start = message.find(before);
  if (start == std::string::npos) return std::nullopt;
  const std::size_t begin = start + before.size();
  const std::size_t end = message.find('"', begin);
  if (end == std::string::npos) return std::nullopt;
  return message.substr(begin, end - begin);
}

// Line `line` (0-based) of `text`.
std::string_view line_of(std::string_view text, int line) {
  std::size_t begin = 0;
  for (int i = 0; i < line; ++i) {
    begin = text.find('\n', begin);
    if (begin == std::string_view::npos) return {};
    ++begin;
  }
  const std::size_t end = text.find('\n', begin);
  return text.substr(begin, end == std::string_view::npos ? std::string_view::npos : end - begin);
}

// The column the tokenizer gives character `index` of `line`: tabs advance
// to the next multiple of 8.
int display_column(std::string_view line, std::size_t index) {
  int column = 0;
  for (std::size_t i = 0; i < index && i < line.size(); ++i) {
    column = line[i] == '\t' ? column + 8 - column % 8 : column + 1;
  }
  return column;
}

// "SOURCE:LINE:COLUMN: message", 1-based. The parser reports an unknown
// field at the token after its name and names only the message type; point
// at the name itself and list the valid fields, as the override errors do.
std::string describe_parse_error(const FirstErrorCollector& e, std::string_view text,
                                 const std::string& source_name) {
  if (e.line() < 0) return source_name + ": " + e.message();
  int column = e.column();
  std::string message = e.message();
  const auto field = quoted_after(message, "has no field named \"");
  const auto type = quoted_after(message, "Message type \"");
  if (field && type && !field->empty()) {
    const std::string_view line = line_of(text, e.line());
    std::size_t at = line.rfind(*field);
    while (at != std::string_view::npos && display_column(line, at + field->size()) > e.column()) {
      at = at == 0 ? std::string_view::npos : line.rfind(*field, at - 1);
    }
    if (at != std::string_view::npos) column = display_column(line, at);
    if (const pb::Descriptor* d =
            pb::DescriptorPool::generated_pool()->FindMessageTypeByName(*type)) {
      if (!message.empty() && message.back() == '.') message.pop_back();
      message += "; valid fields: " + field_names(d);
    }
  }
  return source_name + ":" + std::to_string(e.line() + 1) + ":" + std::to_string(column + 1) +
         ": " + message;
}

// ---------------------------------------------------------------------------
// Overrides

// One step of an override path: a field name and an optional [selector].
struct PathStep {
  std::string name;
  std::optional<std::string> selector;
  std::string text;  // as written, for error messages
};

class OverrideError {
 public:
  explicit OverrideError(const std::string& assignment)
      : prefix_("override " + in_quotes(assignment) + ": ") {}
  [[noreturn]] void operator()(const std::string& message) const {
    throw UserError(prefix_ + message);
  }

 private:
  std::string prefix_;
};

std::vector<PathStep> split_path(std::string_view path, const OverrideError& fail) {
  std::vector<PathStep> steps;
  std::size_t i = 0;
  while (true) {
    PathStep step;
    std::size_t start = i;
    while (i < path.size() && path[i] != '.' && path[i] != '[' && path[i] != ']') ++i;
    step.name = std::string(path.substr(start, i - start));
    if (step.name.empty()) {
      fail("empty field name at character " + std::to_string(i + 1) + " of the path");
    }
    if (i < path.size() && path[i] == '[') {
      std::size_t close = path.find(']', i + 1);
      if (close == std::string_view::npos) fail("missing ']' in the path");
      step.selector = std::string(path.substr(i + 1, close - i - 1));
      if (step.selector->empty()) fail("empty [] after " + in_quotes(step.name) + " in the path");
      i = close + 1;
    }
    if (i < path.size() && path[i] == ']') fail("unexpected ']' in the path");
    step.text = std::string(path.substr(start, i - start));
    steps.push_back(std::move(step));
    if (i == path.size()) break;
    if (path[i] != '.') fail("expected '.' after " + in_quotes(steps.back().text) + " in the path");
    ++i;  // skip '.'
    if (i == path.size()) fail("path ends with '.'");
  }
  return steps;
}

// A scalar value parsed for one field, ready to be stored.
struct Value {
  pb::FieldDescriptor::CppType type;
  int32_t i32 = 0;
  int64_t i64 = 0;
  uint32_t u32 = 0;
  uint64_t u64 = 0;
  float f = 0;
  double d = 0;
  bool b = false;
  const pb::EnumValueDescriptor* e = nullptr;
  std::string s;
};

template <typename T>
T parse_number(std::string_view text, const pb::FieldDescriptor* field, const std::string& where,
               const OverrideError& fail) {
  std::string_view t = trim(text);
  const std::string type = field->type_name();
  if constexpr (std::is_unsigned_v<T>) {
    if (!t.empty() && t[0] == '-') {
      fail(where + " is unsigned (" + type + "); negative value " + in_quotes(text) +
           " is not allowed");
    }
  }
  T value{};
  auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), value);
  if (ec == std::errc::result_out_of_range) {
    fail(where + ": " + in_quotes(text) + " is out of range for " + type);
  }
  if (ec != std::errc() || end != t.data() + t.size() || t.empty()) {
    fail(where + " expects " + type + ", got " + in_quotes(text));
  }
  if constexpr (std::is_floating_point_v<T>) {
    if (!std::isfinite(value)) fail(where + " must be finite, got " + in_quotes(text));
  }
  return value;
}

Value parse_value(const pb::FieldDescriptor* field, std::string_view text, const std::string& where,
                  const OverrideError& fail) {
  using CT = pb::FieldDescriptor::CppType;
  Value v;
  v.type = field->cpp_type();
  switch (v.type) {
    case CT::CPPTYPE_INT32:
      v.i32 = parse_number<int32_t>(text, field, where, fail);
      break;
    case CT::CPPTYPE_INT64:
      v.i64 = parse_number<int64_t>(text, field, where, fail);
      break;
    case CT::CPPTYPE_UINT32:
      v.u32 = parse_number<uint32_t>(text, field, where, fail);
      break;
    case CT::CPPTYPE_UINT64:
      v.u64 = parse_number<uint64_t>(text, field, where, fail);
      break;
    case CT::CPPTYPE_FLOAT:
      v.f = parse_number<float>(text, field, where, fail);
      break;
    case CT::CPPTYPE_DOUBLE:
      v.d = parse_number<double>(text, field, where, fail);
      break;
    case CT::CPPTYPE_BOOL: {
      std::string_view t = trim(text);
      if (iequals(t, "true") || t == "1") {
        v.b = true;
      } else if (iequals(t, "false") || t == "0") {
        v.b = false;
      } else {
        fail(where + " expects a bool (true, false, 1 or 0), got " + in_quotes(text));
      }
      break;
    }
    case CT::CPPTYPE_ENUM: {
      const pb::EnumDescriptor* e = field->enum_type();
      std::string_view t = trim(text);
      for (int i = 0; i < e->value_count(); ++i) {
        if (iequals(e->value(i)->name(), t)) v.e = e->value(i);
      }
      if (!v.e) {
        fail(where + ": unknown value " + in_quotes(text) + "; valid values: " + enum_names(e));
      }
      break;
    }
    case CT::CPPTYPE_STRING:
      v.s = std::string(text);
      break;
    case CT::CPPTYPE_MESSAGE:
      fail(where + " is a message; set one of its fields: " + field_names(field->message_type()));
  }
  return v;
}

void set_value(pb::Message* msg, const pb::FieldDescriptor* field, const Value& v) {
  const pb::Reflection* r = msg->GetReflection();
  using CT = pb::FieldDescriptor::CppType;
  switch (v.type) {
    case CT::CPPTYPE_INT32:
      r->SetInt32(msg, field, v.i32);
      break;
    case CT::CPPTYPE_INT64:
      r->SetInt64(msg, field, v.i64);
      break;
    case CT::CPPTYPE_UINT32:
      r->SetUInt32(msg, field, v.u32);
      break;
    case CT::CPPTYPE_UINT64:
      r->SetUInt64(msg, field, v.u64);
      break;
    case CT::CPPTYPE_FLOAT:
      r->SetFloat(msg, field, v.f);
      break;
    case CT::CPPTYPE_DOUBLE:
      r->SetDouble(msg, field, v.d);
      break;
    case CT::CPPTYPE_BOOL:
      r->SetBool(msg, field, v.b);
      break;
    case CT::CPPTYPE_ENUM:
      r->SetEnum(msg, field, v.e);
      break;
    case CT::CPPTYPE_STRING:
      r->SetString(msg, field, v.s);
      break;
    case CT::CPPTYPE_MESSAGE:
      break;  // rejected by parse_value
  }
}

void add_value(pb::Message* msg, const pb::FieldDescriptor* field, const Value& v) {
  const pb::Reflection* r = msg->GetReflection();
  using CT = pb::FieldDescriptor::CppType;
  switch (v.type) {
    case CT::CPPTYPE_INT32:
      r->AddInt32(msg, field, v.i32);
      break;
    case CT::CPPTYPE_INT64:
      r->AddInt64(msg, field, v.i64);
      break;
    case CT::CPPTYPE_UINT32:
      r->AddUInt32(msg, field, v.u32);
      break;
    case CT::CPPTYPE_UINT64:
      r->AddUInt64(msg, field, v.u64);
      break;
    case CT::CPPTYPE_FLOAT:
      r->AddFloat(msg, field, v.f);
      break;
    case CT::CPPTYPE_DOUBLE:
      r->AddDouble(msg, field, v.d);
      break;
    case CT::CPPTYPE_BOOL:
      r->AddBool(msg, field, v.b);
      break;
    case CT::CPPTYPE_ENUM:
      r->AddEnum(msg, field, v.e);
      break;
    case CT::CPPTYPE_STRING:
      r->AddString(msg, field, v.s);
      break;
    case CT::CPPTYPE_MESSAGE:
      break;
  }
}

// The index of the element of a repeated field that `selector` names: an
// all-digit selector is an index; otherwise (messages only) the element
// whose string field `name` equals it.
int select_element(const pb::Message& msg, const pb::FieldDescriptor* field,
                   const std::string& selector, const std::string& where,
                   const OverrideError& fail) {
  const pb::Reflection* r = msg.GetReflection();
  const int size = r->FieldSize(msg, field);
  if (all_digits(selector)) {
    std::size_t index = 0;
    auto [end, ec] = std::from_chars(selector.data(), selector.data() + selector.size(), index);
    if (ec != std::errc() || index >= static_cast<std::size_t>(size)) {
      fail("index " + selector + " out of range: " + where + " has " + std::to_string(size) +
           (size == 1 ? " element" : " elements"));
    }
    return static_cast<int>(index);
  }
  if (field->cpp_type() != pb::FieldDescriptor::CPPTYPE_MESSAGE) {
    fail(where + "[" + selector + "]: elements of a list of " + field->type_name() +
         " are addressed by index only");
  }
  const pb::FieldDescriptor* name_field = field->message_type()->FindFieldByName("name");
  if (!name_field || name_field->is_repeated() ||
      name_field->cpp_type() != pb::FieldDescriptor::CPPTYPE_STRING) {
    fail(where + "[" + selector + "]: elements of " + where +
         " have no name; address them by index");
  }
  int found = -1;
  std::vector<std::string> names;
  for (int i = 0; i < size; ++i) {
    const pb::Message& element = r->GetRepeatedMessage(msg, field, i);
    const std::string name = element.GetReflection()->GetString(element, name_field);
    names.push_back(name);
    if (name != selector) continue;
    if (found >= 0) {
      fail(where + "[" + selector + "]: elements " + std::to_string(found) + " and " +
           std::to_string(i) + " are both named " + in_quotes(selector) + "; use an index");
    }
    found = i;
  }
  if (found < 0) {
    fail("no element named " + in_quotes(selector) + " in " + where +
         (names.empty() ? " (it is empty)" : " (names: " + join(names, ", ") + ")"));
  }
  return found;
}

void apply_path(pb::Message* root, const std::vector<PathStep>& steps, std::string_view value,
                const OverrideError& fail) {
  pb::Message* msg = root;
  std::string where;  // the path walked so far, for messages
  for (std::size_t k = 0; k < steps.size(); ++k) {
    const PathStep& step = steps[k];
    const bool last = k + 1 == steps.size();
    const pb::Descriptor* desc = msg->GetDescriptor();
    const pb::Reflection* refl = msg->GetReflection();
    const pb::FieldDescriptor* field = desc->FindFieldByName(step.name);
    if (!field) {
      fail("unknown field " + in_quotes(step.name) + " in " +
           (where.empty() ? std::string("the top level") : where) + " (" + desc->name() +
           "); valid fields: " + field_names(desc));
    }
    const std::string here = where.empty() ? step.name : where + "." + step.name;
    const bool is_message = field->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE;

    if (!field->is_repeated() && step.selector) {
      fail(here + " is not a list; [" + *step.selector + "] does not apply");
    }
    if (!is_message && !last) {
      fail(here + " is a " + field->type_name() + ", not a message; it has no field " +
           in_quotes(steps[k + 1].name));
    }

    if (is_message) {
      if (field->is_repeated() && !step.selector) {
        fail(here + " is a list of " + field->message_type()->name() + "; address one element as " +
             step.name + "[INDEX] or " + step.name + "[NAME]");
      }
      const std::string element = step.selector ? here + "[" + *step.selector + "]" : here;
      int index = -1;
      if (step.selector) index = select_element(*msg, field, *step.selector, here, fail);
      if (last) {
        fail("path ends on message " + element + " (" + field->message_type()->name() +
             "); set one of its fields: " + field_names(field->message_type()));
      }
      msg = index >= 0 ? refl->MutableRepeatedMessage(msg, field, index)
                       : refl->MutableMessage(msg, field);
      where = element;
      continue;
    }

    // A scalar field, the last step.
    if (!field->is_repeated()) {
      set_value(msg, field, parse_value(field, value, here, fail));
    } else if (step.selector) {
      const int index = select_element(*msg, field, *step.selector, here, fail);
      const Value v = parse_value(field, value, here + "[" + *step.selector + "]", fail);
      // Append, move into place, drop the old value: one setter less.
      add_value(msg, field, v);
      refl->SwapElements(msg, field, index, refl->FieldSize(*msg, field) - 1);
      refl->RemoveLast(msg, field);
    } else {
      // A comma-separated list replaces the whole field; empty = empty list.
      std::vector<Value> values;
      if (!value.empty()) {
        std::size_t start = 0;
        while (true) {
          std::size_t comma = value.find(',', start);
          std::string_view item = value.substr(
              start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
          values.push_back(
              parse_value(field, item, here + "[" + std::to_string(values.size()) + "]", fail));
          if (comma == std::string_view::npos) break;
          start = comma + 1;
        }
      }
      refl->ClearField(msg, field);
      for (const Value& v : values) add_value(msg, field, v);
    }
  }
}

// ---------------------------------------------------------------------------
// Validation

[[noreturn]] void invalid(const std::string& message) { throw UserError(message); }

template <typename T>
void require(bool ok, const std::string& path, const std::string& rule, T got) {
  if (!ok) invalid(path + " must be " + rule + " (got " + num(got) + ")");
}

// Every float anywhere in the spec is finite: the text format accepts
// "inf" and "nan", and no field has a use for them.
void check_finite(const pb::Message& msg, const std::string& prefix) {
  const pb::Reflection* r = msg.GetReflection();
  std::vector<const pb::FieldDescriptor*> fields;
  r->ListFields(msg, &fields);
  for (const pb::FieldDescriptor* f : fields) {
    const std::string path = prefix.empty() ? f->name() : prefix + "." + f->name();
    const auto type = f->cpp_type();
    if (f->is_repeated()) {
      for (int i = 0, n = r->FieldSize(msg, f); i < n; ++i) {
        const std::string item = path + "[" + std::to_string(i) + "]";
        if (type == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
          check_finite(r->GetRepeatedMessage(msg, f, i), item);
        } else if (type == pb::FieldDescriptor::CPPTYPE_FLOAT) {
          float v = r->GetRepeatedFloat(msg, f, i);
          require(std::isfinite(v), item, "finite", v);
        } else if (type == pb::FieldDescriptor::CPPTYPE_DOUBLE) {
          double v = r->GetRepeatedDouble(msg, f, i);
          require(std::isfinite(v), item, "finite", v);
        }
      }
    } else if (type == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      check_finite(r->GetMessage(msg, f), path);
    } else if (type == pb::FieldDescriptor::CPPTYPE_FLOAT) {
      float v = r->GetFloat(msg, f);
      require(std::isfinite(v), path, "finite", v);
    } else if (type == pb::FieldDescriptor::CPPTYPE_DOUBLE) {
      double v = r->GetDouble(msg, f);
      require(std::isfinite(v), path, "finite", v);
    }
  }
}

// Channels of the images the data format produces.
int32_t data_channels(const DataSpec& data) {
  switch (data.format()) {
    case DataSpec::IDX:
      return 1;
    case DataSpec::CIFAR10:
      return 3;
    case DataSpec::SYNTHETIC:
      return data.synthetic().channels();
    case DataSpec::IMAGE_FOLDER:
      return data.image_folder().channels();
  }
  return 0;
}

void validate_data(const DataSpec& d) {
  require(d.batch_size() > 0, "data.batch_size", "> 0", d.batch_size());
  require(d.train_limit() >= 0, "data.train_limit", ">= 0", d.train_limit());
  require(d.test_limit() >= 0, "data.test_limit", ">= 0", d.test_limit());
  require(d.prefetch_batches() >= 1, "data.prefetch_batches", ">= 1", d.prefetch_batches());
  require(d.loader_threads() >= 1 && d.loader_threads() <= 256, "data.loader_threads",
          "in [1, 256]", d.loader_threads());
  if (d.format() == DataSpec::IMAGE_FOLDER) check_image_folder_spec(d.image_folder());
  require(d.augment().crop_padding() >= 0, "data.augment.crop_padding", ">= 0",
          d.augment().crop_padding());

  const SyntheticData& s = d.synthetic();
  require(s.train_size() > 0, "data.synthetic.train_size", "> 0", s.train_size());
  require(s.test_size() > 0, "data.synthetic.test_size", "> 0", s.test_size());
  require(s.channels() > 0, "data.synthetic.channels", "> 0", s.channels());
  require(s.height() > 0, "data.synthetic.height", "> 0", s.height());
  require(s.width() > 0, "data.synthetic.width", "> 0", s.width());
  require(s.classes() > 0, "data.synthetic.classes", "> 0", s.classes());

  const int32_t channels = data_channels(d);
  const std::string format = DataSpec::Format_Name(d.format());
  auto check_count = [&](const std::string& path, int n) {
    if (n != 0 && n != 1 && n != channels) {
      const std::string allowed =
          channels > 1 ? "0, 1 or " + std::to_string(channels) : std::string("0 or 1");
      invalid(path + " must have " + allowed + " values (" + format + " images have " +
              std::to_string(channels) + " channel" + (channels == 1 ? "" : "s") + ") (got " +
              std::to_string(n) + ")");
    }
  };
  check_count("data.mean", d.mean_size());
  check_count("data.std", d.std_size());
  for (int i = 0; i < d.std_size(); ++i) {
    require(d.std(i) > 0, "data.std[" + std::to_string(i) + "]", "> 0", d.std(i));
  }
}

void validate_solver(const SolverSpec& s) {
  require(s.epochs() >= 1, "solver.epochs", ">= 1", s.epochs());
  require(s.max_steps() >= 0, "solver.max_steps", ">= 0", s.max_steps());
  require(s.base_lr() > 0, "solver.base_lr", "> 0", s.base_lr());
  require(s.momentum() >= 0 && s.momentum() < 1, "solver.momentum", "in [0, 1)", s.momentum());
  require(s.weight_decay() >= 0, "solver.weight_decay", ">= 0", s.weight_decay());
  require(s.beta1() >= 0 && s.beta1() < 1, "solver.beta1", "in [0, 1)", s.beta1());
  require(s.beta2() >= 0 && s.beta2() < 1, "solver.beta2", "in [0, 1)", s.beta2());
  require(s.adam_eps() > 0, "solver.adam_eps", "> 0", s.adam_eps());
  require(s.clip_grad_norm() >= 0, "solver.clip_grad_norm", ">= 0", s.clip_grad_norm());
  if (s.nesterov()) {
    require(s.momentum() > 0, "solver.momentum", "> 0 when solver.nesterov is true", s.momentum());
  }

  const LrSchedule& l = s.lr_schedule();
  if (l.policy() == LrSchedule::STEP) {
    require(l.step_epochs() > 0, "solver.lr_schedule.step_epochs", "> 0 for policy STEP",
            l.step_epochs());
  }
  if (l.policy() == LrSchedule::MULTISTEP) {
    if (l.milestone_epochs_size() == 0) {
      invalid("solver.lr_schedule.milestone_epochs must not be empty for policy MULTISTEP");
    }
    for (int i = 0; i < l.milestone_epochs_size(); ++i) {
      const std::string path = "solver.lr_schedule.milestone_epochs[" + std::to_string(i) + "]";
      require(l.milestone_epochs(i) > 0, path, "> 0", l.milestone_epochs(i));
      if (i > 0) {
        require(l.milestone_epochs(i) > l.milestone_epochs(i - 1), path,
                "> the milestone before it (" + num(l.milestone_epochs(i - 1)) + ")",
                l.milestone_epochs(i));
      }
    }
  }
  require(l.gamma() > 0 && l.gamma() <= 1, "solver.lr_schedule.gamma", "in (0, 1]", l.gamma());
  require(l.min_lr() >= 0 && l.min_lr() <= s.base_lr(), "solver.lr_schedule.min_lr",
          "in [0, solver.base_lr = " + num(s.base_lr()) + "]", l.min_lr());
  require(l.warmup_epochs() >= 0, "solver.lr_schedule.warmup_epochs", ">= 0", l.warmup_epochs());
  require(l.warmup_start_factor() > 0 && l.warmup_start_factor() <= 1,
          "solver.lr_schedule.warmup_start_factor", "in (0, 1]", l.warmup_start_factor());
}

void validate_runtime(const RuntimeSpec& r) {
  require(r.threads() >= 0, "runtime.threads", ">= 0", r.threads());
  require(r.log_every_steps() >= 1, "runtime.log_every_steps", ">= 1", r.log_every_steps());
  require(r.eval_every_epochs() >= 0, "runtime.eval_every_epochs", ">= 0", r.eval_every_epochs());
}

void validate_checkpoint(const CheckpointSpec& c) {
  require(c.every_steps() >= 0, "checkpoint.every_steps", ">= 0", c.every_steps());
  require(c.every_epochs() >= 0, "checkpoint.every_epochs", ">= 0", c.every_epochs());
  require(c.every_seconds() >= 0, "checkpoint.every_seconds", ">= 0", c.every_seconds());
  // One checkpoint may be the one a crash tore: keep a good one behind it.
  require(c.keep() >= 2, "checkpoint.keep", ">= 2", c.keep());
}

void validate_net(const NetSpec& net) {
  if (net.layer_size() == 0) invalid("net must have at least one layer (net.layer is empty)");
  std::map<std::string, int> seen;
  for (int i = 0; i < net.layer_size(); ++i) {
    const LayerSpec& layer = net.layer(i);
    const std::string path = "net.layer[" + std::to_string(i) + "]";
    if (layer.name().empty()) invalid(path + ".name must not be empty");
    auto [it, inserted] = seen.emplace(layer.name(), i);
    if (!inserted) {
      invalid(path + ".name " + in_quotes(layer.name()) + " is already used by net.layer[" +
              std::to_string(it->second) + "]; layer names must be unique");
    }
    if (layer.type().empty()) {
      invalid(path + " (" + layer.name() + ").type must not be empty");
    }
  }
}

}  // namespace

void parse_text(const std::string& text, const std::string& source_name, pb::Message* out) {
  FirstErrorCollector errors;
  pb::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, out)) {
    if (errors.has_error()) throw UserError(describe_parse_error(errors, text, source_name));
    throw UserError(source_name + ": cannot parse as a " + out->GetDescriptor()->name());
  }
}

void load_text(const std::string& path, pb::Message* out) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    throw UserError("cannot read config " + path + ": it is a directory");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError("cannot read config " + path + ": " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw UserError("cannot read config " + path + ": read error");
  parse_text(text.str(), path, out);
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string default_run_dir(const std::string& name, const std::string& config_path) {
  char stamp[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
  return "runs/" + (name.empty() ? std::filesystem::path(config_path).stem().string() : name) +
         "-" + stamp;
}

TrainSpec parse_train_spec(const std::string& text, const std::string& source_name) {
  TrainSpec spec;
  parse_text(text, source_name, &spec);
  return spec;
}

TrainSpec load_train_spec(const std::string& path) {
  TrainSpec spec;
  load_text(path, &spec);
  return spec;
}

void apply_override(TrainSpec* spec, const std::string& assignment) {
  const OverrideError fail(assignment);
  const std::size_t eq = assignment.find('=');
  if (eq == std::string::npos) fail("expected PATH=VALUE, found no '='");
  const std::string_view all(assignment);
  const std::string_view path = trim(all.substr(0, eq));
  if (path.empty()) fail("empty path before '='");
  const std::vector<PathStep> steps = split_path(path, fail);
  // Work on a copy so that a failed override leaves *spec as it was.
  TrainSpec updated = *spec;
  apply_path(&updated, steps, all.substr(eq + 1), fail);
  spec->Swap(&updated);
}

void validate_train_spec(const TrainSpec& spec) {
  check_finite(spec, "");
  validate_data(spec.data());
  validate_net(spec.net());
  validate_solver(spec.solver());
  validate_runtime(spec.runtime());
  validate_checkpoint(spec.checkpoint());
}

std::string to_text(const pb::Message& spec) {
  std::string out;
  pb::TextFormat::Printer printer;
  if (!printer.PrintToString(spec, &out)) throw UserError("cannot print the config as text");
  return out;
}

}  // namespace dptrain
