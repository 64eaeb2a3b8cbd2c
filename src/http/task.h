// File: http/task.h
//
// The coroutine type of the data path. Every worker runs one io_context, so coroutines, sockets and
// acceptors name its concrete executor instead of Asio's type-erased `any_io_executor` (whose
// copies, destructions and `prefer` calls on each asynchronous operation were ~5% of the proxy's
// CPU under load). Coroutines of one chain must share the executor type: use Task<T> and `use_task`
// throughout.
//
// Thread-safety: declarations only (types and completion tokens). A Task runs on the thread that
// runs its io_context; a Socket or Acceptor is used only from that thread (the server's workers
// run their io_contexts with BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO, which drops the reactor's
// per-socket locks; other threads reach them through post()).
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace kvroute::http {

namespace net = boost::asio;

using Executor = net::io_context::executor_type;
template <typename T>
using Task = net::awaitable<T, Executor>;
inline constexpr net::use_awaitable_t<Executor> use_task;
// Completes with a tuple (error_code, ...) instead of throwing.
inline constexpr auto use_task_tuple = net::as_tuple(use_task);
using Socket = net::basic_stream_socket<net::ip::tcp, Executor>;
using Acceptor = net::basic_socket_acceptor<net::ip::tcp, Executor>;

}  // namespace kvroute::http
