// File: http/internal/socket_io.h
//
// The data path's socket reads and writes (docs/adr/0012): Asio's receive and send operations,
// specialized for our buffer types to issue our own system calls.
//
// Reads (DrainAwareBuffer) let the reactor skip the read it knows would find nothing. Asio
// registers sockets with edge-triggered epoll and tries every read at once ("speculatively")
// before it waits: on a keep-alive connection whose next request or response has not arrived, that
// read costs a recv() that returns EAGAIN, then a second recv() after epoll reports the data (0.35
// wasted recv() per proxied request under wrk; nginx wastes none). Asio already has the state to
// skip it: a descriptor's "try speculative" flag, cleared when an operation reports
// `done_and_exhausted` and set again by every epoll event for the descriptor. Its receive operation
// reports exhaustion only at end of stream; reading into a DrainAwareBuffer selects our receive
// operation below, which also reports it when the kernel says the receive queue is now empty.
//
// The kernel says so through TCP_INQ (Linux 4.18+): with the option on, every recvmsg() returns
// how many bytes are still queued, computed after the read, and 1 when only a FIN is left (a short
// read alone would not do: data and a FIN that arrived together are one edge, and the FIN would be
// found only at a timeout). The count is taken after the read; any byte, FIN or reset the kernel
// queues after it wakes the socket's waiters, which raises a new edge, so none is lost between.
// Without the option (enable_inq() not called, another kernel) no count comes back and the read
// behaves as Asio's. With another Boost
// version the specializations are left out and the buffers read and write like any other.
//
// Writes (GatherBuffers, write_all) issue sendmsg() directly; see GatherBuffers.
//
// Thread-safety: a socket's reads and writes run on the thread of the io_context that owns it, at
// most one read and one write in flight at a time, as Asio requires. The workers' io_contexts run
// with BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO, so the reactor takes no per-socket lock around these
// operations (docs/adr/0012). A DrainAwareBuffer's flag and a GatherBuffers belong to the one
// operation that uses them. enable_inq(), read_now() and write_now() are single system calls on a
// descriptor and keep no state.
#pragma once

#include <array>
#include <boost/asio/buffer.hpp>
#include <boost/asio/detail/config.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/system/error_code.hpp>
#include <boost/version.hpp>
#include <cstddef>
#include <tuple>

#include "http/task.h"

namespace kvroute::http {

struct DrainAwareBuffer {
  using value_type = boost::asio::mutable_buffer;
  using const_iterator = const boost::asio::mutable_buffer*;
  boost::asio::mutable_buffer buffer;
  bool* drained = nullptr;  // set by each completed read: did it leave the receive queue empty?
  const_iterator begin() const { return &buffer; }
  const_iterator end() const { return &buffer + 1; }
};

inline DrainAwareBuffer drain_aware(boost::asio::mutable_buffer b, bool* drained) {
  return {b, drained};
}

// Up to four buffers written with one sendmsg() (a head and a body; a chunk's size line, data and
// CRLF). Written through Asio's send operation specialized below: the raw system call, because
// libc's sendmsg() is a thread-cancellation point and pays two atomic updates of the thread's
// cancellation state per call.
class GatherBuffers {
 public:
  using value_type = boost::asio::const_buffer;
  using const_iterator = const boost::asio::const_buffer*;
  template <std::size_t N>
  explicit GatherBuffers(const std::array<boost::asio::const_buffer, N>& b) : count_(N) {
    static_assert(N <= 4, "at most four buffers");
    for (std::size_t i = 0; i < N; ++i) bufs_[i] = b[i];
  }
  explicit GatherBuffers(boost::asio::const_buffer b) : count_(1) { bufs_[0] = b; }
  const_iterator begin() const { return bufs_.data(); }
  const_iterator end() const { return bufs_.data() + count_; }
  std::size_t count() const { return count_; }
  // Drops the first n bytes (after a partial write). False when nothing is left to write.
  bool consume(std::size_t n);

 private:
  std::array<boost::asio::const_buffer, 4> bufs_{};
  std::size_t count_ = 0;
};

// Turns TCP_INQ on for a connected TCP socket (false where the kernel refuses: reads then speculate
// as before).
bool enable_inq(int fd);

// One non-blocking read now, whatever the reactor believes. False: nothing to read yet (`drained`
// stays true and the caller waits with an asynchronous read); true: `ec` and `n` hold the result.
//
// Skipping the speculative read is safe only where the read starts a message and this side wrote
// since the last read (the request after a response, the response after a request): a reset that
// arrived with the last bytes then failed that write. A read in the middle of a message
// (read_more) tries at once when the last read drained the socket, so a reset queued behind the
// last bytes is found now and not at a timeout.
bool read_now(int fd, boost::asio::mutable_buffer b, bool& drained, boost::system::error_code& ec,
              std::size_t& n);

// Writes what it can of `buffers` now with one non-blocking sendmsg(), whatever the reactor
// believes. True: finished, everything written or an error in `ec` (a write that makes no progress
// is a broken pipe). False: the send buffer is full; `buffers` holds what is left, for write_all.
//
// The data path writes this way first: a response or request almost always fits the socket's send
// buffer, and an asynchronous write that completes at once still goes through the scheduler (an
// operation, a post, a resumption). The next read waits for the reactor, so a connection that
// writes at once still yields the worker once per message.
bool write_now(int fd, GatherBuffers& buffers, boost::system::error_code& ec);

}  // namespace kvroute::http

#if BOOST_VERSION == 108100 && defined(BOOST_ASIO_HAS_EPOLL) && !defined(KVROUTE_NO_DRAIN_AWARE)
#define KVROUTE_DRAIN_AWARE 1
#include <boost/asio/detail/reactive_socket_recv_op.hpp>
#include <boost/asio/detail/reactive_socket_send_op.hpp>
#include <boost/asio/detail/reactor_op.hpp>
#include <boost/asio/detail/socket_ops.hpp>
#include <boost/asio/socket_base.hpp>

namespace kvroute::http {
// The receive operation's work: one non-blocking recvmsg() with Asio's semantics (would-block:
// not_done; zero bytes on a stream: eof; EINTR retried), reporting done_and_exhausted when
// TCP_INQ says nothing is left (and setting *buffer.drained).
boost::asio::detail::reactor_op::status drain_aware_recv(int fd, const DrainAwareBuffer& buffer,
                                                         int flags, bool stream,
                                                         boost::system::error_code& ec,
                                                         std::size_t& bytes);
// The send operation's work: one non-blocking sendmsg() (MSG_NOSIGNAL) with Asio's semantics
// (would-block: not_done; EINTR retried; a partial write on a stream: done_and_exhausted).
boost::asio::detail::reactor_op::status gather_send(int fd, const GatherBuffers& buffers, int flags,
                                                    bool stream, boost::system::error_code& ec,
                                                    std::size_t& bytes);

// What both specializations below hold: Asio's operation state, with `Work` doing the I/O.
template <typename Buffers,
          boost::asio::detail::reactor_op::status (*Work)(int, const Buffers&, int, bool,
                                                          boost::system::error_code&, std::size_t&)>
class SocketOp : public boost::asio::detail::reactor_op {
 public:
  SocketOp(const boost::system::error_code& success_ec, boost::asio::detail::socket_type socket,
           boost::asio::detail::socket_ops::state_type state, const Buffers& buffers,
           boost::asio::socket_base::message_flags flags, func_type complete_func)
      : reactor_op(success_ec, &SocketOp::do_perform, complete_func),
        socket_(socket),
        state_(state),
        buffers_(buffers),
        flags_(flags) {}

  static status do_perform(reactor_op* base) {
    auto* o = static_cast<SocketOp*>(base);
    const bool stream = (o->state_ & boost::asio::detail::socket_ops::stream_oriented) != 0;
    return Work(o->socket_, o->buffers_, o->flags_, stream, o->ec_, o->bytes_transferred_);
  }

 private:
  boost::asio::detail::socket_type socket_;
  boost::asio::detail::socket_ops::state_type state_;
  Buffers buffers_;
  boost::asio::socket_base::message_flags flags_;
};
}  // namespace kvroute::http

namespace boost::asio::detail {

// Asio's receive operation, for DrainAwareBuffer (one buffer, a connected stream socket).
template <>
class reactive_socket_recv_op_base<kvroute::http::DrainAwareBuffer>
    : public kvroute::http::SocketOp<kvroute::http::DrainAwareBuffer,
                                     &kvroute::http::drain_aware_recv> {
 public:
  using SocketOp::SocketOp;
};

// Asio's send operation, for GatherBuffers.
template <>
class reactive_socket_send_op_base<kvroute::http::GatherBuffers>
    : public kvroute::http::SocketOp<kvroute::http::GatherBuffers, &kvroute::http::gather_send> {
 public:
  using SocketOp::SocketOp;
};

}  // namespace boost::asio::detail
#endif

namespace kvroute::http {

// A read in the middle of a message (see read_now).
inline Task<std::tuple<boost::system::error_code, std::size_t>> read_more(
    Socket& socket, boost::asio::mutable_buffer b, bool& drained) {
  if (drained) {
    boost::system::error_code ec;
    std::size_t n = 0;
    if (read_now(socket.native_handle(), b, drained, ec, n)) {
      // Through the scheduler, as Asio completes its own immediate reads: a sender that keeps the
      // socket busy must not hold the worker (other connections, the sweep) for a whole body.
      co_await boost::asio::post(socket.get_executor(), use_task);
      co_return std::tuple{ec, n};
    }
  }
  co_return co_await socket.async_read_some(drain_aware(b, &drained), use_task_tuple);
}

// Writes all of `buffers`, looping over partial writes (the data path's one write loop; callers
// try write_now first). The error,
// if any, and the bytes written; a write that makes no progress without an error is a broken pipe.
inline Task<std::tuple<boost::system::error_code, std::size_t>> write_all(Socket& socket,
                                                                          GatherBuffers buffers) {
  std::size_t total = 0;
  for (;;) {
    auto [ec, n] = co_await socket.async_write_some(buffers, use_task_tuple);
    total += n;
    if (ec) co_return std::tuple{ec, total};
    if (n == 0)
      co_return std::tuple{boost::system::error_code(boost::asio::error::broken_pipe), total};
    if (!buffers.consume(n)) co_return std::tuple{ec, total};
  }
}

}  // namespace kvroute::http
