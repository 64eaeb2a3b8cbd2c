// File: http/internal/stream.h
//
// A connection's byte stream: its TCP socket, plain or with TLS on it (docs/adr/0022). The server
// and the upstream pool read and write through it. A plain stream is the socket and the data
// path's own system calls (http/internal/socket_io.h), a branch away from what it was before TLS;
// a TLS stream is Asio's ssl::stream over the same socket, whose writes are gathered into one
// record per message (a chunk's size line, data and CRLF would otherwise be three records).
//
// Thread-safety: as a Socket: used on its io_context's thread, one read and one write at a time.
// Not movable once TLS is on (the TLS layer refers to the socket).
#pragma once

#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/write.hpp>
#include <memory>
#include <string>
#include <string_view>

#include "http/internal/socket_io.h"
#include "http/task.h"

namespace kvroute::http {

class Stream {
 public:
  using TlsLayer = net::ssl::stream<Socket&>;

  explicit Stream(Socket socket) : socket_(std::move(socket)) {}
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  Socket& socket() { return socket_; }
  bool secure() const { return tls_ != nullptr; }
  // The TLS layer's handle (peer certificate, ALPN), null when plain.
  SSL* ssl() { return tls_ ? tls_->native_handle() : nullptr; }

  // Puts TLS on the connected socket. The context is kept as long as the stream. `prepare` runs
  // on the handle before the handshake (a client's SNI and name check).
  template <class Prepare>
  Task<boost::system::error_code> handshake(std::shared_ptr<net::ssl::context> ctx,
                                            net::ssl::stream_base::handshake_type type,
                                            Prepare&& prepare) {
    ctx_ = std::move(ctx);
    tls_ = std::make_unique<TlsLayer>(socket_, *ctx_);
    prepare(tls_->native_handle());
    auto [ec] = co_await tls_->async_handshake(type, use_task_tuple);
    co_return ec;
  }

  // The first read of a message on a TLS stream (a plain one reads from socket() directly, with
  // drain_aware(): no coroutine frame on the data path).
  Task<std::tuple<boost::system::error_code, std::size_t>> tls_read_some(net::mutable_buffer b) {
    return tls_->async_read_some(b, use_task_tuple);
  }
  // A read in the middle of a message. Plain: socket_io.h's read_more, inlined here so that a
  // plain read costs one coroutine frame as before TLS.
  Task<std::tuple<boost::system::error_code, std::size_t>> read_more(net::mutable_buffer b,
                                                                     bool& drained) {
    if (tls_) co_return co_await tls_->async_read_some(b, use_task_tuple);
    if (drained) {
      boost::system::error_code ec;
      std::size_t n = 0;
      if (read_now(socket_.native_handle(), b, drained, ec, n)) {
        co_await boost::asio::post(socket_.get_executor(), use_task);
        co_return std::tuple{ec, n};
      }
    }
    co_return co_await socket_.async_read_some(drain_aware(b, &drained), use_task_tuple);
  }
  // Writes now when plain and the socket takes it all (socket_io.h's write_now); a TLS stream
  // always writes through write_all. False: the rest is left in `g`.
  bool write_now(GatherBuffers& g, boost::system::error_code& ec) {
    if (tls_) return false;
    return http::write_now(socket_.native_handle(), g, ec);
  }
  // Writes all of `g` (plain: socket_io.h's write_all loop, inlined; TLS: one record per call).
  Task<std::tuple<boost::system::error_code, std::size_t>> write_all(GatherBuffers g) {
    if (tls_) {
      std::string out;
      for (const auto& b : g) out.append(static_cast<const char*>(b.data()), b.size());
      co_return co_await net::async_write(*tls_, net::buffer(out), use_task_tuple);
    }
    std::size_t total = 0;
    for (;;) {
      auto [ec, n] = co_await socket_.async_write_some(g, use_task_tuple);
      total += n;
      if (ec) co_return std::tuple{ec, total};
      if (n == 0)
        co_return std::tuple{boost::system::error_code(boost::asio::error::broken_pipe), total};
      if (!g.consume(n)) co_return std::tuple{ec, total};
    }
  }

 private:
  Socket socket_;
  std::shared_ptr<net::ssl::context> ctx_;
  std::unique_ptr<TlsLayer> tls_;
};

}  // namespace kvroute::http
