// File: http/offload.h
//
// Runs CPU-heavy work (parsing and tokenizing a prompt of many megabytes) off the network thread:
// run_on(pool, fn) calls fn() on a thread of `pool` and resumes the calling coroutine on its own
// worker with the result, so the worker's other connections keep being served meanwhile.
// fn must not throw; it runs while the caller is suspended, so it may refer to the caller's locals.
//
// Thread-safety: call from a coroutine running on a worker's io_context. Any number of workers may
// offload at once (net::thread_pool is internally synchronized), so fn runs concurrently with other
// workers' fns and must only touch what is its caller's or is itself thread-safe. The result is
// handed back by a post() to the caller's executor, which orders fn's writes before the resumption.
#pragma once

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <optional>
#include <type_traits>
#include <utility>

#include "http/task.h"

namespace kvroute::http {

template <typename F>
Task<std::invoke_result_t<F&>> run_on(net::thread_pool& pool, F fn) {
  using R = std::invoke_result_t<F&>;
  std::optional<R> out;
  co_await net::async_initiate<const net::use_awaitable_t<Executor>, void()>(
      [&pool, &fn, &out](auto handler) {
        auto ex = net::get_associated_executor(handler);
        net::post(pool, [&fn, &out, ex, handler = std::move(handler)]() mutable {
          out.emplace(fn());
          net::post(ex, std::move(handler));
        });
      },
      use_task);
  co_return std::move(*out);
}

}  // namespace kvroute::http
