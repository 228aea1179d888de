#include "launcher/control_connection.h"

#include <chrono>
#include <cstdio>

#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/write.hpp>

namespace dptrain::launcher {
namespace {

std::chrono::steady_clock::duration seconds(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(s));
}

std::string seconds_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g s", s);
  return buf;
}

std::string describe_peer(const boost::asio::ip::tcp::socket& socket) {
  boost::system::error_code ec;
  const auto endpoint = socket.remote_endpoint(ec);
  if (ec) return "unknown peer";
  return endpoint.address().to_string() + ":" + std::to_string(endpoint.port());
}

}  // namespace

ControlConnection::ControlConnection(boost::asio::ip::tcp::socket socket, Limits limits,
                                     Callbacks callbacks)
    : socket_(std::move(socket)),
      read_deadline_(socket_.get_executor()),
      write_deadline_(socket_.get_executor()),
      limits_(limits),
      callbacks_(std::move(callbacks)),
      peer_(describe_peer(socket_)) {}

void ControlConnection::start() {
  // The deadline runs from the accept, not from the last byte: a peer
  // trickling a frame byte by byte is as silent as one sending nothing.
  arm_read_deadline(limits_.hello_s, "no hello within " + seconds_text(limits_.hello_s));
  read();
}

void ControlConnection::read() {
  socket_.async_read_some(boost::asio::buffer(read_buffer_),
                          [self = shared_from_this()](const boost::system::error_code& ec,
                                                      size_t n) { self->on_read(ec, n); });
}

void ControlConnection::on_read(const boost::system::error_code& ec, size_t n) {
  if (closed_) return;
  if (ec) {
    close(ec == boost::asio::error::eof ? "closed by the peer" : ec.message());
    return;
  }
  decoder_.feed(std::string_view(read_buffer_.data(), n));
  ControlMessage message;
  for (;;) {
    const FrameDecoder::Result r = decoder_.next(&message);
    if (r == FrameDecoder::Result::kNeedMore) break;
    if (r == FrameDecoder::Result::kError) {
      close("bad frame: " + decoder_.error());
      return;
    }
    if (!authenticated_) {
      const std::string refusal =
          callbacks_.on_first ? callbacks_.on_first(*this, message) : "not accepting peers";
      if (!refusal.empty()) {
        close(refusal);
        return;
      }
      authenticated_ = true;
    } else if (callbacks_.on_message) {
      callbacks_.on_message(*this, message);
    }
    if (closed_) return;
    arm_read_deadline(limits_.idle_s, "silent for " + seconds_text(limits_.idle_s));
  }
  read();
}

void ControlConnection::arm_read_deadline(double s, const std::string& reason) {
  read_deadline_.expires_after(seconds(s));
  read_deadline_.async_wait(
      [self = shared_from_this(), reason](const boost::system::error_code& ec) {
        if (!ec && !self->closed_) self->close(reason);
      });
}

void ControlConnection::send(const ControlMessage& message) {
  if (closed_) return;
  write_queue_.push_back(encode_frame(message));
  queued_bytes_ += write_queue_.back().size();
  if (queued_bytes_ > limits_.max_queued_bytes) {
    close("not reading what is sent to it");
    return;
  }
  if (!writing_) write();
}

void ControlConnection::write() {
  writing_ = true;
  write_deadline_.expires_after(seconds(limits_.write_s));
  write_deadline_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (!ec && !self->closed_) self->close("a write timed out");
  });
  boost::asio::async_write(
      socket_, boost::asio::buffer(write_queue_.front()),
      [self = shared_from_this()](const boost::system::error_code& ec, size_t) {
        self->write_deadline_.cancel();
        if (self->closed_) return;
        if (ec) {
          self->close("write failed: " + ec.message());
          return;
        }
        self->queued_bytes_ -= self->write_queue_.front().size();
        self->write_queue_.pop_front();
        if (self->write_queue_.empty()) {
          self->writing_ = false;
        } else {
          self->write();
        }
      });
}

void ControlConnection::close(const std::string& reason) {
  if (closed_) return;
  closed_ = true;
  read_deadline_.cancel();
  write_deadline_.cancel();
  boost::system::error_code ignored;
  socket_.shutdown(boost::asio::ip::tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
  auto on_closed = std::move(callbacks_.on_closed);
  callbacks_ = {};
  if (on_closed) on_closed(*this, reason);
}

void ControlConnection::detach() { callbacks_ = {}; }

}  // namespace dptrain::launcher
