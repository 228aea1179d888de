#include "launcher/control_server.h"

#include <chrono>

#include "core/error.h"

namespace dptrain::launcher {
namespace {

using boost::asio::ip::tcp;

// Does not stop at the first differing byte, so the time taken tells a
// guessing peer nothing about the token.
bool same_token(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

ControlServer::ControlServer(boost::asio::io_context& io, Options options, Callbacks callbacks)
    : options_(std::move(options)),
      callbacks_(std::move(callbacks)),
      acceptor_(io),
      ping_timer_(io),
      accept_retry_(io) {
  boost::system::error_code ec;
  const auto address = boost::asio::ip::make_address(options_.address, ec);
  if (ec) throw UserError("control channel: '" + options_.address + "' is not an IP address");
  const tcp::endpoint endpoint(address, options_.port);
  const std::string where = options_.address + ":" + std::to_string(options_.port);
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(boost::asio::socket_base::max_listen_connections, ec);
  if (ec) throw UserError("control channel: cannot listen on " + where + ": " + ec.message());
  port_ = acceptor_.local_endpoint().port();
  accept();
  ping();
}

ControlServer::~ControlServer() { close(); }

void ControlServer::accept() {
  acceptor_.async_accept([this, alive = std::weak_ptr<int>(alive_)](
                             const boost::system::error_code& ec, tcp::socket socket) {
    if (alive.expired() || closed_) return;
    if (ec) {
      // Out of descriptors, say: try again shortly rather than spin or stop serving.
      log("control: accept failed: " + ec.message());
      accept_retry_.expires_after(std::chrono::milliseconds(100));
      accept_retry_.async_wait([this, alive](const boost::system::error_code& e) {
        if (!e && !alive.expired() && !closed_) accept();
      });
      return;
    }
    if (static_cast<int>(pending_.size()) >= options_.max_pending) {
      // Closing it takes it out of pending_ (on_closed); hold it meanwhile.
      const auto oldest = pending_.front();
      oldest->close("crowded out by newer connections");
    }
    ControlConnection::Limits limits;
    limits.hello_s = options_.hello_timeout_s;
    limits.idle_s = options_.idle_timeout_s;
    limits.write_s = options_.write_timeout_s;
    ControlConnection::Callbacks cbs;
    // Connections are detached before the server goes, so `this` outlives every call.
    cbs.on_first = [this](ControlConnection& c, const ControlMessage& m) { return admit(c, m); };
    cbs.on_message = [this](ControlConnection& c, const ControlMessage& m) { on_message(c, m); };
    cbs.on_closed = [this](ControlConnection& c, const std::string& why) { on_closed(c, why); };
    auto connection =
        std::make_shared<ControlConnection>(std::move(socket), limits, std::move(cbs));
    pending_.push_back(connection);
    connection->start();
    accept();
  });
}

void ControlServer::ping() {
  ping_timer_.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(options_.ping_interval_s)));
  ping_timer_.async_wait(
      [this, alive = std::weak_ptr<int>(alive_)](const boost::system::error_code& ec) {
        if (ec || alive.expired() || closed_) return;
        if (session_) {
          ControlMessage m;
          m.mutable_ping();
          session_->send(m);
        }
        ping();
      });
}

std::string ControlServer::admit(ControlConnection& connection, const ControlMessage& first) {
  if (!first.has_hello()) return "first frame is not a hello";
  const Hello& hello = first.hello();
  if (token_.empty()) return "no job is expecting a worker";
  if (!same_token(hello.token(), token_)) return "wrong token";
  if (hello.job_id() != job_id_)
    return "hello for job '" + hello.job_id() + "', expected '" + job_id_ + "'";
  if (session_) return "a worker of this job is already connected";
  auto self = connection.shared_from_this();
  std::erase(pending_, self);
  session_ = self;
  log("control: worker connected from " + connection.peer() + " (job " + job_id_ + ")");
  if (callbacks_.on_hello) callbacks_.on_hello(hello);
  return "";
}

void ControlServer::on_message(ControlConnection& connection, const ControlMessage& message) {
  switch (message.body_case()) {
    case ControlMessage::kHeartbeat:
    case ControlMessage::kMetrics:
    case ControlMessage::kCheckpointWritten:
    case ControlMessage::kRungReached:
      if (callbacks_.on_message) callbacks_.on_message(message);
      break;
    case ControlMessage::kPing:
      break;
    case ControlMessage::kHello:
      log("control: ignored a second hello from " + connection.peer());
      break;
    case ControlMessage::kStop:
    case ControlMessage::kProceed:
    case ControlMessage::BODY_NOT_SET:
      connection.close("sent a message only the launcher sends");
      break;
  }
}

void ControlServer::on_closed(ControlConnection& connection, const std::string& reason) {
  auto self = connection.shared_from_this();
  if (self == session_) {
    session_.reset();
    log("control: worker " + connection.peer() + " disconnected: " + reason);
    if (callbacks_.on_session_closed) callbacks_.on_session_closed(reason);
    return;
  }
  std::erase(pending_, self);
  ++dropped_;
  log("control: dropped " + connection.peer() + ": " + reason);
}

void ControlServer::expect_job(const std::string& token, const std::string& job_id) {
  token_ = token;
  job_id_ = job_id;
  if (session_) session_->close("a new job started");
}

bool ControlServer::send(const ControlMessage& message) {
  if (!session_) return false;
  session_->send(message);
  return true;
}

bool ControlServer::send_stop(const std::string& reason) {
  ControlMessage m;
  m.mutable_stop()->set_reason(reason);
  return send(m);
}

void ControlServer::close() {
  if (closed_) return;
  closed_ = true;
  boost::system::error_code ignored;
  acceptor_.close(ignored);
  ping_timer_.cancel();
  accept_retry_.cancel();
  auto all = pending_;
  if (session_) all.push_back(session_);
  pending_.clear();
  session_.reset();
  for (const auto& c : all) {
    c->detach();
    c->close("launcher closing");
  }
}

void ControlServer::log(const std::string& line) const {
  if (callbacks_.log) callbacks_.log(line);
}

}  // namespace dptrain::launcher
