#include "http/server.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_set>
#include <vector>

#include "common/log.h"
#include "common/memory.h"
#include "common/mutex.h"
#include "http/internal/deadline.h"
#include "http/internal/in_buffer.h"
#include "http/internal/parser.h"
#include "http/internal/socket_io.h"
#include "http/internal/stream.h"

namespace kvroute::http {

using namespace std::string_view_literals;

using tcp = net::ip::tcp;
constexpr auto kTuple = use_task_tuple;

namespace {
thread_local int t_worker = -1;

// Watches an idle-looking client socket while its request is being handled: readable with zero
// bytes (EOF) or an error means the client went away. Pipelined bytes are left in place.
struct GoneWatch {
  net::cancellation_signal cancel;
  std::function<void()> on_gone;
  bool gone = false;
  bool done = false;
  // A TLS client that leaves sends close_notify (an encrypted record, like a pipelined request)
  // before its FIN: bytes are no proof of a pipelined request. Its watch looks for the FIN
  // (POLLRDHUP) instead, and keeps looking at each sweep after bytes arrived.
  bool tls = false;
  bool bytes_seen = false;
  void mark_gone() {
    gone = true;
    if (on_gone) on_gone();
  }
};

// Whether the peer shut its sending side (a FIN arrived, read or not), or the socket failed.
bool peer_closed(int fd) {
  pollfd p{fd, POLLRDHUP, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}
}  // namespace

int current_worker() { return t_worker; }

struct SessionState {
  Socket* socket = nullptr;
  bool busy = false;
  // The request in the handler, when its client can be watched (nothing pipelined behind it).
  std::shared_ptr<GoneWatch> watch;
  std::uint64_t watch_at =
      kNoDeadline;  // the sweep that arms the watch (no clock read per request)
  bool watching = false;
  // The deadline of the read or write in progress, in sweeps of the worker (kNoDeadline: none). The
  // sweep that reaches it closes the socket and sets timed_out; the session then ends.
  std::uint64_t deadline = kNoDeadline;
  bool timed_out = false;
  bool drained =
      false;  // the last read left the socket's receive queue empty (http/internal/socket_io.h)
  bool served = false;   // answered a request: an idle keep-alive connection between requests
  bool evicted = false;  // closed by evict_idle()
};

struct Worker {
  int index = 0;
  // One thread runs it, and every socket of the worker is used only on that thread (other threads
  // reach the worker through post()): the reactor's per-socket locks can go (docs/adr/0012).
  net::io_context ioc{BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO};
  std::optional<Acceptor> acceptor;
  // The sweep's period and how many sweeps ran: deadlines count sweeps, so setting one reads no
  // clock, and a worker that falls behind delays its timeouts instead of firing them early.
  std::chrono::milliseconds tick{50};
  std::uint64_t sweeps = 0;
  std::chrono::steady_clock::time_point epoch = coarse_now();  // sweep numbers count ticks from it
  std::thread thread;
  std::unordered_set<SessionState*> sessions;  // owned by the worker thread
  std::optional<net::steady_timer> sweep;      // arms the client-gone watches of slow requests
  std::string (*error_body)(int, std::string_view) = nullptr;  // ServerOptions::error_body
  // Requests in the handler. Per worker, on its own cache line: a server-wide counter was two
  // writes per request to a line every worker shared.
  alignas(64) std::atomic<std::size_t> active{0};
  // Client connections this worker serves (or was handed and will serve): the acceptors balance on
  // it.
  alignas(64) std::atomic<std::size_t> live{0};
};

struct Server::Impl {
  ServerOptions opts;
  Handler handler;
  std::vector<std::unique_ptr<Worker>> workers;
  std::atomic<bool> stopping{false};
  std::atomic<bool> stopped{false};
  std::atomic<std::uint64_t> evictions{0};     // idle connections closed to make room
  std::atomic<std::uint64_t> tls_failures{0};  // TLS handshakes that failed
  std::uint16_t port = 0;
  // Wakes stop() and wait() when a worker finishes a request or closes; what they wait for is in
  // atomics, the mutex only orders a notify after the waiter's test.
  Mutex mu;
  CondVar cv;
  // Waits (mu held) until done() or the deadline; returns done().
  template <class Done>
  bool wait_until(std::chrono::steady_clock::time_point deadline, Done done) REQUIRES(mu) {
    while (!done()) {
      if (!cv.wait_until(mu, deadline)) return done();
    }
    return true;
  }

  // The listening sockets' protocol (v4 or v6): a connection handed to another worker is adopted
  // with it.
  tcp protocol = tcp::v4();
  std::size_t active() const {
    std::size_t n = 0;
    for (const auto& w : workers) n += w->active.load();
    return n;
  }
  // Client connections, including those being handed to another worker.
  std::size_t live() const {
    std::size_t n = 0;
    for (const auto& w : workers) n += w->live.load(std::memory_order_relaxed);
    return n;
  }
  Task<void> accept_loop(Worker& w);
  // Closes one idle keep-alive connection of `w` (at the connection limit or out of descriptors, a
  // new client outranks a connection that waits for nothing, as nginx's reusable connections do).
  // False when every connection is busy.
  static bool evict_idle(Worker& w);
  void sweep(Worker& w);
  Task<void> session(Worker& w, Socket socket);
  // Reads one request into `req`. False: the connection ends (its error, if any, was answered).
  Task<bool> read_request(Worker& w, Stream& stream, SessionState& state, InBuffer& in,
                          Request& req);
};

namespace {

void arm(SessionState& s, const Worker& w, std::chrono::milliseconds d) {
  s.deadline = deadline_after(w.sweeps, d, w.tick);
}
void disarm(SessionState& s) { s.deadline = kNoDeadline; }

void append_status_line(HeadBuffer& s, int status) {
  s += "HTTP/1.1 "sv;
  s.append_decimal(static_cast<std::size_t>(status));
  s += ' ';
  s += reason_phrase(status);
  s += "\r\n"sv;
}

class Writer final : public ResponseWriter {
 public:
  // head_only: the answer to a HEAD request, whose headers describe a body that is not sent.
  Writer(Stream& stream, SessionState& state, const Worker& worker, const ServerOptions& opts,
         bool keep_alive, bool head_only)
      : stream_(stream),
        state_(state),
        worker_(worker),
        opts_(opts),
        keep_alive_(keep_alive),
        head_only_(head_only) {}

  Task<bool> send(int status, std::string_view content_type, std::string body,
                  const Headers& extra) override {
    if (started_ || failed_) co_return false;
    started_ = true;
    status_ = status;
    HeadBuffer head;
    append_status_line(head, status);
    head += "Content-Type: "sv;
    head += content_type;
    head += "\r\nContent-Length: "sv;
    head.append_decimal(body.size());
    head += "\r\n"sv;
    append_common(head, extra);
    std::array<net::const_buffer, 2> bufs{net::buffer(head.view()), net::buffer(body)};
    if (head_only_) bufs[1] = net::const_buffer();
    GatherBuffers g(bufs);
    if (auto done = try_write(g)) co_return *done;
    co_return co_await finish_write(g);
  }

  Task<bool> start_stream(int status, std::string_view content_type,
                          const Headers& extra) override {
    if (started_ || failed_) co_return false;
    started_ = true;
    streaming_ = true;
    status_ = status;
    HeadBuffer head;
    append_status_line(head, status);
    head += "Content-Type: "sv;
    head += content_type;
    head +=
        "\r\nTransfer-Encoding: chunked\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n"sv;
    append_common(head, extra);
    std::array<net::const_buffer, 1> bufs{net::buffer(head.view())};
    GatherBuffers g(bufs);
    if (auto done = try_write(g)) co_return *done;
    co_return co_await finish_write(g);
  }

  Task<bool> write_chunk(std::string_view data) override {
    if (!streaming_ || ended_ || failed_) co_return false;
    if (data.empty() || head_only_) co_return true;  // an empty chunk would end the stream
    char size_line[24];
    int n = std::snprintf(size_line, sizeof size_line, "%zx\r\n", data.size());
    std::array<net::const_buffer, 3> bufs{net::buffer(size_line, static_cast<std::size_t>(n)),
                                          net::buffer(data.data(), data.size()),
                                          net::buffer("\r\n", 2)};
    // A handler that writes chunk after chunk without waiting on anything else would hold the
    // worker while the socket takes them: every 16th chunk passes through the scheduler.
    if (++chunks_ % 16 == 0) co_await net::post(stream_.socket().get_executor(), use_task);
    GatherBuffers g(bufs);
    if (auto done = try_write(g)) co_return *done;
    co_return co_await finish_write(g);
  }

  Task<bool> end_stream() override {
    if (!streaming_ || ended_ || failed_) co_return false;
    ended_ = true;
    if (head_only_) co_return true;
    std::array<net::const_buffer, 1> bufs{net::buffer("0\r\n\r\n", 5)};
    GatherBuffers g(bufs);
    if (auto done = try_write(g)) co_return *done;
    co_return co_await finish_write(g);
  }

  bool started() const override { return started_; }
  int status() const override { return status_; }
  void on_client_gone(std::function<void()> fn) override {
    if (watch_) watch_->on_gone = std::move(fn);
  }
  bool client_gone() const override { return failed_ || (watch_ && watch_->gone); }

  bool streaming() const { return streaming_; }
  bool ended() const { return ended_; }
  bool failed() const { return failed_; }
  void set_watch(std::shared_ptr<GoneWatch> w) { watch_ = std::move(w); }

 private:
  void append_common(HeadBuffer& head, const Headers& extra) const {
    for (const auto& [k, v] : extra) {
      head += k;
      head += ": "sv;
      head += v;
      head += "\r\n"sv;
    }
    if (!keep_alive_) head += "Connection: close\r\n"sv;
    head += "\r\n"sv;
  }

  // Writes at once when the socket takes it all (the usual case: no coroutine, no scheduler round
  // trip; http/internal/socket_io.h). Empty: the rest is left in `g` for finish_write.
  std::optional<bool> try_write(GatherBuffers& g) {
    boost::system::error_code ec;
    if (!stream_.write_now(g, ec)) return std::nullopt;
    if (ec) failed_ = true;
    return !ec;
  }

  Task<bool> finish_write(GatherBuffers g) {
    arm(state_, worker_, opts_.write_timeout);
    auto [ec, n] = co_await stream_.write_all(g);
    disarm(state_);
    if (ec) failed_ = true;
    co_return !ec;
  }

  Stream& stream_;
  SessionState& state_;
  const Worker& worker_;
  const ServerOptions& opts_;
  bool keep_alive_;
  bool head_only_;
  bool started_ = false;
  bool streaming_ = false;
  bool ended_ = false;
  bool failed_ = false;
  int status_ = 0;
  std::uint64_t chunks_ = 0;
  std::shared_ptr<GoneWatch> watch_;
};

void start_gone_watch(Socket& socket, const std::shared_ptr<GoneWatch>& watch) {
  socket.async_wait(tcp::socket::wait_read,
                    net::bind_cancellation_slot(
                        watch->cancel.slot(), [&socket, watch](boost::system::error_code ec) {
                          if (ec || watch->done) return;
                          char c;
                          ssize_t n =
                              ::recv(socket.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
                          if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) ||
                              (watch->tls && n > 0 && peer_closed(socket.native_handle()))) {
                            watch->mark_gone();
                          } else if (n > 0 && watch->tls) {
                            watch->bytes_seen = true;  // the sweep looks for the FIN from now on
                          }
                          // n > 0 (plain): the client pipelined its next request; it is read
                          // after this one.
                        }));
}

// The body and content type of an error the server answers itself (ServerOptions::error_body).
std::pair<std::string, std::string_view> error_response(std::string (*error_body)(int,
                                                                                  std::string_view),
                                                        int status, std::string_view message) {
  if (error_body != nullptr) return {error_body(status, message), "application/json"};
  std::string text(message);
  text += '\n';
  return {std::move(text), "text/plain"};
}

Task<void> send_error_and_close(Stream& stream, SessionState& state, const Worker& w, int status,
                                std::string_view message) {
  auto [body, content_type] = error_response(w.error_body, status, message);
  HeadBuffer head;
  append_status_line(head, status);
  head += "Content-Type: "sv;
  head += content_type;
  head += "\r\nContent-Length: "sv;
  head.append_decimal(body.size());
  head += "\r\nConnection: close\r\n\r\n"sv;
  std::array<net::const_buffer, 2> bufs{net::buffer(head.view()), net::buffer(body)};
  arm(state, w, std::chrono::seconds(5));
  co_await stream.write_all(GatherBuffers(bufs));
  disarm(state);
}

// A read of a request failed. Reset, or timed out (closed by the sweep: a slowloris gets no
// answer): nothing to say. The client closed its side mid-request: it may still read a 400.
Task<void> after_failed_read(Stream& stream, SessionState& state, const Worker& w,
                             boost::system::error_code ec) {
  if (ec != net::error::eof || state.timed_out) co_return;
  co_await send_error_and_close(stream, state, w, 400,
                                "malformed HTTP request: the client closed its side mid-request");
}

// The answer to a request the parser refused: 400, 413, 431 or 501, then close.
Task<void> refuse(Stream& stream, SessionState& state, const Worker& w, const ParseResult& r) {
  const int status = r.status == ParseStatus::kHeadersTooLarge  ? 431
                     : r.status == ParseStatus::kBodyTooLarge   ? 413
                     : r.status == ParseStatus::kNotImplemented ? 501
                                                                : 400;
  const std::string msg =
      status == 400 ? "malformed HTTP request: " + std::string(r.error) : std::string(r.error);
  co_await send_error_and_close(stream, state, w, status, msg);
}

// Why a TLS handshake failed, in a few words fit for a metric label
// (ServerOptions::on_tls_failure).
std::string_view tls_failure_reason(const boost::system::error_code& ec, bool timed_out) {
  if (timed_out) return "timeout";
  if (ec.category() == net::error::get_ssl_category()) {
    const int reason = ERR_GET_REASON(static_cast<unsigned long>(ec.value()));
    switch (reason) {
      case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
        return "no_client_certificate";
      case SSL_R_CERTIFICATE_VERIFY_FAILED:
        return "client_certificate_rejected";
      case SSL_R_WRONG_VERSION_NUMBER:
      case SSL_R_HTTP_REQUEST:
      case SSL_R_UNSUPPORTED_PROTOCOL:
      case SSL_R_NO_SHARED_CIPHER:
      case SSL_R_UNKNOWN_PROTOCOL:
      case SSL_R_PACKET_LENGTH_TOO_LONG:
        return "protocol";
      default:
        // Alerts the client sent: OpenSSL numbers them from SSL_AD_REASON_OFFSET.
        return reason >= SSL_AD_REASON_OFFSET ? "client_alert" : "other";
    }
  }
  if (ec == net::error::eof || ec == net::error::connection_reset ||
      ec == net::ssl::error::stream_truncated)
    return "closed";
  return "other";
}

constexpr std::size_t kReadSize = 4096;
// After a request body this large, freed memory goes back to the OS (common/memory.h).
constexpr std::size_t kLargeBodyBytes = 4 * 1024 * 1024;

}  // namespace

Task<void> Server::Impl::accept_loop(Worker& w) {
  for (;;) {
    auto [ec, socket] = co_await w.acceptor->async_accept(kTuple);
    if (stopping.load() || !w.acceptor->is_open()) co_return;
    if (ec) {
      // Out of descriptors: free one held by an idle connection and accept again at once; else
      // (and for other errors) back off briefly instead of spinning.
      const bool no_fds = ec == boost::system::errc::too_many_files_open ||
                          ec == boost::system::errc::too_many_files_open_in_system;
      if (no_fds && evict_idle(w)) {
        ++evictions;
        continue;
      }
      net::steady_timer t(w.ioc, std::chrono::milliseconds(50));
      co_await t.async_wait(kTuple);
      continue;
    }
    // At the limit (connections still being handed over count) an idle connection makes room.
    if (live() >= opts.max_connections) {
      if (!evict_idle(w)) {
        boost::system::error_code ignored;
        socket.close(ignored);
        continue;
      }
      ++evictions;
    }
    boost::system::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    enable_inq(socket.native_handle());
    // SO_REUSEPORT spreads connections over the workers by a hash of their addresses: 64 come out
    // as 38 and 26 as often as not, and the busier worker's queue sets the tail latency. A worker
    // that holds more connections than another hands the new one to the least loaded
    // (docs/adr/0014).
    Worker* target = &w;
    for (const auto& o : workers) {
      if (o->live.load(std::memory_order_relaxed) < target->live.load(std::memory_order_relaxed))
        target = o.get();
    }
    target->live.fetch_add(1);
    if (target == &w) {
      net::co_spawn(w.ioc, session(w, std::move(socket)), net::detached);
      continue;
    }
    boost::system::error_code rec;
    const int fd = socket.release(rec);  // leaves this worker's reactor
    if (rec) {
      target->live.fetch_sub(1);
      continue;  // the socket was closed; the client sees a reset
    }
    // Owns the descriptor until the target adopts it (closed if the worker never runs the handler).
    auto owned = std::shared_ptr<int>(new int(fd), [](int* f) {
      if (*f >= 0) ::close(*f);
      delete f;
    });
    net::post(target->ioc, [this, target, owned] {
      Socket adopted(target->ioc.get_executor());
      boost::system::error_code aec;
      adopted.assign(protocol, *owned, aec);
      if (aec) {
        target->live.fetch_sub(1);
        return;  // `owned` closes it
      }
      *owned = -1;
      net::co_spawn(target->ioc, session(*target, std::move(adopted)), net::detached);
    });
  }
}

Task<bool> Server::Impl::read_request(Worker& w, Stream& stream, SessionState& state, InBuffer& in,
                                      Request& req) {
  arm(state, w, opts.request_timeout);
  BodyFraming framing;
  ParseResult head;
  std::size_t searched = 0;
  for (;;) {
    head = parse_request_head(in.view(), opts.max_header_bytes, req, framing, searched);
    if (head.status != ParseStatus::kIncomplete) break;
    searched = in.size();
    auto [ec, n] = co_await stream.read_more(in.prepare(kReadSize), state.drained);
    if (ec) {
      co_await after_failed_read(stream, state, w, ec);
      co_return false;
    }
    in.commit(n);
  }
  if (head.status != ParseStatus::kDone) {
    co_await refuse(stream, state, w, head);
    co_return false;
  }
  in.consume(head.consumed);
  if (!framing.chunked && framing.length > opts.max_body_bytes) {
    const ParseResult too_large{ParseStatus::kBodyTooLarge, 0, "request body exceeds the limit"};
    co_await refuse(stream, state, w, too_large);
    co_return false;
  }
  if (framing.expect_continue && (framing.chunked || in.size() < framing.length)) {
    static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
    auto [ec, n] = co_await stream.write_all(GatherBuffers(net::buffer(kContinue)));
    if (ec) co_return false;
  }
  if (framing.chunked) {
    ChunkedDecoder decoder;
    for (;;) {
      const ParseResult body = decoder.feed(in.view(), req.body, opts.max_body_bytes);
      in.consume(body.consumed);
      if (body.status == ParseStatus::kDone) break;
      if (body.status != ParseStatus::kIncomplete) {
        co_await refuse(stream, state, w, body);
        co_return false;
      }
      auto [ec, n] = co_await stream.read_more(in.prepare(kReadSize), state.drained);
      if (ec) {
        co_await after_failed_read(stream, state, w, ec);
        co_return false;
      }
      in.commit(n);
    }
  } else if (framing.length > 0) {
    const auto len = static_cast<std::size_t>(framing.length);
    const std::size_t have = std::min(len, in.size());
    req.body.assign(in.view().substr(0, have));
    in.consume(have);
    // The rest straight into the body, growing it as bytes arrive (a declared length alone does
    // not make the server allocate it). It doubles when full, so each byte is zeroed once by the
    // resize: resizing per read to the next doubling zeroed megabytes for every 64 KiB read.
    std::size_t filled = req.body.size();
    while (filled < len) {
      if (filled == req.body.size()) {
        req.body.resize(std::min(len, std::max<std::size_t>(2 * filled, filled + 64 * 1024)));
      }
      auto [ec, n] = co_await stream.read_more(
          net::buffer(req.body.data() + filled, req.body.size() - filled), state.drained);
      filled += n;
      if (ec) {
        req.body.resize(filled);
        co_await after_failed_read(stream, state, w, ec);
        co_return false;
      }
    }
  }
  disarm(state);
  // Some clients send a CRLF after a body (RFC 9112 section 2.2): not the start of a request.
  while (in.view().starts_with("\r\n")) in.consume(2);
  co_return true;
}

bool Server::Impl::evict_idle(Worker& w) {
  for (SessionState* s : w.sessions) {
    if (s->busy || !s->served || s->evicted) continue;
    s->evicted = true;
    boost::system::error_code ignored;
    s->socket->shutdown(tcp::socket::shutdown_both, ignored);
    s->socket->close(ignored);  // its keep-alive read ends; the session frees the descriptor
    return true;
  }
  return false;
}

Task<void> Server::Impl::session(Worker& w, Socket plain) {
  Stream stream(std::move(plain));
  Socket& socket = stream.socket();
  SessionState state;
  state.socket = &socket;
  w.sessions.insert(&state);
  InBuffer in;
  std::string remote;  // once per connection: the proxy's X-Forwarded-For
  {
    boost::system::error_code ec;
    const auto peer = socket.remote_endpoint(ec);
    if (!ec) remote = peer.address().to_string();
  }
  bool open = true;
  if (opts.tls) {
    // The handshake has the time of a request's headers (a client that never finishes it is cut
    // by the sweep).
    arm(state, w, opts.request_timeout);
    // Named locals: GCC 12 mishandles some temporaries inside co_await.
    std::shared_ptr<net::ssl::context> ctx = opts.tls();
    const auto no_preparation = [](SSL*) {};
    const auto ec =
        co_await stream.handshake(std::move(ctx), net::ssl::stream_base::server, no_preparation);
    disarm(state);
    if (ec) {
      open = false;
      tls_failures.fetch_add(1, std::memory_order_relaxed);
      const std::string_view why = tls_failure_reason(ec, state.timed_out);
      if (opts.on_tls_failure) opts.on_tls_failure(why);
      spdlog::debug("TLS handshake with {} failed ({}): {}", remote, why, ec.message());
    }
  }
  while (open) {
    if (stopping.load()) break;
    state.busy = false;
    // Idle keep-alive wait for the first byte of the next request. The response was written since
    // the last read: the reactor may wait for the next bytes without trying first
    // (http/internal/socket_io.h).
    if (in.size() == 0) {
      arm(state, w, opts.keepalive_timeout);
      std::tuple<boost::system::error_code, std::size_t> got;
      if (stream.secure()) {
        got = co_await stream.tls_read_some(in.prepare(kReadSize));
      } else {
        got = co_await socket.async_read_some(drain_aware(in.prepare(kReadSize), &state.drained),
                                              kTuple);
      }
      auto [ec, n] = got;
      if (ec) break;
      in.commit(n);
    }
    state.busy = true;
    // Declared before the request, so it runs after the request's memory is freed.
    struct ReleaseAfterLargeBody {
      std::size_t bytes = 0;
      ~ReleaseAfterLargeBody() {
        if (bytes >= kLargeBodyBytes) release_free_memory();
      }
    } release_after;
    Request req;
    req.remote_address = remote;
    req.secure = stream.secure();
    const bool complete = co_await read_request(w, stream, state, in, req);
    release_after.bytes = req.body.capacity();
    if (!complete) break;
    req.keep_alive = req.keep_alive && !stopping.load();

    w.active.fetch_add(1);
    Writer writer(stream, state, w, opts, req.keep_alive, req.method == "HEAD");
    auto watch = std::make_shared<GoneWatch>();
    watch->tls = stream.secure();
    writer.set_watch(watch);
    // Most requests finish long before a client could be noticed leaving, so the watch (an
    // async_wait: one epoll_ctl each time) is armed by the worker's sweep only for requests still
    // in the handler after ServerOptions::gone_watch_delay.
    if (in.size() == 0) {
      state.watch = watch;
      state.watch_at = deadline_after(w.sweeps, opts.gone_watch_delay, w.tick);
    }
    try {
      co_await handler(req, writer);
    } catch (const std::exception& e) {
      spdlog::error("handler failed: {}", e.what());
    }
    watch->done = true;
    if (state.watching) watch->cancel.emit(net::cancellation_type::all);
    state.watch.reset();
    state.watching = false;
    if (!writer.started() && !writer.failed() && !watch->gone) {
      // Arguments are named locals: GCC 12 mishandles some temporaries inside co_await.
      auto [body, content_type] =
          error_response(opts.error_body, 500, "the handler produced no response");
      const Headers none;
      co_await writer.send(500, content_type, std::move(body), none);
    }
    // A handler that returns without ending its stream aborted the response: the connection is
    // closed without the last chunk, so the client sees a truncated body, not a clean end.
    w.active.fetch_sub(1);
    if (stopping.load() && active() == 0) {
      MutexLock lock(mu);  // the waiter in stop() cannot miss it between test and wait
      cv.notify_all();
    }
    state.served = true;
    if (!req.keep_alive || writer.failed() || watch->gone ||
        (writer.streaming() && !writer.ended()))
      break;
  }
  w.sessions.erase(&state);
  boost::system::error_code ignored;
  socket.shutdown(tcp::socket::shutdown_both, ignored);
  socket.close(ignored);
  w.live.fetch_sub(1);
}

void Server::Impl::sweep(Worker& w) {
  w.sweeps = sweep_number(w.sweeps, w.epoch, w.tick);
  for (auto* s : w.sessions) {
    if (w.sweeps >= s->deadline) {
      // Past its timeout: closed, not cancelled (a cancel misses an operation whose completion is
      // already queued, and the composed read or write would go on without a deadline).
      s->deadline = kNoDeadline;
      s->timed_out = true;
      boost::system::error_code ignored;
      s->socket->close(ignored);
    }
    if (s->watch && !s->watching && w.sweeps >= s->watch_at) {
      s->watching = true;
      start_gone_watch(*s->socket, s->watch);
    } else if (s->watch && s->watching && s->watch->bytes_seen && !s->watch->gone &&
               !s->watch->done && peer_closed(s->socket->native_handle())) {
      s->watch->mark_gone();
    }
  }
  w.sweep->expires_after(w.tick);
  w.sweep->async_wait([this, &w](boost::system::error_code ec) {
    if (!ec) sweep(w);  // also while draining: timeouts hold until the threads stop
  });
}

Server::Server(ServerOptions options, Handler handler) : impl_(std::make_unique<Impl>()) {
  impl_->opts = std::move(options);
  impl_->handler = std::move(handler);
  if (impl_->opts.threads < 1) impl_->opts.threads = 1;
  for (int i = 0; i < impl_->opts.threads; ++i) {
    auto w = std::make_unique<Worker>();
    w->index = i;
    w->error_body = impl_->opts.error_body;
    impl_->workers.push_back(std::move(w));
  }
}

Server::~Server() { stop(std::chrono::milliseconds(0)); }

Result<std::uint16_t> Server::start() {
  boost::system::error_code ec;
  auto addr = net::ip::make_address(impl_->opts.address, ec);
  if (ec) return fail(Error::invalid("invalid listen address '" + impl_->opts.address + "'"));
  std::uint16_t port = impl_->opts.port;
  impl_->protocol = tcp::endpoint(addr, port).protocol();
  for (auto& w : impl_->workers) {
    Acceptor acc(w->ioc.get_executor());
    tcp::endpoint ep(addr, port);
    acc.open(ep.protocol(), ec);
    if (!ec) acc.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) {
      int one = 1;
      if (::setsockopt(acc.native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
        ec = boost::system::error_code(errno, boost::system::system_category());
      }
    }
    if (!ec) acc.bind(ep, ec);
    if (!ec) acc.listen(net::socket_base::max_listen_connections, ec);
    if (ec) {
      return fail(Error::io(
          fmt::format("cannot listen on {}:{}: {}", impl_->opts.address, port, ec.message())));
    }
    port = acc.local_endpoint().port();
    w->acceptor.emplace(std::move(acc));
  }
  impl_->port = port;
  for (auto& w : impl_->workers) {
    Worker* wp = w.get();
    net::co_spawn(wp->ioc, impl_->accept_loop(*wp), net::detached);
    wp->tick = std::clamp(impl_->opts.gone_watch_delay, std::chrono::milliseconds(5),
                          std::chrono::milliseconds(50));
    wp->sweep.emplace(wp->ioc);
    wp->epoch = coarse_now();
    net::post(wp->ioc, [this, wp] { impl_->sweep(*wp); });
    wp->thread = std::thread([wp] {
      t_worker = wp->index;
      auto guard = net::make_work_guard(wp->ioc);
      wp->ioc.run();
    });
  }
  return port;
}

void Server::stop(std::chrono::milliseconds deadline, const std::function<void()>& on_deadline) {
  if (impl_->stopped.exchange(true)) return;
  impl_->stopping.store(true);
  // Close acceptors and idle connections on their own threads, and wait for it (bounded: a
  // stop() called on a worker thread would otherwise wait for itself), so the peers of idle
  // keep-alive connections see them close before the threads stop.
  auto closing = std::make_shared<std::atomic<std::size_t>>(impl_->workers.size());
  for (auto& w : impl_->workers) {
    Worker* wp = w.get();
    net::post(wp->ioc, [wp, closing, im = impl_.get()] {
      boost::system::error_code ignored;
      if (wp->acceptor) wp->acceptor->close(ignored);
      for (auto* s : wp->sessions) {
        if (!s->busy) s->socket->close(ignored);
      }
      MutexLock lock(im->mu);
      closing->fetch_sub(1);
      im->cv.notify_all();
    });
  }
  {
    using std::chrono::steady_clock;
    MutexLock lock(impl_->mu);
    impl_->wait_until(steady_clock::now() + std::chrono::seconds(1),
                      [&] { return closing->load() == 0; });
    const auto idle = [&] { return impl_->active() == 0; };
    if (!impl_->wait_until(steady_clock::now() + deadline, idle) && on_deadline) {
      lock.unlock();
      on_deadline();
      lock.lock();
      impl_->wait_until(steady_clock::now() + std::chrono::seconds(1), idle);
    }
  }
  for (auto& w : impl_->workers) w->ioc.stop();
  for (auto& w : impl_->workers) {
    if (w->thread.joinable()) w->thread.join();
  }
  impl_->cv.notify_all();
}

void Server::wait() {
  MutexLock lock(impl_->mu);
  while (!(impl_->stopped.load() && impl_->workers.front()->ioc.stopped()))
    impl_->cv.wait(impl_->mu);
}

std::uint16_t Server::port() const { return impl_->port; }
std::size_t Server::connections() const { return impl_->live(); }
std::uint64_t Server::idle_evictions() const { return impl_->evictions.load(); }
std::uint64_t Server::tls_handshake_failures() const { return impl_->tls_failures.load(); }
std::size_t Server::active_requests() const { return impl_->active(); }
Executor Server::executor(int i) const {
  return impl_->workers.at(static_cast<std::size_t>(i))->ioc.get_executor();
}
int Server::threads() const { return static_cast<int>(impl_->workers.size()); }

}  // namespace kvroute::http
