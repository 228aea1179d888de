// The control server against fake clients over loopback, in-process: a
// peer with the wrong token, an oversized frame, random bytes, a silent
// peer, a first frame that is not a hello, a second worker, and fifty
// connections opened and dropped are each dropped, while a well-behaved
// client's heartbeats are all seen and its session stays up. The server
// runs on its own thread; every test ends with it closed and joined.
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <random>
#include <thread>

#include <gtest/gtest.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include "core/frame.h"
#include "launcher/control_server.h"

namespace dptrain::launcher {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kGenerous = std::chrono::seconds(20);  // "it did not hang", never a speed claim

const std::string kToken = "0123456789abcdef0123456789abcdef";
const std::string kJob = "run.1";

// A blocking TCP client with bounded waits.
class Client {
 public:
  explicit Client(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~Client() { ::close(fd_); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  bool connected() const { return connected_; }
  void send_bytes(const std::string& bytes) {
    // A dropped peer may see EPIPE/ECONNRESET mid-way; that is the point.
    (void)::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  }
  void send(const ControlMessage& m) { send_bytes(encode_frame(m)); }
  void hello(const std::string& token = kToken, const std::string& job = kJob) {
    ControlMessage m;
    m.mutable_hello()->set_token(token);
    m.mutable_hello()->set_job_id(job);
    m.mutable_hello()->set_steps_total(100);
    send(m);
  }
  void heartbeat(int64_t step) {
    ControlMessage m;
    m.mutable_heartbeat()->set_step(step);
    send(m);
  }
  // True once the server has closed the connection (reading whatever it sent before).
  bool closed_by_server() {
    const auto deadline = Clock::now() + kGenerous;
    char buf[4096];
    while (Clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return true;
      decoder_.feed(std::string_view(buf, static_cast<size_t>(n)));
    }
    return false;
  }
  // The next message of the given kind from the server, within the generous bound.
  bool receive(ControlMessage::BodyCase kind, ControlMessage* out) {
    const auto deadline = Clock::now() + kGenerous;
    char buf[4096];
    while (Clock::now() < deadline) {
      while (decoder_.next(out) == FrameDecoder::Result::kMessage) {
        if (out->body_case() == kind) return true;
      }
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return false;
      decoder_.feed(std::string_view(buf, static_cast<size_t>(n)));
    }
    return false;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  FrameDecoder decoder_;
};

class LauncherControlServer : public ::testing::Test {
 protected:
  // Runs f on the server's thread and returns its result.
  template <typename F>
  auto on_server(F f) {
    std::packaged_task<decltype(f())()> task(f);
    auto result = task.get_future();
    boost::asio::post(io_, [&task] { task(); });
    return result.get();
  }
  void SetUp() override {
    ControlServer::Options o;
    o.hello_timeout_s = 0.5;
    o.ping_interval_s = 0.1;
    ControlServer::Callbacks cb;
    cb.on_hello = [this](const Hello&) { ++hellos_; };
    cb.on_message = [this](const ControlMessage& m) {
      if (m.has_heartbeat()) ++heartbeats_;
    };
    cb.on_session_closed = [this](const std::string&) { ++sessions_closed_; };
    cb.log = [this](const std::string& line) {
      std::lock_guard lock(mutex_);
      log_ += line + "\n";
    };
    server_ = std::make_unique<ControlServer>(io_, o, cb);
    server_->expect_job(kToken, kJob);
    port_ = server_->port();
    thread_ = std::thread([this] { io_.run(); });
  }
  void TearDown() override {
    on_server([this] {
      server_->close();
      return 0;
    });
    io_.stop();
    thread_.join();
    server_.reset();
  }
  int dropped() {
    return on_server([this] { return server_->dropped(); });
  }
  bool has_session() {
    return on_server([this] { return server_->has_session(); });
  }
  template <typename P>
  static bool eventually(P predicate) {
    const auto deadline = Clock::now() + kGenerous;
    while (Clock::now() < deadline) {
      if (predicate()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return predicate();
  }
  // The server logs a drop just after closing the socket: the client may see the close first.
  bool logged(const std::string& what) {
    return eventually([&] { return log().find(what) != std::string::npos; });
  }
  std::string log() {
    std::lock_guard lock(mutex_);
    return log_;
  }

  boost::asio::io_context io_;
  std::unique_ptr<ControlServer> server_;
  uint16_t port_ = 0;
  std::thread thread_;
  std::atomic<int> hellos_{0}, heartbeats_{0}, sessions_closed_{0};
  std::mutex mutex_;
  std::string log_;
};

TEST_F(LauncherControlServer, WellBehavedClientIsHeardAndPinged) {
  Client c(port_);
  ASSERT_TRUE(c.connected());
  c.hello();
  for (int i = 1; i <= 5; ++i) c.heartbeat(i);
  EXPECT_TRUE(eventually([&] { return heartbeats_ == 5; })) << heartbeats_;
  EXPECT_EQ(hellos_, 1);
  EXPECT_TRUE(has_session());
  ControlMessage m;
  EXPECT_TRUE(c.receive(ControlMessage::kPing, &m));
  EXPECT_EQ(dropped(), 0);
}

TEST_F(LauncherControlServer, StopReachesTheSession) {
  Client c(port_);
  c.hello();
  ASSERT_TRUE(eventually([&] { return hellos_ == 1; }));
  EXPECT_TRUE(on_server([this] { return server_->send_stop("test"); }));
  ControlMessage m;
  ASSERT_TRUE(c.receive(ControlMessage::kStop, &m));
  EXPECT_EQ(m.stop().reason(), "test");
}

TEST_F(LauncherControlServer, WrongTokenIsDropped) {
  Client c(port_);
  c.hello("ffffffffffffffffffffffffffffffff");
  c.heartbeat(1);
  EXPECT_TRUE(c.closed_by_server());
  EXPECT_TRUE(eventually([&] { return dropped() == 1; }));
  EXPECT_EQ(hellos_, 0);
  EXPECT_EQ(heartbeats_, 0);
  EXPECT_TRUE(logged("wrong token")) << log();
}

TEST_F(LauncherControlServer, WrongJobIsDropped) {
  Client c(port_);
  c.hello(kToken, "run.0");
  EXPECT_TRUE(c.closed_by_server());
  EXPECT_EQ(hellos_, 0);
  EXPECT_TRUE(logged("expected 'run.1'")) << log();
}

TEST_F(LauncherControlServer, FirstFrameThatIsNotAHelloIsDropped) {
  Client c(port_);
  c.heartbeat(7);
  EXPECT_TRUE(c.closed_by_server());
  EXPECT_EQ(heartbeats_, 0);
  EXPECT_TRUE(logged("not a hello")) << log();
}

TEST_F(LauncherControlServer, OversizedFrameIsDropped) {
  Client c(port_);
  const uint32_t n = 2 * kMaxFrameBytes;
  std::string header(4, '\0');
  for (int i = 0; i < 4; ++i)
    header[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  c.send_bytes(header + std::string(1000, 'x'));
  EXPECT_TRUE(c.closed_by_server());
  EXPECT_TRUE(logged("exceeds the limit")) << log();
}

TEST_F(LauncherControlServer, RandomBytesAreDropped) {
  std::mt19937 rng(42);
  for (int round = 0; round < 5; ++round) {
    Client c(port_);
    std::string junk(4096, '\0');
    for (char& ch : junk) ch = static_cast<char>(rng());
    c.send_bytes(junk);
    EXPECT_TRUE(c.closed_by_server()) << "round " << round;
  }
  // A frame of the right size holding no control message.
  Client c(port_);
  c.send_bytes(std::string("\x10\0\0\0", 4) + std::string(16, '\xff'));
  EXPECT_TRUE(c.closed_by_server());
  EXPECT_TRUE(eventually([&] { return dropped() == 6; })) << log();
  EXPECT_EQ(hellos_, 0);
}

TEST_F(LauncherControlServer, SilentPeerIsDropped) {
  Client c(port_);
  ASSERT_TRUE(c.connected());
  EXPECT_TRUE(c.closed_by_server());
  EXPECT_TRUE(logged("no hello within")) << log();
}

TEST_F(LauncherControlServer, HalfAFrameIsAsSilentAsNothing) {
  Client c(port_);
  ControlMessage m;
  m.mutable_hello()->set_token(kToken);
  m.mutable_hello()->set_job_id(kJob);
  const std::string frame = encode_frame(m);
  c.send_bytes(frame.substr(0, frame.size() / 2));
  EXPECT_TRUE(c.closed_by_server());
  EXPECT_EQ(hellos_, 0);
}

TEST_F(LauncherControlServer, SecondWorkerIsRefused) {
  Client first(port_);
  first.hello();
  ASSERT_TRUE(eventually([&] { return hellos_ == 1; }));
  Client second(port_);
  second.hello();
  EXPECT_TRUE(second.closed_by_server());
  EXPECT_EQ(hellos_, 1);
  first.heartbeat(1);
  EXPECT_TRUE(eventually([&] { return heartbeats_ == 1; }));
}

TEST_F(LauncherControlServer, NewJobEndsTheOldSession) {
  Client c(port_);
  c.hello();
  ASSERT_TRUE(eventually([&] { return hellos_ == 1; }));
  on_server([this] {
    server_->expect_job("another", "run.2");
    return 0;
  });
  EXPECT_TRUE(c.closed_by_server());
  EXPECT_TRUE(eventually([&] { return sessions_closed_ == 1; }));
  Client late(port_);
  late.hello();  // the old token no longer opens anything
  EXPECT_TRUE(late.closed_by_server());
  EXPECT_EQ(hellos_, 1);
}

TEST_F(LauncherControlServer, FiftyConnectionsOpenedAndDroppedLeaveTheSessionAlone) {
  Client worker(port_);
  worker.hello();
  ASSERT_TRUE(eventually([&] { return hellos_ == 1; }));
  int step = 0;
  std::mt19937 rng(7);
  for (int i = 0; i < 50; ++i) {
    {
      Client intruder(port_);
      switch (i % 5) {
        case 0:
          break;  // opened and closed at once
        case 1:
          intruder.hello("bad");
          break;
        case 2:
          intruder.send_bytes(std::string(64, static_cast<char>(rng())));
          break;
        case 3:
          intruder.hello();
          break;  // the right token, but the session exists
        case 4:
          intruder.send_bytes("\x05");
          break;  // a quarter of a header
      }
    }
    worker.heartbeat(++step);
  }
  EXPECT_TRUE(eventually([&] { return heartbeats_ == 50; })) << heartbeats_;
  EXPECT_TRUE(eventually([&] { return dropped() == 50; })) << dropped() << "\n" << log();
  EXPECT_TRUE(has_session());
  EXPECT_EQ(sessions_closed_, 0);
  EXPECT_EQ(hellos_, 1);
  ControlMessage m;
  EXPECT_TRUE(worker.receive(ControlMessage::kPing, &m));
}

TEST_F(LauncherControlServer, AFloodOfSilentPeersDoesNotKeepTheWorkerOut) {
  // More silent connections than the server keeps waiting for a hello: the
  // oldest make room, so a worker connecting now still gets in.
  std::vector<std::unique_ptr<Client>> flood;
  for (int i = 0; i < 40; ++i) flood.push_back(std::make_unique<Client>(port_));
  Client worker(port_);
  worker.hello();
  worker.heartbeat(1);
  EXPECT_TRUE(eventually([&] { return heartbeats_ == 1; })) << log();
  for (auto& c : flood) EXPECT_TRUE(c->closed_by_server());
}

}  // namespace
}  // namespace dptrain::launcher
