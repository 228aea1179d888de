// What a person watching `dptrain train` sees (rank 0): the run's banner,
// a progress bar on a terminal or one line per train record otherwise,
// a line per evaluation and the outcome. Under mpirun every rank's stdout
// is a pseudo-terminal whatever the user's is, so lines there;
// DPTRAIN_PROGRESS=bar or =lines decides explicitly.
#pragma once

#include <string>

#include "dist/run_hook.h"

namespace dptrain {

class ProgressDisplay : public RunHook {
 public:
  ProgressDisplay();
  void on_start(const RunInfo& info) override;
  void after_step(const StepReport& step) override;
  void on_record(const MetricsRecord& record) override;
  void on_end(const RunEnd& end) override;

 private:
  double eta(double wall_time, int64_t step) const;

  bool bar_;
  RunInfo info_;
  double last_draw_ = -1;
  std::string last_figure_;  // the last evaluation's main figure, for the end
};

std::string format_duration(double seconds);

}  // namespace dptrain
