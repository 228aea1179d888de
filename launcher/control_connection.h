// One peer of the control channel, as in Asio's chat-server examples: the
// object owns its socket, its read buffer, the FrameDecoder that bounds
// every read, and its queue of frames to send; every async operation is
// paired with a timer. A peer that sends garbage, an oversized frame, or
// nothing in time loses its connection, never the server.
//
// Owned by ControlServer through a shared_ptr (handlers in flight hold one
// too, so the object outlives its last handler). The first complete frame
// goes to Callbacks::on_first, which accepts the peer (it is then
// authenticated) or names the reason to drop it. Later frames go to
// on_message. on_closed runs exactly once, with the reason, however the
// connection ends, unless detach() came first.
#pragma once

#include <array>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include "core/frame.h"

namespace dptrain::launcher {

class ControlConnection : public std::enable_shared_from_this<ControlConnection> {
 public:
  struct Limits {
    double hello_s = 5;                 // from accept to a complete first frame
    double idle_s = 120;                // between complete frames once authenticated
    double write_s = 10;                // for one frame to leave
    size_t max_queued_bytes = 1 << 16;  // a peer that does not read is dropped
  };
  struct Callbacks {
    // Returns "" to accept the peer, else why it is dropped.
    std::function<std::string(ControlConnection&, const ControlMessage&)> on_first;
    std::function<void(ControlConnection&, const ControlMessage&)> on_message;
    std::function<void(ControlConnection&, const std::string& reason)> on_closed;
  };

  ControlConnection(boost::asio::ip::tcp::socket socket, Limits limits, Callbacks callbacks);
  ControlConnection(const ControlConnection&) = delete;
  ControlConnection& operator=(const ControlConnection&) = delete;

  void start();
  void send(const ControlMessage& message);
  // Ends the connection (idempotent) and reports `reason` through on_closed.
  void close(const std::string& reason);
  // Forgets the callbacks: the owner is going away and wants no more calls.
  void detach();

  bool authenticated() const { return authenticated_; }
  bool closed() const { return closed_; }
  const std::string& peer() const { return peer_; }

 private:
  void read();
  void on_read(const boost::system::error_code& ec, size_t n);
  void arm_read_deadline(double seconds, const std::string& reason);
  void write();

  boost::asio::ip::tcp::socket socket_;
  boost::asio::steady_timer read_deadline_;
  boost::asio::steady_timer write_deadline_;
  Limits limits_;
  Callbacks callbacks_;
  std::string peer_;
  FrameDecoder decoder_;
  std::array<char, 16384> read_buffer_;
  std::deque<std::string> write_queue_;
  size_t queued_bytes_ = 0;
  bool writing_ = false;
  bool authenticated_ = false;
  bool closed_ = false;
};

}  // namespace dptrain::launcher
