// File: http/client.h
//
// The upstream side of the proxy: HTTP/1.1 exchanges over a per-thread keep-alive connection pool.
// An Exchange sends one request and then pulls the response body as it arrives (de-chunked), so
// SSE events are relayed as soon as the upstream sends them, in bounded memory.
//
// Failure model (what the proxy's retry rule relies on):
//  - kConnect: the TCP connect failed (refused, unreachable, timed out).
//  - kReset: the connection broke before any response byte arrived.
//  - kTimeout: no response head within the first-byte timeout.
//  - kProtocol: the upstream sent something that is not HTTP.
// Only kConnect and kReset happen before the upstream could have started work, so only they are
// safe to retry elsewhere; a stale pooled connection that fails is retried once on a fresh one
// transparently (and the endpoint's other idle connections are dropped). An idle connection whose
// peer closes it leaves the pool at once.
//
// Thread-safety: a ConnectionPool belongs to one worker thread (one io_context); Exchanges run on
// that thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/result.h"
#include "http/endpoint.h"
#include "http/message.h"
#include "http/task.h"

namespace boost::asio::ssl {
class context;
}

namespace kvroute::http {

namespace net = boost::asio;

struct ClientOptions {
  std::chrono::milliseconds connect_timeout{2000};
  std::chrono::milliseconds first_byte_timeout{300000};  // long prefill or queueing
  std::chrono::milliseconds idle_timeout{60000};         // silence between body bytes
  std::size_t max_idle_per_endpoint = 256;
  std::chrono::milliseconds pool_idle_ttl{60000};
  std::size_t max_response_header_bytes = 64 * 1024;
  // https engines (docs/adr/0022): the context of every TLS connection (tls::make_client_context:
  // CA, client certificate); null: an https endpoint fails to connect. Shared by the pools.
  std::shared_ptr<net::ssl::context> tls;
  // Verify the engine's chain and its name or address (false only when configured so).
  bool tls_verify = true;
};

enum class UpstreamError { kConnect, kReset, kTimeout, kProtocol, kCancelled };
std::string_view to_string(UpstreamError e);

struct UpstreamFailure {
  UpstreamError kind;
  std::string message;
  bool retryable() const {
    return kind == UpstreamError::kConnect || kind == UpstreamError::kReset;
  }
};

class ConnectionPool;

// Lets the owner of a pending start() abort it from the same thread (the client went away while
// the upstream was still computing the response head).
struct CancelToken {
  bool cancelled = false;
  std::function<void()> hook;  // set by the pool while a connection is in use
  void cancel() {
    cancelled = true;
    if (hook) hook();
  }
};

// One request/response on an upstream connection.
class Exchange {
 public:
  ~Exchange();
  Exchange(Exchange&&) noexcept;
  Exchange& operator=(Exchange&&) noexcept;

  int status() const;
  const Headers& headers() const;
  // Next piece of the body; an empty string at the end of the body. The view stays valid until
  // the next call.
  Task<Expected<std::string_view, UpstreamFailure>> read_some();
  // Reads the rest of the body (bounded by `limit` bytes).
  Task<Expected<std::string, UpstreamFailure>> read_all(std::size_t limit);
  // Aborts the exchange now (from the same thread, e.g. when the client left); a pending
  // read_some() completes with kCancelled and the connection is closed, not pooled.
  void cancel();

 private:
  friend class ConnectionPool;
  struct Impl;
  explicit Exchange(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class ConnectionPool {
 public:
  ConnectionPool(Executor ex, ClientOptions opts);
  ~ConnectionPool();
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  // Sends `method target` with `headers` and `body` to `ep` and waits for the response head.
  // `client_address` non-empty: it is appended to X-Forwarded-For and Forwarded (RFC 7239, with
  // proto=https when `client_tls`: the client's connection was TLS), after
  // whatever the client sent there (kept, never trusted).
  Task<Expected<Exchange, UpstreamFailure>> start(const Endpoint& ep, std::string_view method,
                                                  std::string_view target, const Headers& headers,
                                                  std::string_view body,
                                                  CancelToken* cancel = nullptr,
                                                  std::string_view client_address = {},
                                                  bool client_tls = false);

  // A one-shot GET returning (status, body), bounded in size and time; for health checks and
  // scrapes.
  Task<Expected<std::pair<int, std::string>, UpstreamFailure>> get(
      const Endpoint& ep, std::string_view target, std::chrono::milliseconds timeout,
      std::size_t limit = 4 * 1024 * 1024);

  // Closes the idle connections to `ep` (its engine failed a health check or was ejected: they
  // would fail the next requests).
  void drop_idle(const Endpoint& ep);
  // Closes every idle connection. An idle connection keeps a wait queued on its executor (it
  // watches for the peer closing it), so a private io_context's run() returns only after this.
  void close_idle();
  std::size_t idle_connections() const;
  const ClientOptions& options() const { return opts_; }

 private:
  friend class Exchange;
  struct Conn;
  Task<Expected<Exchange, UpstreamFailure>> start_with(
      const Endpoint& ep, std::string_view method, std::string_view target, const Headers& headers,
      std::string_view body, std::chrono::milliseconds first_byte_timeout,
      std::chrono::milliseconds idle_timeout, CancelToken* cancel,
      std::string_view client_address = {}, bool client_tls = false);
  // One per endpoint, made on first use and kept as long as the pool: its idle connections, its
  // resolved addresses and its "host:port".
  struct Slot;
  Slot& slot(const Endpoint& ep);
  void release(std::unique_ptr<Conn> c, Slot& s);
  void watch_idle(Conn& c, Slot& s);
  void drop_idle(Slot& s);
  // Timeouts: the deadline of each connection's operation in progress, checked by a sweep every
  // 50 ms while any is armed (no timer per read or write); a connection past it is closed.
  struct Deadlines;
  void arm(Conn& c, std::chrono::milliseconds d);
  static void disarm(Conn& c);
  static void sweep(const std::shared_ptr<Deadlines>& d);
  Executor ex_;
  ClientOptions opts_;
  struct Idle;
  std::unique_ptr<Idle> idle_;
  std::shared_ptr<Deadlines> deadlines_;
};

}  // namespace kvroute::http
