#include "dist/timeline_writer.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/file_io.h"

namespace dptrain {
namespace {

constexpr int kRounds = 8;
constexpr int kTag = 7301;

// Point-to-point and collective calls that give up after the stall
// timeout (Communicator::wait) instead of hanging on a stalled peer.
void send(const Communicator& comm, const int64_t* v, int to) {
  MPI_Request r;
  check_mpi(MPI_Isend(v, 1, MPI_INT64_T, to, kTag, comm.comm(), &r), "MPI_Isend");
  comm.wait(r, "the timeline's clock exchange");
}
void receive(const Communicator& comm, int64_t* v, int from) {
  MPI_Request r;
  check_mpi(MPI_Irecv(v, 1, MPI_INT64_T, from, kTag, comm.comm(), &r), "MPI_Irecv");
  comm.wait(r, "the timeline's clock exchange");
}

// Rank 0's clock minus `peer`'s, from the round trip with the shortest
// time (least room for asymmetry). Rank 0 and the peer call it together.
int64_t measure_offset(const Communicator& comm, int peer) {
  int64_t best_rtt = std::numeric_limits<int64_t>::max(), offset = 0;
  for (int round = 0; round < kRounds; ++round) {
    if (comm.rank() == 0) {
      const int64_t sent = Timeline::now_us();
      int64_t theirs = 0;
      send(comm, &sent, peer);
      receive(comm, &theirs, peer);
      const int64_t back = Timeline::now_us();
      if (back - sent < best_rtt) {
        best_rtt = back - sent;
        offset = (sent + back) / 2 - theirs;
      }
    } else {
      int64_t ping = 0;
      receive(comm, &ping, 0);
      const int64_t now = Timeline::now_us();
      send(comm, &now, 0);
    }
  }
  return offset;
}

TraceEvent track_name(int rank, int tid, const std::string& name) {
  TraceEvent e;
  e.set_name(tid < 0 ? "process_name" : "thread_name");
  e.set_ph("M");
  e.set_pid(rank);
  e.set_tid(tid < 0 ? 0 : tid);
  e.mutable_args()->set_name(name);
  return e;
}

}  // namespace

TimelineWriter::TimelineWriter(const Communicator& comm, const Timeline& timeline, std::string path)
    : comm_(comm), timeline_(timeline), path_(std::move(path)) {}

void TimelineWriter::on_start(const RunInfo&) {
  for (int peer = 1; peer < comm_.size(); ++peer) {
    if (comm_.rank() != 0 && comm_.rank() != peer) continue;
    int64_t offset = measure_offset(comm_, peer);
    if (comm_.rank() == 0)
      send(comm_, &offset, peer);
    else
      receive(comm_, &offset_us_, 0);
  }
  origin_us_ = Timeline::now_us();
  comm_.broadcast(&origin_us_, sizeof origin_us_);
}

void TimelineWriter::on_end(const RunEnd&) {
  const int rank = comm_.rank();
  TraceFile mine;
  int32_t buckets = 0;
  for (const Timeline::Span& s : timeline_.spans()) {
    TraceEvent* e = mine.add_trace_events();
    std::string name = std::string(s.category) + " " + s.name;
    if (s.index >= 0) name += " " + std::to_string(s.index);
    e->set_name(name);
    e->set_cat(s.category);
    e->set_ph("X");
    e->set_ts(static_cast<double>(s.start_us + offset_us_ - origin_us_));
    e->set_dur(static_cast<double>(s.end_us - s.start_us));
    e->set_pid(rank);
    // Buckets overlap one another: a track each, so spans nest per track.
    e->set_tid(s.track == Timeline::kCommunication ? 1 + s.index : 0);
    if (s.track == Timeline::kCommunication) buckets = std::max(buckets, s.index + 1);
    e->mutable_args()->set_step(static_cast<int32_t>(s.step));
    if (s.index >= 0) e->mutable_args()->set_bucket(s.index);
  }
  TraceEvent process = track_name(rank, -1, "rank " + std::to_string(rank));
  process.mutable_args()->set_clock_offset_us(static_cast<double>(offset_us_));
  if (timeline_.dropped() > 0)
    process.mutable_args()->set_dropped_spans(static_cast<int32_t>(timeline_.dropped()));
  *mine.add_trace_events() = process;
  *mine.add_trace_events() = track_name(rank, Timeline::kCompute, "compute");
  for (int32_t b = 0; b < buckets; ++b)
    *mine.add_trace_events() = track_name(rank, 1 + b, "allreduce bucket " + std::to_string(b));

  // MPI counts bytes in ints: each rank's share stays below 2 GiB over
  // the ranks, its latest spans given up (and counted) past that.
  const size_t share = static_cast<size_t>(std::numeric_limits<int>::max() / comm_.size());
  std::string bytes = mine.SerializeAsString();
  if (bytes.size() > share) {
    const int spans = mine.trace_events_size() - 2 - buckets;
    const int keep = static_cast<int>(spans * (static_cast<double>(share) / bytes.size()) * 0.9);
    mine.mutable_trace_events()->DeleteSubrange(keep, spans - keep);
    // The first event after the spans is the rank's process_name.
    mine.mutable_trace_events(keep)->mutable_args()->set_dropped_spans(
        static_cast<int32_t>(timeline_.dropped()) + (spans - keep));
    bytes = mine.SerializeAsString();
  }
  int size = static_cast<int>(bytes.size());
  std::vector<int> sizes(rank == 0 ? comm_.size() : 0), starts(sizes.size());
  MPI_Request request;
  check_mpi(MPI_Igather(&size, 1, MPI_INT, sizes.data(), 1, MPI_INT, 0, comm_.comm(), &request),
            "MPI_Igather");
  comm_.wait(request, "the timeline's gather");
  std::string all;
  if (rank == 0) {
    for (size_t r = 0; r < sizes.size(); ++r) {
      starts[r] = static_cast<int>(all.size());
      all.resize(all.size() + static_cast<size_t>(sizes[r]));
    }
  }
  check_mpi(MPI_Igatherv(bytes.data(), size, MPI_BYTE, all.data(), sizes.data(), starts.data(),
                         MPI_BYTE, 0, comm_.comm(), &request),
            "MPI_Igatherv");
  comm_.wait(request, "the timeline's gather");
  if (rank != 0) return;
  TraceFile file;
  file.set_display_time_unit("ms");
  for (size_t r = 0; r < sizes.size(); ++r) {
    TraceFile part;
    part.ParseFromArray(all.data() + starts[r], sizes[r]);
    for (TraceEvent& e : *part.mutable_trace_events()) *file.add_trace_events() = std::move(e);
  }
  std::string json;
  const auto status = google::protobuf::util::MessageToJsonString(file, &json);
  if (!status.ok()) throw UserError("timeline " + path_ + ": " + std::string(status.message()));
  write_file_atomically(path_, json);
}

}  // namespace dptrain
