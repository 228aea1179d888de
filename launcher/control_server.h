// The launcher's end of the control channel: a TCP server on the
// launcher's io_context to which the worker's rank 0 connects. The first
// frame of every connection must be a Hello carrying the current job's
// token and id, within Options::hello_timeout_s; anything else (wrong
// token, garbage, an oversized frame, silence) is dropped with a log line
// and the server goes on serving. At most one connection is the session:
// only its heartbeats, metrics and checkpoint notices reach the caller,
// it gets a Ping every Options::ping_interval_s (so the worker knows the
// launcher is alive), and send_stop() goes to it. Connections that have
// not said hello yet are capped, so a flood of them cannot crowd out the
// job's own: when there are too many, the oldest makes room (the worker
// says hello as soon as it connects, so it is never the oldest for long).
//
// Single-threaded: every method and callback runs on the io_context's
// thread. Binding failures throw UserError.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include "core/dptrain.pb.h"
#include "launcher/control_connection.h"

namespace dptrain::launcher {

class ControlServer {
 public:
  struct Options {
    std::string address = "127.0.0.1";  // an IP literal; 0.0.0.0 for every interface
    uint16_t port = 0;                  // 0: an ephemeral port
    double hello_timeout_s = 5;
    double idle_timeout_s = 120;  // a session silent this long is dropped
    double write_timeout_s = 10;
    double ping_interval_s = 1;
    int max_pending = 32;  // connections not yet authenticated
  };
  struct Callbacks {
    std::function<void(const Hello&)> on_hello;  // a session began
    std::function<void(const ControlMessage&)>
        on_message;  // heartbeat, metrics, checkpoint_written
    std::function<void(const std::string& reason)> on_session_closed;
    std::function<void(const std::string& line)> log;
  };

  ControlServer(boost::asio::io_context& io, Options options, Callbacks callbacks);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  uint16_t port() const { return port_; }

  // From now on only a Hello with this token and job id is accepted; a
  // session of an earlier job is closed.
  void expect_job(const std::string& token, const std::string& job_id);
  // False when no worker is connected.
  bool send(const ControlMessage& message);
  bool send_stop(const std::string& reason);
  bool has_session() const { return session_ != nullptr; }
  // Connections open now, the session included.
  int open_connections() const { return static_cast<int>(pending_.size()) + (session_ ? 1 : 0); }
  int dropped() const { return dropped_; }  // peers refused or dropped so far
  // Stops accepting and closes every connection.
  void close();

 private:
  void accept();
  void ping();
  std::string admit(ControlConnection& connection, const ControlMessage& first);
  void on_message(ControlConnection& connection, const ControlMessage& message);
  void on_closed(ControlConnection& connection, const std::string& reason);
  void log(const std::string& line) const;

  Options options_;
  Callbacks callbacks_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::steady_timer ping_timer_;
  boost::asio::steady_timer accept_retry_;
  uint16_t port_ = 0;
  std::string token_, job_id_;
  std::vector<std::shared_ptr<ControlConnection>> pending_;  // oldest first
  std::shared_ptr<ControlConnection> session_;
  int dropped_ = 0;
  bool closed_ = false;
  // Handlers still queued when the server is destroyed see it expired.
  std::shared_ptr<int> alive_ = std::make_shared<int>(0);
};

}  // namespace dptrain::launcher
