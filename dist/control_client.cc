#include "dist/control_client.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/frame.h"
#include "core/log.h"

namespace dptrain {
namespace {

using Clock = std::chrono::steady_clock;

int connect_to(const std::string& address) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) {
    throw UserError("DPTRAIN_CONTROL must be HOST:PORT, got '" + address + "'");
  }
  std::string host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  const std::string port = address.substr(colon + 1);
  addrinfo hints = {};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    throw UserError("cannot resolve the launcher's address " + address + ": " + gai_strerror(rc));
  }
  int fd = -1, err = 0;
  for (addrinfo* a = found; a && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      err = errno;
      ::close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(found);
  if (fd < 0)
    throw UserError("cannot reach the launcher at " + address + ": " + std::strerror(err));
  // A launcher that stops reading must not block training: sends give up.
  timeval tv{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return fd;
}

}  // namespace

std::unique_ptr<ControlClient> ControlClient::from_env() {
  const char* address = std::getenv("DPTRAIN_CONTROL");
  if (!address) return nullptr;
  const char* token = std::getenv("DPTRAIN_CONTROL_TOKEN");
  const char* job = std::getenv("DPTRAIN_JOB_ID");
  const char* timeout = std::getenv("DPTRAIN_CONTROL_TIMEOUT");
  double timeout_s = 60;
  if (timeout) {
    char* end = nullptr;
    timeout_s = std::strtod(timeout, &end);
    if (*end != '\0' || !(timeout_s > 0)) {
      throw UserError(std::string("DPTRAIN_CONTROL_TIMEOUT must be seconds > 0, got '") + timeout +
                      "'");
    }
  }
  const int fd = connect_to(address);
  return std::unique_ptr<ControlClient>(
      new ControlClient(fd, token ? token : "", job ? job : "", timeout_s));
}

ControlClient::ControlClient(int fd, std::string token, std::string job_id, double timeout_s)
    : fd_(fd), token_(std::move(token)), job_id_(std::move(job_id)), timeout_s_(timeout_s) {
  reader_ = std::thread([this] { read_loop(); });
}

ControlClient::~ControlClient() {
  closing_ = true;
  ::shutdown(fd_, SHUT_RDWR);
  reader_.join();
  ::close(fd_);
}

void ControlClient::send(const ControlMessage& message) {
  const std::string frame = encode_frame(message);
  std::lock_guard lock(send_mutex_);
  size_t done = 0;
  while (done < frame.size()) {
    const ssize_t n = ::send(fd_, frame.data() + done, frame.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the reader notices a dead channel and raises the stop
    done += static_cast<size_t>(n);
  }
}

void ControlClient::on_start(const RunInfo& info) {
  ControlMessage m;
  Hello* hello = m.mutable_hello();
  hello->set_token(token_);
  hello->set_job_id(job_id_);
  hello->set_world_size(info.world_size);
  hello->set_threads(info.threads);
  hello->set_steps_total(info.steps_total);
  hello->set_steps_per_epoch(info.steps_per_epoch);
  hello->set_step(info.start_step);
  send(m);
}

void ControlClient::heartbeat(int64_t step, int64_t epoch) {
  const auto now = Clock::now();
  if (now - last_beat_ < std::chrono::milliseconds(500)) return;
  last_beat_ = now;
  ControlMessage m;
  m.mutable_heartbeat()->set_step(step);
  m.mutable_heartbeat()->set_epoch(static_cast<int32_t>(epoch));
  send(m);
}

void ControlClient::after_step(const StepReport& r) { heartbeat(r.step, r.epoch); }
void ControlClient::on_eval_batch(int64_t step) { heartbeat(step, 0); }

void ControlClient::on_record(const MetricsRecord& record) {
  ControlMessage m;
  *m.mutable_metrics() = record;
  send(m);
}

void ControlClient::on_checkpoint(const std::string& path, int64_t step) {
  ControlMessage m;
  m.mutable_checkpoint_written()->set_file(std::filesystem::path(path).filename().string());
  m.mutable_checkpoint_written()->set_step(step);
  send(m);
}

std::optional<bool> ControlClient::at_rung(const MetricsRecord& eval, int64_t step) {
  proceed_ = false;
  ControlMessage m;
  RungReached* rung = m.mutable_rung_reached();
  rung->set_step(step);
  rung->set_epoch(eval.epoch());
  *rung->mutable_eval() = eval;
  send(m);
  while (!proceed_ && !stop_) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    heartbeat(step, eval.epoch());
  }
  return proceed_ && !stop_;
}

unsigned ControlClient::requests() {
  if (!stop_) return kNoRequest;
  if (!announced_) {
    announced_ = true;
    std::lock_guard lock(reason_mutex_);
    log_warn(stop_reason_ + "; checkpointing and stopping at the next step");
  }
  return kStopRequest;
}

void ControlClient::read_loop() {
  FrameDecoder decoder;
  auto last_heard = Clock::now();
  auto stop = [&](const std::string& reason) {
    std::lock_guard lock(reason_mutex_);
    if (stop_reason_.empty()) stop_reason_ = reason;
    stop_ = true;
  };
  char buf[4096];
  while (!closing_) {
    pollfd p{fd_, POLLIN, 0};
    const int ready = ::poll(&p, 1, 200);
    if (closing_) return;
    if (ready < 0 && errno != EINTR) return stop("the control channel failed");
    if (ready > 0) {
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) {
        if (n < 0 && errno == EINTR) continue;
        return stop("the launcher closed the control channel");
      }
      last_heard = Clock::now();
      decoder.feed(std::string_view(buf, static_cast<size_t>(n)));
      ControlMessage m;
      FrameDecoder::Result r;
      while ((r = decoder.next(&m)) == FrameDecoder::Result::kMessage) {
        if (m.has_stop()) stop("the launcher asked to stop (" + m.stop().reason() + ")");
        if (m.has_proceed()) proceed_ = true;
      }
      if (r == FrameDecoder::Result::kError)
        return stop("bad frame from the launcher: " + decoder.error());
    } else if (std::chrono::duration<double>(Clock::now() - last_heard).count() > timeout_s_) {
      return stop("heard nothing from the launcher for " +
                  std::to_string(static_cast<int>(timeout_s_)) + " s");
    }
  }
}

}  // namespace dptrain
