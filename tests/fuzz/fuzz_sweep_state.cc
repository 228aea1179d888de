// A sweep.db as `dptrain-launch sweep --resume` and `report` read it: the
// bytes written to a file of this process, opened, and everything a
// resumed sweep reads back taken out of it.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "core/error.h"
#include "launcher/sweep_state.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/dptrain-fuzz-sweep-" + std::to_string(getpid()) + ".db";
  std::remove((path + "-journal").c_str());
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  try {
    auto state = dptrain::launcher::SweepState::open(path);
    if (state.initialized()) {
      (void)state.spec();
      (void)state.threads_per_trial();
      (void)state.concurrency();
      for (const auto& t : state.trials()) (void)state.decision(t.trial, t.epoch);
      (void)state.rung_table();
      (void)state.finished();
    }
  } catch (const dptrain::UserError&) {
  }
  return 0;
}
