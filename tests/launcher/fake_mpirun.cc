// A stand-in for `mpirun ... dptrain train ...` in the launcher's tests:
// no MPI, no training, just the behaviour the supervisor has to handle,
// following a plan given as `--plan PLAN` among mpirun's arguments (the
// launcher passes --mpirun-arg values through).
//
// PLAN is one entry per start, separated by ';' (the start number is
// DPTRAIN_ATTEMPT; the last entry repeats); an entry is a list of actions
// separated by ',', done in order:
//   record        write argv to RUN_DIR/fake-args-N and the environment to RUN_DIR/fake-env-N
//   hello[=STEP]  connect to DPTRAIN_CONTROL and say hello with the token (from STEP)
//   badtoken      connect and say hello with a wrong token
//   step=N        a heartbeat and a train metrics record at step N
//   ckpt=N        a checkpoint notice for step N
//   expect-ping   wait (up to 10 s) for a Ping from the launcher, else exit 3
//   wait-stop     heartbeat every 100 ms until a Stop arrives, then exit 75
//   wait-close    until the launcher closes the channel, then exit 75
//   child         fork a process in a process group of its own that ignores
//                 SIGTERM and sleeps (as mpirun's ranks are), its pid in RUN_DIR/fake-child-N
//   sleep=MS      sleep
//   hang          sleep forever (SIGTERM ends it)
//   hang-hard     ignore SIGTERM, then sleep forever
//   signal=SIG    raise SIG
//   exit=CODE     exit with CODE
// Running out of actions exits 0.
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/frame.h"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  std::stringstream in(s);
  std::string part;
  while (std::getline(in, part, sep)) parts.push_back(part);
  return parts;
}

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "fake_mpirun: %s\n", why.c_str());
  std::exit(4);
}

class Channel {
 public:
  void connect_to(const std::string& address) {
    const auto colon = address.rfind(':');
    if (colon == std::string::npos) die("DPTRAIN_CONTROL is '" + address + "'");
    addrinfo hints = {};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (getaddrinfo(address.substr(0, colon).c_str(), address.substr(colon + 1).c_str(), &hints,
                    &found) != 0) {
      die("cannot resolve " + address);
    }
    fd_ = ::socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0 || ::connect(fd_, found->ai_addr, found->ai_addrlen) != 0)
      die("cannot connect to " + address);
    freeaddrinfo(found);
  }
  bool connected() const { return fd_ >= 0; }
  void send(const dptrain::ControlMessage& m) {
    const std::string frame = dptrain::encode_frame(m);
    if (::send(fd_, frame.data(), frame.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(frame.size())) {
      std::fprintf(stderr, "fake_mpirun: send failed\n");
    }
  }
  // The next message within `timeout_ms`: 1 got one, 0 timed out, -1 closed.
  int receive(dptrain::ControlMessage* m, int timeout_ms) {
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      const auto r = decoder_.next(m);
      if (r == dptrain::FrameDecoder::Result::kMessage) return 1;
      if (r == dptrain::FrameDecoder::Result::kError) return -1;
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return 0;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return -1;
      decoder_.feed(std::string_view(buf, static_cast<size_t>(n)));
    }
  }

 private:
  int fd_ = -1;
  dptrain::FrameDecoder decoder_;
};

void hello(Channel* ch, const std::string& token, int64_t step) {
  if (!ch->connected()) ch->connect_to(env("DPTRAIN_CONTROL"));
  dptrain::ControlMessage m;
  dptrain::Hello* h = m.mutable_hello();
  h->set_token(token);
  h->set_job_id(env("DPTRAIN_JOB_ID"));
  h->set_world_size(1);
  h->set_threads(1);
  h->set_steps_total(100);
  h->set_steps_per_epoch(10);
  h->set_step(step);
  ch->send(m);
}

void heartbeat(Channel* ch, int64_t step) {
  dptrain::ControlMessage m;
  m.mutable_heartbeat()->set_step(step);
  m.mutable_heartbeat()->set_epoch(static_cast<int32_t>(step / 10 + 1));
  ch->send(m);
}

}  // namespace

int main(int argc, char** argv) {
  std::string plan, run_dir;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--plan") == 0) plan = argv[i + 1];
    if (std::strcmp(argv[i], "--run-dir") == 0) run_dir = argv[i + 1];
  }
  const std::vector<std::string> entries = split(plan, ';');
  if (entries.empty()) die("no --plan");
  const int attempt = std::max(1, std::atoi(env("DPTRAIN_ATTEMPT").c_str()));
  const std::string& entry =
      entries[std::min<size_t>(static_cast<size_t>(attempt), entries.size()) - 1];
  const std::string n = std::to_string(attempt);
  Channel ch;
  int64_t step = 0;
  for (const std::string& action : split(entry, ',')) {
    const auto eq = action.find('=');
    const std::string name = action.substr(0, eq);
    const std::string arg = eq == std::string::npos ? "" : action.substr(eq + 1);
    if (name == "record") {
      std::ofstream args(run_dir + "/fake-args-" + n);
      for (int i = 0; i < argc; ++i) args << argv[i] << "\n";
      std::ofstream vars(run_dir + "/fake-env-" + n);
      for (char** e = environ; *e; ++e) vars << *e << "\n";
    } else if (name == "hello") {
      step = arg.empty() ? 0 : std::atoll(arg.c_str());
      hello(&ch, env("DPTRAIN_CONTROL_TOKEN"), step);
    } else if (name == "badtoken") {
      hello(&ch, "not-the-token", 0);
    } else if (name == "step") {
      step = std::atoll(arg.c_str());
      heartbeat(&ch, step);
      dptrain::ControlMessage m;
      m.mutable_metrics()->set_kind("train");
      m.mutable_metrics()->set_step(static_cast<int32_t>(step));
      m.mutable_metrics()->set_train_loss(1.0 / static_cast<double>(step + 1));
      ch.send(m);
    } else if (name == "ckpt") {
      dptrain::ControlMessage m;
      m.mutable_checkpoint_written()->set_file("ckpt-" + arg);
      m.mutable_checkpoint_written()->set_step(std::atoll(arg.c_str()));
      ch.send(m);
    } else if (name == "expect-ping") {
      dptrain::ControlMessage m;
      const auto deadline = Clock::now() + std::chrono::seconds(10);
      bool pinged = false;
      while (!pinged && Clock::now() < deadline) {
        if (ch.receive(&m, 200) < 0) break;
        pinged = m.has_ping();
      }
      if (!pinged) return 3;
    } else if (name == "wait-stop") {
      dptrain::ControlMessage m;
      for (;;) {
        const int r = ch.receive(&m, 100);
        if (r < 0) return 1;
        if (r > 0 && m.has_stop()) return 75;
        heartbeat(&ch, step);
      }
    } else if (name == "wait-close") {
      dptrain::ControlMessage m;
      while (ch.receive(&m, 1000) >= 0) {
      }
      return 75;
    } else if (name == "child") {
      const pid_t pid = ::fork();
      if (pid == 0) {
        ::setpgid(0, 0);
        ::signal(SIGTERM, SIG_IGN);
        for (;;) ::pause();
      }
      std::ofstream(run_dir + "/fake-child-" + n) << pid << "\n";
    } else if (name == "sleep") {
      std::this_thread::sleep_for(std::chrono::milliseconds(std::atoi(arg.c_str())));
    } else if (name == "hang" || name == "hang-hard") {
      if (name == "hang-hard") ::signal(SIGTERM, SIG_IGN);
      for (;;) ::pause();
    } else if (name == "signal") {
      ::raise(std::atoi(arg.c_str()));
    } else if (name == "exit") {
      return std::atoi(arg.c_str());
    } else {
      die("unknown action '" + action + "'");
    }
  }
  return 0;
}
