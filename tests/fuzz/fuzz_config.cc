// A training config as `dptrain train CONFIG --set ...` reads it: the text
// (core/config.h's parser), then every line "#set PATH=VALUE" of it (a
// comment to the parser) as an override, then validation. A user error is
// the expected answer to garbage; anything else is a finding.
#include <cstdint>
#include <sstream>
#include <string>

#include "core/config.h"
#include "core/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    dptrain::TrainSpec spec = dptrain::parse_train_spec(text, "fuzz.textproto");
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind("#set ", 0) == 0) dptrain::apply_override(&spec, line.substr(5));
    }
    dptrain::validate_train_spec(spec);
    (void)dptrain::to_text(spec);
  } catch (const dptrain::UserError&) {
  }
  return 0;
}
