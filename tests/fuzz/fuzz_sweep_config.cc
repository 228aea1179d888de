// A sweep config as `dptrain-launch sweep` checks it before anything
// starts: parsed, its inline base resolved (a base_config path is dropped:
// the target reads no files), validated, and the first trials suggested.
#include <cstdint>
#include <string>

#include "core/config.h"
#include "core/error.h"
#include "launcher/search_algorithm.h"
#include "launcher/sweep_spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    dptrain::SweepSpec spec;
    dptrain::parse_text(text, "sweep.textproto", &spec);
    spec.clear_base_config();
    const dptrain::TrainSpec base = dptrain::launcher::resolve_sweep_base(spec, "/nonexistent/x");
    dptrain::launcher::validate_sweep_spec(spec, base);
    auto search = dptrain::launcher::SearchAlgorithm::create(spec);
    for (int k = 0; k < search->total_trials() && k < 3; ++k) {
      if (search->needs_finished(k, 1) == 0) (void)search->suggest(k, {});
    }
  } catch (const dptrain::UserError&) {
  }
  return 0;
}
