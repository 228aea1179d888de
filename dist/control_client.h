// The worker's end of the control channel (rank 0, only when started by
// dptrain-launch, which sets DPTRAIN_CONTROL=HOST:PORT and
// DPTRAIN_CONTROL_TOKEN). Sends Hello, heartbeats (at most every 0.5 s,
// from the training and evaluation loops, so a hung job falls silent),
// every metrics record and every durable checkpoint. A reader thread takes
// the launcher's frames: Ping keeps the channel alive; Stop, a closed
// connection, or silence for DPTRAIN_CONTROL_TIMEOUT seconds (default 60)
// raise a stop request, so a job whose launcher is gone checkpoints and
// exits instead of running on unsupervised.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "dist/run_hook.h"

namespace dptrain {

class ControlClient : public RunHook {
 public:
  // nullptr when DPTRAIN_CONTROL is not set. Throws UserError when it is
  // malformed or the launcher cannot be reached.
  static std::unique_ptr<ControlClient> from_env();
  ~ControlClient() override;

  void on_start(const RunInfo& info) override;
  unsigned requests() override;
  void after_step(const StepReport& step) override;
  void on_eval_batch(int64_t step) override;
  void on_record(const MetricsRecord& record) override;
  void on_checkpoint(const std::string& path, int64_t step) override;
  // Sends RungReached and waits (sending heartbeats, so the pause is not a
  // stall) for Continue (true) or Stop, a closed channel or silence (false).
  std::optional<bool> at_rung(const MetricsRecord& eval, int64_t step) override;

 private:
  ControlClient(int fd, std::string token, std::string job_id, double timeout_s);
  void send(const ControlMessage& message);
  void heartbeat(int64_t step, int64_t epoch);
  void read_loop();

  int fd_;
  std::string token_, job_id_;
  double timeout_s_;
  std::mutex send_mutex_;
  std::chrono::steady_clock::time_point last_beat_{};
  std::atomic<bool> stop_{false}, closing_{false}, proceed_{false};
  std::mutex reason_mutex_;
  std::string stop_reason_;
  bool announced_ = false;
  std::thread reader_;
};

}  // namespace dptrain
