#include "http/client.h"

#include <fmt/format.h>

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <charconv>
#include <limits>
#include <unordered_map>
#include <vector>

#include "http/internal/deadline.h"
#include "http/internal/in_buffer.h"
#include "http/internal/parser.h"
#include "http/internal/socket_io.h"
#include "http/internal/stream.h"
#include "tls/tls.h"

namespace kvroute::http {

using namespace std::string_view_literals;

using tcp = net::ip::tcp;
constexpr auto kTuple = use_task_tuple;

std::string_view to_string(UpstreamError e) {
  switch (e) {
    case UpstreamError::kConnect:
      return "connect";
    case UpstreamError::kReset:
      return "reset";
    case UpstreamError::kTimeout:
      return "timeout";
    case UpstreamError::kProtocol:
      return "protocol";
    case UpstreamError::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

namespace {
// The client went away: closing the socket aborts whatever the exchange is waiting for.
void close_on_cancel(CancelToken* cancel, Socket& socket) {
  if (!cancel) return;
  cancel->hook = [s = &socket] {
    boost::system::error_code ignored;
    s->close(ignored);
  };
}

bool hop_by_hop(std::string_view name) {
  // Headers the client sets itself or that describe the client's connection; their lengths tell
  // them apart before any comparison.
  switch (name.size()) {
    case 2:
      return iequals_lower(name, "te");
    case 4:
      return iequals_lower(name, "host");
    case 6:
      return iequals_lower(name, "expect");
    case 7:
      return iequals_lower(name, "upgrade");
    case 10:
      return iequals_lower(name, "connection") || iequals_lower(name, "keep-alive");
    case 14:
      return iequals_lower(name, "content-length");
    case 16:
      return iequals_lower(name, "proxy-connection");
    case 17:
      return iequals_lower(name, "transfer-encoding");
    case 19:
      return iequals_lower(name, "proxy-authorization");
    default:
      return false;
  }
}
}  // namespace

struct ConnectionPool::Deadlines {
  explicit Deadlines(Executor ex) : timer(ex) {}
  // The connections with a deadline, each knowing its index here: arming and disarming, once or
  // twice per request, allocate nothing.
  std::vector<Conn*> armed;
  void add(Conn& c);
  void remove(Conn& c);
  // Sweeps so far: deadlines count sweeps (no clock read to set one; a late sweep delays a timeout,
  // never fires it early).
  std::uint64_t sweeps = 0;
  std::chrono::steady_clock::time_point epoch = coarse_now();  // sweep numbers count ticks from it
  bool sweeping = false;
  bool alive = true;  // false once the pool is gone
  net::steady_timer timer;
};

constexpr std::chrono::milliseconds kTick{50};
constexpr std::size_t kHeadReadSize = 4096;
constexpr std::size_t kBodyReadSize = 16384;

constexpr std::size_t kNotArmed = ~std::size_t{0};

struct ConnectionPool::Conn {
  Conn(Executor ex, std::shared_ptr<Deadlines> d)
      : stream(Socket(ex)), socket(stream.socket()), deadlines(std::move(d)) {}
  ~Conn() { disarm(*this); }
  Stream stream;   // the socket, with TLS on it for https engines
  Socket& socket;  // stream's
  InBuffer in;     // response bytes not yet parsed; empty whenever the connection is idle
  std::chrono::steady_clock::time_point idle_since;
  std::shared_ptr<Deadlines> deadlines;
  std::uint64_t deadline = kNoDeadline;
  std::size_t armed_at = kNotArmed;  // index in deadlines->armed
  bool timed_out = false;            // closed by the sweep: never reused
  bool drained = false;  // the last read left the receive queue empty (http/internal/socket_io.h)
};

void ConnectionPool::arm(Conn& c, std::chrono::milliseconds d) {
  auto& dl = *deadlines_;
  if (!dl.sweeping) {
    dl.sweeping = true;
    dl.sweeps = sweep_number(dl.sweeps, dl.epoch, kTick);  // the count stood still while idle
    dl.timer.expires_after(kTick);
    dl.timer.async_wait([all = deadlines_](boost::system::error_code ec) {
      if (!ec) sweep(all);
    });
  }
  c.deadline = deadline_after(dl.sweeps, d, kTick);
  if (c.armed_at == kNotArmed) dl.add(c);
}

void ConnectionPool::disarm(Conn& c) {
  if (c.deadline == kNoDeadline) return;
  c.deadline = kNoDeadline;
  c.deadlines->remove(c);
}

void ConnectionPool::Deadlines::add(Conn& c) {
  c.armed_at = armed.size();
  armed.push_back(&c);
}

void ConnectionPool::Deadlines::remove(Conn& c) {
  Conn* last = armed.back();
  armed[c.armed_at] = last;
  last->armed_at = c.armed_at;
  armed.pop_back();
  c.armed_at = kNotArmed;
}

void ConnectionPool::sweep(const std::shared_ptr<Deadlines>& d) {
  if (!d->alive) return;
  d->sweeps = sweep_number(d->sweeps, d->epoch, kTick);
  for (std::size_t i = 0; i < d->armed.size();) {
    Conn* c = d->armed[i];
    if (d->sweeps >= c->deadline) {
      // Past its timeout: closing completes the pending operation with operation_aborted (its
      // handler runs later, never inside this loop). The last entry moves to index i.
      c->deadline = kNoDeadline;
      c->timed_out = true;
      boost::system::error_code ignored;
      c->socket.close(ignored);
      d->remove(*c);
    } else {
      ++i;
    }
  }
  if (d->armed.empty()) {
    d->sweeping = false;  // the next arm() restarts it; an idle pool keeps no timer pending
    return;
  }
  d->timer.expires_after(kTick);
  d->timer.async_wait([d](boost::system::error_code ec) {
    if (!ec) sweep(d);
  });
}

struct ConnectionPool::Slot {
  std::string key;  // "host:port": the Host header's value, and the endpoint's name in errors
  std::vector<std::unique_ptr<Conn>> idle;
  std::vector<tcp::endpoint> resolved;
};

struct ConnectionPool::Idle {
  struct Hash {
    std::size_t operator()(const Endpoint& e) const {
      return std::hash<std::string_view>()(e.host) * 31 + e.port;
    }
  };
  std::unordered_map<Endpoint, std::unique_ptr<Slot>, Hash> slots;
  std::size_t count = 0;
};

struct Exchange::Impl {
  ConnectionPool* pool = nullptr;
  ConnectionPool::Slot* slot = nullptr;
  std::unique_ptr<ConnectionPool::Conn> conn;
  ResponseHead head;
  BodyFraming framing;
  std::uint64_t remaining = 0;  // Content-Length bytes still to come
  ChunkedDecoder chunked;
  std::string piece;  // de-chunked data returned by the last read_some()
  bool cancelled = false;
  bool finished = false;
  std::chrono::milliseconds idle_timeout{0};

  // The exchange is over and its connection is not reused: closed, not pooled.
  void close() {
    finished = true;
    conn.reset();
  }
  // The body is complete: the connection goes back to the pool when it may be reused.
  void finish() {
    // A TLS connection with bytes left in its TLS layer is not idle either.
    if (conn && head.keep_alive && conn->in.size() == 0 &&
        (!conn->stream.secure() || SSL_has_pending(conn->stream.ssl()) == 0))
      pool->release(std::move(conn), *slot);
    close();
  }
};

Exchange::Exchange(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Exchange::~Exchange() = default;
Exchange::Exchange(Exchange&&) noexcept = default;
Exchange& Exchange::operator=(Exchange&&) noexcept = default;
int Exchange::status() const { return impl_->head.status; }
const Headers& Exchange::headers() const { return impl_->head.headers; }

void Exchange::cancel() {
  if (!impl_ || impl_->cancelled) return;
  impl_->cancelled = true;
  if (impl_->conn) {
    boost::system::error_code ignored;
    impl_->conn->socket.cancel(ignored);
    impl_->conn->socket.close(ignored);
  }
}

Task<Expected<std::string_view, UpstreamFailure>> Exchange::read_some() {
  auto& im = *impl_;
  for (;;) {
    if (im.cancelled)
      co_return make_unexpected(UpstreamFailure{UpstreamError::kCancelled, "cancelled"});
    if (im.finished) co_return std::string_view{};
    auto& in = im.conn->in;
    if (im.framing.chunked) {
      if (in.size() > 0) {
        im.piece.clear();
        auto r = im.chunked.feed(in.view(), im.piece, std::numeric_limits<std::size_t>::max());
        in.consume(r.consumed);
        if (r.status == ParseStatus::kDone) {
          im.finish();
          co_return std::string_view(im.piece);  // empty: the end
        }
        if (r.status != ParseStatus::kIncomplete) {
          im.close();
          co_return make_unexpected(UpstreamFailure{
              UpstreamError::kProtocol, "bad chunked body from upstream: " + std::string(r.error)});
        }
        if (!im.piece.empty()) co_return std::string_view(im.piece);
      }
    } else if (!im.framing.until_close && im.remaining == 0) {
      im.finish();
      co_return std::string_view{};
    } else if (in.size() > 0) {
      // Straight from the connection's buffer: valid until the next call.
      std::string_view v = in.view();
      if (!im.framing.until_close && v.size() > im.remaining)
        v = v.substr(0, static_cast<std::size_t>(im.remaining));
      in.consume(v.size());
      if (!im.framing.until_close) im.remaining -= v.size();
      co_return v;
    }
    im.pool->arm(*im.conn, im.idle_timeout);
    auto [ec, n] = co_await im.conn->stream.read_more(in.prepare(kBodyReadSize), im.conn->drained);
    ConnectionPool::disarm(*im.conn);
    if (im.cancelled)
      co_return make_unexpected(UpstreamFailure{UpstreamError::kCancelled, "cancelled"});
    if (ec == net::error::eof && im.framing.until_close) {
      im.close();
      co_return std::string_view{};
    }
    if (ec) {
      const bool timed_out = im.conn->timed_out;
      im.close();
      if (timed_out) {
        co_return make_unexpected(UpstreamFailure{UpstreamError::kTimeout, "upstream went silent"});
      }
      if (ec == net::error::operation_aborted) {
        co_return make_unexpected(UpstreamFailure{UpstreamError::kCancelled, "cancelled"});
      }
      co_return make_unexpected(
          UpstreamFailure{UpstreamError::kReset, "upstream broke mid-response: " + ec.message()});
    }
    in.commit(n);
  }
}

Task<Expected<std::string, UpstreamFailure>> Exchange::read_all(std::size_t limit) {
  std::string out;
  for (;;) {
    auto piece = co_await read_some();
    if (!piece) co_return make_unexpected(piece.error());
    if (piece->empty()) co_return out;
    if (out.size() + piece->size() > limit) {
      cancel();
      co_return make_unexpected(
          UpstreamFailure{UpstreamError::kProtocol, "upstream body over the limit"});
    }
    out.append(*piece);
  }
}

ConnectionPool::ConnectionPool(Executor ex, ClientOptions opts)
    : ex_(std::move(ex)),
      opts_(opts),
      idle_(std::make_unique<Idle>()),
      deadlines_(std::make_shared<Deadlines>(ex_)) {}
ConnectionPool::~ConnectionPool() {
  deadlines_->alive = false;
  deadlines_->timer.cancel();
}

std::size_t ConnectionPool::idle_connections() const { return idle_->count; }

ConnectionPool::Slot& ConnectionPool::slot(const Endpoint& ep) {
  auto& s = idle_->slots[ep];
  if (!s) {
    s = std::make_unique<Slot>();
    // An IPv6 literal goes in brackets (RFC 9110 section 7.2), without a zone ("%eth0").
    const bool v6 = ep.host.find(':') != std::string::npos;
    s->key =
        v6 ? fmt::format("[{}]:{}", std::string_view(ep.host).substr(0, ep.host.find('%')), ep.port)
           : fmt::format("{}:{}", ep.host, ep.port);
  }
  return *s;
}

void ConnectionPool::release(std::unique_ptr<Conn> c, Slot& s) {
  auto& v = s.idle;
  if (v.size() >= opts_.max_idle_per_endpoint) return;  // closes c
  c->idle_since = coarse_now();
  disarm(*c);
  Conn* conn = c.get();
  v.push_back(std::move(c));
  ++idle_->count;
  watch_idle(*conn, s);
}

// An idle connection must be known dead before it is used: a peer that closes it (an engine that
// stops or restarts) or writes to it makes it readable, and the connection leaves the pool then, as
// nginx's upstream keepalive does. The wait is queued on the socket, so it costs no system call
// (the descriptor is registered for reads already); taking the connection cancels it.
void ConnectionPool::watch_idle(Conn& c, Slot& s) {
  c.socket.async_wait(tcp::socket::wait_read,
                      [this, d = c.deadlines, conn = &c, slot = &s](boost::system::error_code ec) {
                        if (ec || !d->alive)
                          return;  // taken for a request (cancelled), closed, or the pool is gone
                        auto& idle = slot->idle;
                        for (std::size_t i = 0; i < idle.size(); ++i) {
                          if (idle[i].get() != conn) continue;
                          idle.erase(idle.begin() + static_cast<std::ptrdiff_t>(i));
                          --idle_->count;
                          return;
                        }
                      });
}

void ConnectionPool::drop_idle(Slot& s) {
  idle_->count -= s.idle.size();
  s.idle.clear();  // closing a socket cancels its watch
}

void ConnectionPool::drop_idle(const Endpoint& ep) {
  if (auto it = idle_->slots.find(ep); it != idle_->slots.end()) drop_idle(*it->second);
}

void ConnectionPool::close_idle() {
  for (auto& [ep, s] : idle_->slots) drop_idle(*s);
}

Task<Expected<Exchange, UpstreamFailure>> ConnectionPool::start(
    const Endpoint& ep, std::string_view method, std::string_view target, const Headers& headers,
    std::string_view body, CancelToken* cancel, std::string_view client_address, bool client_tls) {
  return start_with(ep, method, target, headers, body, opts_.first_byte_timeout, opts_.idle_timeout,
                    cancel, client_address, client_tls);
}

Task<Expected<Exchange, UpstreamFailure>> ConnectionPool::start_with(
    const Endpoint& ep, std::string_view method, std::string_view target, const Headers& headers,
    std::string_view body, std::chrono::milliseconds first_byte_timeout,
    std::chrono::milliseconds idle_timeout, CancelToken* cancel, std::string_view client_address,
    bool client_tls) {
  struct HookReset {
    CancelToken* t;
    ~HookReset() {
      if (t) t->hook = nullptr;
    }
  } hook_reset{cancel};
  const UpstreamFailure cancelled{UpstreamError::kCancelled, "cancelled by the client"};
  HeadBuffer head;
  head += method;
  head += ' ';
  head += target;
  Slot& sl = slot(ep);
  const std::string& key = sl.key;
  head += " HTTP/1.1\r\nHost: "sv;
  head += key;
  head += "\r\n"sv;
  // Fields the client's Connection header names describe its connection too (RFC 9110 section
  // 7.6.1); "keep-alive" and "close" name none, and every Connection field counts (it may repeat).
  bool nominates = false;
  for (const auto& [k, v] : headers) {
    if (iequals_lower(k, "connection") && !iequals_lower(v, "keep-alive") &&
        !iequals_lower(v, "close"))
      nominates = true;
  }
  const auto nominated = [&headers](std::string_view name) {
    for (const auto& [k, v] : headers) {
      if (iequals_lower(k, "connection") && header_list_has(v, name)) return true;
    }
    return false;
  };
  // The client's own X-Forwarded-For and Forwarded values are kept, with its address appended.
  std::string_view xff, fwd;
  for (const auto& [k, v] : headers) {
    if (hop_by_hop(k) || (nominates && nominated(k))) continue;
    if (!client_address.empty()) {
      if (k.size() == 15 && iequals_lower(k, "x-forwarded-for")) {
        xff = v;  // a repeated field: the last one (list fields rarely repeat here)
        continue;
      }
      if (k.size() == 9 && iequals_lower(k, "forwarded")) {
        fwd = v;
        continue;
      }
    }
    head += k;
    head += ": "sv;
    head += v;
    head += "\r\n"sv;
  }
  if (!client_address.empty()) {
    head += "X-Forwarded-For: "sv;
    if (!xff.empty()) {
      head += xff;
      head += ", "sv;
    }
    head += client_address;
    head += "\r\nForwarded: "sv;
    if (!fwd.empty()) {
      head += fwd;
      head += ", "sv;
    }
    // RFC 7239 section 6: an IPv6 address is quoted and bracketed.
    const bool v6 = client_address.find(':') != std::string_view::npos;
    head += v6 ? "for=\"["sv : "for="sv;
    head += client_address;
    head += v6 ? "]\""sv : ""sv;
    head += client_tls ? ";proto=https\r\n"sv : ";proto=http\r\n"sv;
  }
  head += "Content-Length: "sv;
  head.append_decimal(body.size());
  head += "\r\n\r\n"sv;

  const auto now = coarse_now();
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::unique_ptr<Conn> conn;
    bool reused = false;
    // Take the most recently used idle connection that is still fresh.
    auto& idle = sl.idle;
    while (!idle.empty()) {
      auto c = std::move(idle.back());
      idle.pop_back();
      --idle_->count;
      if (now - c->idle_since < opts_.pool_idle_ttl && c->socket.is_open()) {
        boost::system::error_code ignored;
        c->socket.cancel(ignored);  // ends its idle watch
        conn = std::move(c);
        reused = true;
        break;
      }
    }
    if (cancel && cancel->cancelled) co_return make_unexpected(cancelled);
    if (!conn) {
      auto& eps = sl.resolved;
      if (eps.empty()) {
        boost::system::error_code ec;
        auto addr = net::ip::make_address(ep.host, ec);
        if (!ec) {
          eps.emplace_back(addr, ep.port);
        } else {
          tcp::resolver resolver(ex_);
          auto [rec, results] =
              co_await resolver.async_resolve(ep.host, std::to_string(ep.port), kTuple);
          if (rec) {
            co_return make_unexpected(
                UpstreamFailure{UpstreamError::kConnect,
                                fmt::format("cannot resolve {}: {}", ep.host, rec.message())});
          }
          for (const auto& r : results) eps.push_back(r.endpoint());
        }
      }
      conn = std::make_unique<Conn>(ex_, deadlines_);
      close_on_cancel(cancel, conn->socket);
      arm(*conn, std::min(opts_.connect_timeout, first_byte_timeout));
      auto [cec, cep] = co_await net::async_connect(conn->socket, eps, kTuple);
      disarm(*conn);
      if (cec) {
        if (conn->timed_out) cec = net::error::timed_out;
        co_return make_unexpected(UpstreamFailure{
            UpstreamError::kConnect, fmt::format("connect to {} failed: {}", key, cec.message())});
      }
      boost::system::error_code ignored;
      conn->socket.set_option(tcp::no_delay(true), ignored);
      enable_inq(conn->socket.native_handle());
      if (ep.tls) {
        if (!opts_.tls) {
          co_return make_unexpected(UpstreamFailure{
              UpstreamError::kConnect, fmt::format("{}: https needs a TLS client context", key)});
        }
        Status prepared;
        arm(*conn, std::min(opts_.connect_timeout, first_byte_timeout));
        // Named locals: GCC 12 mishandles some temporaries inside co_await.
        std::shared_ptr<net::ssl::context> ctx = opts_.tls;
        const auto prepare = [&](SSL* ssl) {
          prepared = tls::prepare_client(ssl, ep.host, opts_.tls_verify);
        };
        const auto hec =
            co_await conn->stream.handshake(std::move(ctx), net::ssl::stream_base::client, prepare);
        disarm(*conn);
        if (!prepared) {
          co_return make_unexpected(
              UpstreamFailure{UpstreamError::kConnect,
                              fmt::format("TLS to {}: {}", key, prepared.error().message)});
        }
        if (hec) {
          std::string why = conn->timed_out ? "timed out" : hec.message();
          if (const long v = SSL_get_verify_result(conn->stream.ssl()); v != X509_V_OK)
            why = X509_verify_cert_error_string(v);
          co_return make_unexpected(UpstreamFailure{
              UpstreamError::kConnect, fmt::format("TLS handshake with {} failed: {}", key, why)});
        }
      }
    } else {
      close_on_cancel(cancel, conn->socket);
    }
    arm(*conn, first_byte_timeout);
    std::array<net::const_buffer, 2> bufs{net::buffer(head.view()),
                                          net::buffer(body.data(), body.size())};
    GatherBuffers pending(bufs);
    boost::system::error_code wec;
    if (!conn->stream.write_now(pending, wec)) {
      auto [ec, n] = co_await conn->stream.write_all(pending);
      wec = ec;
    }
    auto impl = std::make_unique<Exchange::Impl>();
    // The response head; informational (1xx) responses before it are skipped.
    ParseResult parsed;
    bool received = false;
    std::size_t searched = 0;
    auto& in = conn->in;
    while (!wec) {
      parsed = parse_response_head(in.view(), opts_.max_response_header_bytes, impl->head,
                                   impl->framing, searched);
      if (parsed.status == ParseStatus::kDone && impl->head.status < 200 &&
          impl->head.status != 101) {
        in.consume(parsed.consumed);
        searched = 0;
        continue;
      }
      if (parsed.status != ParseStatus::kIncomplete) break;
      searched = in.size();
      // The first read after the request may wait for the response without trying first; later
      // ones are in the middle of it (http/internal/socket_io.h).
      std::tuple<boost::system::error_code, std::size_t> got;
      if (!received && searched == 0) {
        if (conn->stream.secure()) {
          got = co_await conn->stream.tls_read_some(in.prepare(kHeadReadSize));
        } else {
          got = co_await conn->socket.async_read_some(
              drain_aware(in.prepare(kHeadReadSize), &conn->drained), kTuple);
        }
      } else {
        got = co_await conn->stream.read_more(in.prepare(kHeadReadSize), conn->drained);
      }
      auto [rec, n] = got;
      if (rec) {
        wec = rec;
        break;
      }
      received = true;
      in.commit(n);
    }
    disarm(*conn);
    if (cancel && cancel->cancelled) co_return make_unexpected(cancelled);
    if (wec) {
      if (conn->timed_out) {
        co_return make_unexpected(UpstreamFailure{UpstreamError::kTimeout,
                                                  fmt::format("no response from {} in time", key)});
      }
      if (!received && reused) {
        // A stale keep-alive connection (its peer's close crossed our request): the others idle
        // to this endpoint are likely stale too. Drop them and try a fresh connection.
        drop_idle(sl);
        continue;
      }
      co_return make_unexpected(UpstreamFailure{
          UpstreamError::kReset, fmt::format("{} closed the connection: {}", key, wec.message())});
    }
    if (parsed.status != ParseStatus::kDone) {
      co_return make_unexpected(UpstreamFailure{
          UpstreamError::kProtocol, fmt::format("bad response from {}: {}", key, parsed.error)});
    }
    in.consume(parsed.consumed);
    impl->pool = this;
    impl->slot = &sl;
    impl->idle_timeout = idle_timeout;
    impl->remaining = impl->framing.length;
    impl->conn = std::move(conn);
    co_return Exchange(std::move(impl));
  }
  co_return make_unexpected(
      UpstreamFailure{UpstreamError::kReset, "upstream closed the connection"});
}

Task<Expected<std::pair<int, std::string>, UpstreamFailure>> ConnectionPool::get(
    const Endpoint& ep, std::string_view target, std::chrono::milliseconds timeout,
    std::size_t limit) {
  const Headers none;
  auto ex = co_await start_with(ep, "GET", target, none, {}, timeout, timeout, nullptr);
  if (!ex) co_return make_unexpected(ex.error());
  auto body = co_await ex->read_all(limit);
  if (!body) co_return make_unexpected(body.error());
  co_return std::pair<int, std::string>(ex->status(), std::move(*body));
}

}  // namespace kvroute::http
