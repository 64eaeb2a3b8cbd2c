// File: http/server.h
//
// An asynchronous HTTP/1.1 server on Boost.Asio with C++20 coroutines and our own parser
// (http/internal/parser.h). One io_context and one SO_REUSEPORT acceptor per worker thread (the
// kernel spreads connections; nothing is shared on the hot path). A Handler coroutine answers each
// request through a ResponseWriter that can send a whole response or stream a chunked one (SSE).
// Limits protect the server from bad clients: header and body size (431/413), a deadline to
// receive a request's headers and body (slowloris), an idle keep-alive timeout and a connection
// cap. Timeouts are deadlines that a per-worker sweep
// checks (no timer per read or write).
//
// Thread-safety: start()/stop()/wait() from one controlling thread; handlers run on the worker
// thread that owns their connection.
//
//   Server server(opts, [](Request& req, ResponseWriter& w) -> Task<void> {
//     co_await w.send(200, "text/plain", "hello");
//   });
//   auto port = server.start();  // binds 127.0.0.1:0 -> OS-picked port
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/result.h"
#include "http/message.h"
#include "http/task.h"

namespace boost::asio::ssl {
class context;
}

namespace kvroute::http {

namespace net = boost::asio;

struct ServerOptions {
  std::string address = "0.0.0.0";
  std::uint16_t port = 8080;  // 0: the OS picks
  int threads = 1;
  std::size_t max_header_bytes = 64 * 1024;
  std::size_t max_body_bytes = 32 * 1024 * 1024;
  std::size_t max_connections = 100000;                 // across all threads
  std::chrono::milliseconds request_timeout{30000};     // to receive one whole request (slowloris)
  std::chrono::milliseconds keepalive_timeout{120000};  // idle time between requests
  std::chrono::milliseconds write_timeout{60000};       // one write to a slow reader
  // The timeouts above are enforced by each worker's sweep, every min(gone_watch_delay, 50 ms):
  // a connection is cut between the timeout and the timeout plus two sweeps.
  // A request still in the handler after this long has its client watched for a disconnect
  // (ResponseWriter::on_client_gone); quicker requests are never watched. Noticed within 2x this.
  std::chrono::milliseconds gone_watch_delay{50};
  // How the server writes the errors it answers itself (400 for a malformed request, 413, 431,
  // 500 when a handler produced nothing): a JSON body for `status`. The front doors pass
  // openai::error_body so clients see one error shape; null: the message as text/plain.
  std::string (*error_body)(int status, std::string_view message) = nullptr;
  // TLS (docs/adr/0022): set, every connection starts with a TLS handshake, with the context this
  // returns for it (tls::ServerContexts::current(), which reloads rotated certificates). Called on
  // the connection's worker thread. A handshake must finish within request_timeout.
  std::function<std::shared_ptr<net::ssl::context>()> tls;
  // Called on the worker thread for each failed handshake with why, for metrics: "protocol" (not
  // TLS, or no common version or cipher), "no_client_certificate" and
  // "client_certificate_rejected" (mTLS), "client_alert" (the client refused ours: unknown CA, a
  // name mismatch), "timeout", "closed", "other".
  std::function<void(std::string_view reason)> on_tls_failure;
};

// How a handler answers. All methods return false when the client is gone (then stop writing).
class ResponseWriter {
 public:
  virtual ~ResponseWriter() = default;
  // A complete response with Content-Length.
  virtual Task<bool> send(int status, std::string_view content_type, std::string body,
                          const Headers& extra = {}) = 0;
  // A chunked response: head first, then chunks as they come, then the end.
  virtual Task<bool> start_stream(int status, std::string_view content_type,
                                  const Headers& extra = {}) = 0;
  virtual Task<bool> write_chunk(std::string_view data) = 0;
  // Ends a chunked response. A handler that returns without calling it aborts the response: the
  // connection closes without the final chunk.
  virtual Task<bool> end_stream() = 0;
  // Whether a response head was already sent (a later error can no longer change the status).
  virtual bool started() const = 0;
  // Called once if the client closes its connection while the handler runs (to cancel upstream
  // work). Runs on the handler's thread.
  virtual void on_client_gone(std::function<void()> fn) = 0;
  virtual bool client_gone() const = 0;
  // The status sent (0 before any).
  virtual int status() const = 0;
};

using Handler = std::function<Task<void>(Request&, ResponseWriter&)>;

// Index of the worker thread running the caller (0..threads-1), -1 outside workers.
int current_worker();

class Server {
 public:
  Server(ServerOptions options, Handler handler);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and starts the worker threads. Returns the bound port.
  Result<std::uint16_t> start();
  // Graceful stop: close the acceptors, close idle connections, let in-flight requests finish
  // until `deadline`. Requests still in the handlers then: `on_deadline` (if any) is called, from
  // this thread, to make them end their responses properly, and they get up to one more second;
  // then what remains is dropped and the threads are joined. Idempotent.
  void stop(std::chrono::milliseconds deadline, const std::function<void()>& on_deadline = {});
  // Blocks until the server stopped (by stop() from another thread).
  void wait();

  std::uint16_t port() const;
  // Open client connections and requests being handled right now.
  std::size_t connections() const;
  // Idle keep-alive connections closed to make room for new ones (at max_connections or when the
  // process ran out of descriptors).
  std::uint64_t idle_evictions() const;
  // TLS handshakes that failed (wrong CA, no client certificate under mTLS, not TLS at all).
  std::uint64_t tls_handshake_failures() const;
  std::size_t active_requests() const;
  // The executor of worker `i`, for background tasks that belong to that thread.
  Executor executor(int i) const;
  int threads() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvroute::http
