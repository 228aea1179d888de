// The timeline file of a run (`dptrain train --timeline FILE`): each rank
// records its own spans (core/timeline.h); at the end rank 0 gathers them
// and writes one Chrome trace (TraceFile in core/dptrain.proto, JSON),
// atomically, with a process per rank, its compute track and a track per
// gradient bucket's allreduce.
//
// Clocks: at the start every rank's steady clock is set against rank 0's
// over MPI (ping-pong with rank 0, the offset of the round with the
// shortest round trip, as NTP does), so spans line up across hosts
// whose clocks share no epoch. Times in the file are microseconds since
// rank 0's start of the run.
#pragma once

#include <string>

#include "core/timeline.h"
#include "dist/communicator.h"
#include "dist/run_hook.h"

namespace dptrain {

class TimelineWriter : public RunHook {
 public:
  // On every rank; `path` matters on rank 0.
  TimelineWriter(const Communicator& comm, const Timeline& timeline, std::string path);
  void on_start(const RunInfo& info) override;
  void on_end(const RunEnd& end) override;

 private:
  const Communicator& comm_;
  const Timeline& timeline_;
  std::string path_;
  int64_t offset_us_ = 0;  // added to this rank's clock gives rank 0's
  int64_t origin_us_ = 0;  // rank 0's clock at the start
};

}  // namespace dptrain
