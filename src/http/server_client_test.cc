#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "http/client.h"
#include "http/server.h"
#include "testing/raw_http.h"
#include "testing/wait.h"

namespace kvroute::http {
namespace {

// Runs `fn(pool)` as a coroutine on a private io_context and returns its result.
template <typename F>
auto run_client(F fn) {
  net::io_context ioc;
  ConnectionPool pool(ioc.get_executor(), ClientOptions{});
  // The pool's idle connections stay watched until closed: close them when `fn` is done.
  auto body = [&]() -> decltype(fn(pool)) {
    auto r = co_await fn(pool);
    pool.close_idle();
    co_return r;
  };
  auto fut = net::co_spawn(ioc, body(), net::use_future);
  ioc.run();
  return fut.get();
}

ServerOptions local_options() {
  ServerOptions o;
  o.address = "127.0.0.1";
  o.port = 0;
  o.threads = 2;
  // The server's own errors go through the front door's formatter (openai::error_body in kvroute):
  // this one makes them recognizable.
  o.error_body = [](int status, std::string_view message) {
    return "{\"error\":{\"message\":\"" + std::string(message) +
           "\",\"code\":" + std::to_string(status) + "}}";
  };
  return o;
}

TEST(Server, ServesAndReusesKeepAliveConnections) {
  std::atomic<int> calls{0};
  Server server(local_options(), [&](Request& req, ResponseWriter& w) -> Task<void> {
    ++calls;
    std::string body = req.method + " " + req.target + " " + req.body;
    const Headers none;
    co_await w.send(200, "text/plain", std::move(body), none);
  });
  auto port = server.start();
  ASSERT_TRUE(port.has_value());
  Endpoint ep{"127.0.0.1", *port};
  auto out = run_client([&](ConnectionPool& pool) -> Task<std::string> {
    std::string all;
    for (int i = 0; i < 3; ++i) {
      const std::string target = "/x?i=" + std::to_string(i);
      const Headers none;
      auto ex = co_await pool.start(ep, "POST", target, none, "body");
      EXPECT_TRUE(ex.has_value());
      if (!ex) co_return all;
      auto b = co_await ex->read_all(1 << 20);
      all += *b + "|";
    }
    EXPECT_EQ(pool.idle_connections(), 1u);  // one connection served all three
    co_return all;
  });
  EXPECT_EQ(out, "POST /x?i=0 body|POST /x?i=1 body|POST /x?i=2 body|");
  EXPECT_EQ(calls.load(), 3);
  server.stop(std::chrono::milliseconds(1000));
}

// Connections held open are spread evenly over the workers, whatever SO_REUSEPORT's hash chose:
// each worker answers with its index, and the counts differ by at most one.
TEST(Server, BalancesConnectionsOverWorkers) {
  ServerOptions o = local_options();
  o.threads = 3;
  Server server(o, [](Request&, ResponseWriter& w) -> Task<void> {
    const Headers none;
    co_await w.send(200, "text/plain", std::to_string(current_worker()), none);
  });
  const auto port = server.start();
  ASSERT_TRUE(port.has_value());
  std::vector<int> fds;
  std::map<std::string, int> per_worker;
  for (int i = 0; i < 30; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(*port);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    fds.push_back(fd);
    const std::string req = "GET /w HTTP/1.1\r\nHost: x\r\n\r\n";
    ASSERT_EQ(::send(fd, req.data(), req.size(), 0), static_cast<ssize_t>(req.size()));
    std::string got;
    char buf[1024];
    while (got.find("\r\n\r\n") == std::string::npos || got.back() == '\n') {
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      ASSERT_GT(n, 0);
      got.append(buf, static_cast<std::size_t>(n));
    }
    ++per_worker[got.substr(got.find("\r\n\r\n") + 4)];  // the body: one digit
  }
  ASSERT_EQ(per_worker.size(), 3u);
  int lo = 1000, hi = 0;
  for (const auto& [worker, n] : per_worker) {
    lo = std::min(lo, n);
    hi = std::max(hi, n);
  }
  EXPECT_LE(hi - lo, 1) << per_worker.begin()->second;
  EXPECT_EQ(server.connections(), 30u);
  for (int fd : fds) ::close(fd);
  server.stop(std::chrono::milliseconds(0));
}

namespace {
int connect_loopback(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}
// Sends one GET and reads until the response's (short) body; "" when the server closed instead.
std::string get_on(int fd) {
  const std::string req = "GET /w HTTP/1.1\r\nHost: x\r\n\r\n";
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size()))
    return "";
  std::string got;
  char buf[1024];
  while (got.find("\r\n\r\nok") == std::string::npos) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return "";
    got.append(buf, static_cast<std::size_t>(n));
  }
  return got;
}
bool closed_by_peer(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 2000) != 1) return false;
  char c;
  return ::recv(fd, &c, 1, 0) == 0;
}
}  // namespace

// At max_connections a new client is served: an idle keep-alive connection is closed to make room
// (a few hundred idle connections must not lock everyone out). Busy connections are never closed.
TEST(Server, IdleKeepAliveConnectionsMakeRoomAtTheLimit) {
  ServerOptions o = local_options();
  o.threads = 1;
  o.max_connections = 3;
  Server server(o, [](Request&, ResponseWriter& w) -> Task<void> {
    const Headers none;
    co_await w.send(200, "text/plain", std::string("ok"), none);
  });
  const auto port = server.start();
  ASSERT_TRUE(port.has_value());
  std::vector<int> idle;
  for (int i = 0; i < 3; ++i) {
    idle.push_back(connect_loopback(*port));
    ASSERT_NE(get_on(idle.back()), "");
  }
  const int fresh = connect_loopback(*port);
  ASSERT_GE(fresh, 0);
  EXPECT_NE(get_on(fresh), "") << "the fourth client was locked out";
  EXPECT_EQ(server.idle_evictions(), 1u);
  int closed = 0;
  for (int fd : idle) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 0) == 1 && closed_by_peer(fd)) ++closed;
  }
  EXPECT_EQ(closed, 1);
  // Connections that have not sent a request yet are not idle keep-alive ones: at the limit with
  // none to spare, the newcomer is the one refused.
  for (int fd : idle) ::close(fd);
  ::close(fresh);
  EXPECT_TRUE(testing::wait_until([&] { return server.connections() == 0; },
                                  std::chrono::milliseconds(1000)));
  std::vector<int> waiting;
  for (int i = 0; i < 3; ++i) waiting.push_back(connect_loopback(*port));
  EXPECT_TRUE(testing::wait_until([&] { return server.connections() == 3; },
                                  std::chrono::milliseconds(1000)));
  const int refused = connect_loopback(*port);
  EXPECT_TRUE(closed_by_peer(refused));
  EXPECT_EQ(server.idle_evictions(), 1u);
  ::close(refused);
  for (int fd : waiting) ::close(fd);
  server.stop(std::chrono::milliseconds(0));
}

TEST(Server, StreamsChunksAsTheyAreWritten) {
  Server server(local_options(), [](Request&, ResponseWriter& w) -> Task<void> {
    co_await w.start_stream(200, "text/event-stream");
    for (int i = 0; i < 5; ++i) {
      const std::string chunk = "data: " + std::to_string(i) + "\n\n";
      co_await w.write_chunk(chunk);
      net::steady_timer t(co_await net::this_coro::executor, std::chrono::milliseconds(5));
      co_await t.async_wait(use_task);
    }
    co_await w.end_stream();
  });
  auto port = server.start();
  ASSERT_TRUE(port);
  Endpoint ep{"127.0.0.1", *port};
  auto pieces = run_client([&](ConnectionPool& pool) -> Task<int> {
    const Headers none;
    auto ex = co_await pool.start(ep, "GET", "/", none, {});
    int n = 0;
    for (;;) {
      auto p = co_await ex->read_some();
      if (!p || p->empty()) break;
      ++n;
    }
    co_return n;
  });
  EXPECT_GE(pieces, 5);  // each event arrived on its own, not buffered into one body
  server.stop(std::chrono::milliseconds(1000));
}

// What the server's own parser makes of real bytes on a socket: chunked bodies, pipelining, a CRLF
// after a body, and each malformed or truncated request answered with its status.
TEST(Server, ParsesRequestsOffTheWire) {
  Server server(local_options(), [](Request& req, ResponseWriter& w) -> Task<void> {
    std::string echo = req.method + " " + req.target + " [" + req.body + "]";
    const Headers none;
    co_await w.send(200, "text/plain", std::move(echo), none);
  });
  auto port = server.start();
  ASSERT_TRUE(port);
  using kvroute::testing::raw_request;
  auto chunked =
      raw_request(*port,
                  "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                  "3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: x\r\n\r\n");
  EXPECT_EQ(chunked.status, 200);
  EXPECT_EQ(chunked.body, "POST /c [abcde]");
  // Two pipelined requests, the first with a stray CRLF after its body: two answers, in order,
  // then the server closes (the second asked it to).
  const std::string piped =
      kvroute::testing::send_then_disconnect(*port,
                                             "POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi\r\n"
                                             "GET /b HTTP/1.1\r\nConnection: close\r\n\r\n",
                                             std::string::npos, std::chrono::seconds(5));
  EXPECT_NE(piped.find("POST /a [hi]"), std::string::npos) << piped;
  EXPECT_NE(piped.find("GET /b []"), std::string::npos) << piped;
  EXPECT_LT(piped.find("POST /a"), piped.find("GET /b"));
  // A HEAD answer has the headers of the body it does not send; the next response follows at once.
  const std::string head = kvroute::testing::send_then_disconnect(
      *port, "HEAD /h HTTP/1.1\r\n\r\nGET /g HTTP/1.1\r\nConnection: close\r\n\r\n",
      std::string::npos, std::chrono::seconds(5));
  EXPECT_NE(head.find("Content-Length: 10\r\n"), std::string::npos) << head;  // "HEAD /h []"
  EXPECT_EQ(head.find("HEAD /h []"), std::string::npos) << head;
  EXPECT_NE(head.find("\r\n\r\nHTTP/1.1 200 OK\r\n"), std::string::npos) << head;
  EXPECT_TRUE(head.ends_with("GET /g []")) << head;
  struct Case {
    const char* raw;
    bool half_close;
    int status;
  };
  for (const auto& c : std::vector<Case>{
           {"GET / HTTP/1.1\r\nHost : x\r\n\r\n", false, 400},
           {"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", false,
            400},
           {"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", false, 501},
           {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", false, 400},
           {"GET / HTTP/1.1\r\nHost: x\r\n", true, 400},                     // head cut short
           {"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", true, 400},  // body cut short
           {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", true, 400},
       }) {
    auto r = raw_request(*port, c.raw, std::chrono::seconds(5), c.half_close);
    EXPECT_EQ(r.status, c.status) << c.raw << "\n" << r.raw;
    EXPECT_NE(r.body.find("\"error\""), std::string::npos) << c.raw;
    EXPECT_NE(r.body.find("\"code\":" + std::to_string(c.status)), std::string::npos) << c.raw;
  }
  server.stop(std::chrono::milliseconds(0));
}

// Without a formatter the server's own errors are the message as plain text.
TEST(Server, OwnErrorsArePlainTextWithoutAFormatter) {
  ServerOptions o = local_options();
  o.error_body = nullptr;
  Server server(o, [](Request&, ResponseWriter& w) -> Task<void> {
    const Headers none;
    co_await w.send(200, "text/plain", std::string("ok"), none);
  });
  auto port = server.start();
  ASSERT_TRUE(port);
  auto r = kvroute::testing::raw_request(*port, "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
                                         std::chrono::seconds(5));
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.raw.find("Content-Type: text/plain\r\n"), std::string::npos) << r.raw;
  EXPECT_TRUE(r.body.starts_with("malformed HTTP request: ")) << r.body;
  server.stop(std::chrono::milliseconds(0));
}

// A client that ends its lines with a bare LF gets a 400 at once and the connection closes; it is
// not left waiting for the request timeout.
TEST(Server, BareLfRequestGetsA400AtOnce) {
  Server server(local_options(), [](Request&, ResponseWriter& w) -> Task<void> {
    const Headers none;
    co_await w.send(200, "text/plain", std::string("ok"), none);
  });
  auto port = server.start();
  ASSERT_TRUE(port);
  for (const char* raw : {"GET / HTTP/1.1\n\n", "GET / HTTP/1.1\nHost: x\r\n\r\n"}) {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = kvroute::testing::raw_request(*port, raw, std::chrono::seconds(3));
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2)) << raw;
    EXPECT_TRUE(r.raw.starts_with("HTTP/1.1 400 ")) << raw << "\n" << r.raw;
    EXPECT_NE(r.head.find("Connection: close"), std::string::npos) << r.raw;
    EXPECT_NE(r.body.find("\"error\""), std::string::npos) << r.raw;
  }
  server.stop(std::chrono::milliseconds(0));
}

// Slow clients (slowloris) cannot hold a connection: a request that does not arrive whole within
// request_timeout, or a keep-alive connection idle past keepalive_timeout, is closed.
TEST(Server, SlowAndIdleClientsAreCutOff) {
  std::atomic<int> calls{0};
  ServerOptions o = local_options();
  o.request_timeout = std::chrono::milliseconds(300);
  o.keepalive_timeout = std::chrono::milliseconds(400);
  Server server(o, [&](Request&, ResponseWriter& w) -> Task<void> {
    ++calls;
    const Headers none;
    co_await w.send(200, "text/plain", std::string("ok"), none);
  });
  auto port = server.start();
  ASSERT_TRUE(port);
  using Clock = std::chrono::steady_clock;
  auto closed_after = [&](std::string_view raw) {
    const auto t0 = Clock::now();
    auto r = kvroute::testing::raw_request(*port, raw, std::chrono::seconds(10));
    EXPECT_EQ(r.status, 0) << r.raw;  // closed without an answer
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
  };
  // Headers that never end.
  auto t = closed_after("POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n");
  EXPECT_GE(t, std::chrono::milliseconds(300));
  EXPECT_LT(t, std::chrono::seconds(3));
  // A body that never arrives whole.
  t = closed_after(
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"a\":");
  EXPECT_GE(t, std::chrono::milliseconds(300));
  EXPECT_LT(t, std::chrono::seconds(3));
  // A connection that never sends a byte.
  t = closed_after("");
  EXPECT_GE(t, std::chrono::milliseconds(400));
  EXPECT_LT(t, std::chrono::seconds(3));
  // Headers dripped a line every 50 ms: each read succeeds, but the whole request does not come
  // within request_timeout.
  {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(*port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    const auto t0 = Clock::now();
    std::string first = "POST /v1/completions HTTP/1.1\r\nHost: x\r\n";
    bool closed = ::send(fd, first.data(), first.size(), MSG_NOSIGNAL) < 0;
    while (!closed && Clock::now() - t0 < std::chrono::seconds(5)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      const std::string line = "X-Drip: 1\r\n";
      if (::send(fd, line.data(), line.size(), MSG_NOSIGNAL) < 0) closed = true;
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 0) > 0) {
        char c;
        if (::recv(fd, &c, 1, MSG_DONTWAIT) <= 0) closed = true;
      }
    }
    const auto took = Clock::now() - t0;
    ::close(fd);
    EXPECT_TRUE(closed);
    EXPECT_GE(took, std::chrono::milliseconds(300));
    EXPECT_LT(took, std::chrono::seconds(3));
  }
  EXPECT_EQ(calls.load(), 0);
  // The session ends right after closing the socket: allow it a moment.
  EXPECT_TRUE(testing::wait_until([&] { return server.connections() == 0; },
                                  std::chrono::milliseconds(1000)));
  EXPECT_EQ(server.connections(), 0u);
  // The server still serves.
  auto ok = kvroute::testing::raw_request(*port,
                                          "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(ok.status, 200);
  EXPECT_EQ(ok.body, "ok");
  server.stop(std::chrono::milliseconds(1000));
}

// The upstream side's timeouts: a response head that does not come within the first-byte timeout,
// and a body that goes silent past the idle timeout, are kTimeout failures, not hangs.
TEST(Client, FirstByteAndIdleTimeouts) {
  Server server(local_options(), [](Request& req, ResponseWriter& w) -> Task<void> {
    auto ex = co_await net::this_coro::executor;
    if (req.target == "/silent-head") {
      net::steady_timer t(ex, std::chrono::seconds(5));
      co_await t.async_wait(use_task_tuple);
      co_return;
    }
    co_await w.start_stream(200, "text/event-stream");
    const std::string first = "data: 1\n\n";
    co_await w.write_chunk(first);
    net::steady_timer t(ex, std::chrono::seconds(5));
    co_await t.async_wait(use_task_tuple);
    co_await w.end_stream();
  });
  auto port = server.start();
  ASSERT_TRUE(port);
  const Endpoint ep{"127.0.0.1", *port};
  using Clock = std::chrono::steady_clock;
  net::io_context ioc;
  ClientOptions co;
  co.first_byte_timeout = std::chrono::milliseconds(500);
  co.idle_timeout = std::chrono::milliseconds(500);
  ConnectionPool pool(ioc.get_executor(), co);
  auto fut = net::co_spawn(
      ioc,
      [&]() -> Task<std::pair<UpstreamError, UpstreamError>> {
        const Headers none;
        auto head = co_await pool.start(ep, "GET", "/silent-head", none, {});
        EXPECT_FALSE(head.has_value());
        const UpstreamError a = head ? UpstreamError::kProtocol : head.error().kind;
        auto ex = co_await pool.start(ep, "GET", "/silent-body", none, {});
        EXPECT_TRUE(ex.has_value());
        if (!ex) co_return std::pair{a, UpstreamError::kProtocol};
        auto piece = co_await ex->read_some();
        EXPECT_TRUE(piece.has_value());
        auto rest = co_await ex->read_some();
        EXPECT_FALSE(rest.has_value());
        co_return std::pair{a, rest ? UpstreamError::kProtocol : rest.error().kind};
      },
      net::use_future);
  const auto t0 = Clock::now();
  ioc.run();
  const auto took = Clock::now() - t0;
  const auto [head_kind, body_kind] = fut.get();
  EXPECT_EQ(head_kind, UpstreamError::kTimeout);
  EXPECT_EQ(body_kind, UpstreamError::kTimeout);
  EXPECT_GE(took, std::chrono::milliseconds(1000));  // never early
  EXPECT_LT(took, std::chrono::seconds(5));
  server.stop(std::chrono::milliseconds(0));
}

// A scripted upstream on a raw socket: each request's target picks the bytes it answers with,
// sent in parts with a pause between them; "/close" closes after answering. Bounded: every
// socket has a 5 s receive timeout and the thread ends when the listener closes.
class ScriptedUpstream {
 public:
  ScriptedUpstream() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
    ::listen(fd_, 16);
    thread_ = std::thread([this] { run(); });
  }
  ~ScriptedUpstream() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }
  std::uint16_t port = 0;
  std::atomic<int> accepted{0};

 private:
  static std::vector<std::string> script(std::string_view target) {
    if (target == "/continue") {
      return {"HTTP/1.1 100 Continue\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel",
              "lo"};
    }
    if (target == "/chunked") {
      return {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n",
              "2\r\nde\r\n0\r\nT: v\r\n\r\n"};
    }
    if (target == "/no-content") return {"HTTP/1.1 204 No Content\r\n\r\n"};
    if (target == "/close")
      return {"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ", "close"};
    if (target == "/bad-chunk")
      return {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"};
    return {"SSH-2.0-OpenSSH_9.2\r\n\r\n"};
  }
  void run() {
    for (;;) {
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      ++accepted;
      timeval tv{5, 0};
      ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      std::string in;
      char buf[4096];
      bool open = true;
      while (open) {
        const auto end = in.find("\r\n\r\n");
        if (end == std::string::npos) {
          const ssize_t n = ::recv(c, buf, sizeof buf, 0);
          if (n <= 0) break;
          in.append(buf, static_cast<std::size_t>(n));
          continue;
        }
        const auto sp1 = in.find(' '), sp2 = in.find(' ', sp1 + 1);
        const std::string target = in.substr(sp1 + 1, sp2 - sp1 - 1);
        in.erase(0, end + 4);  // the client's GETs carry Content-Length: 0
        for (const auto& part : script(target)) {
          ::send(c, part.data(), part.size(), MSG_NOSIGNAL);
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        open = target != "/close";
      }
      ::close(c);
    }
  }
  int fd_ = -1;
  std::thread thread_;
};

TEST(Client, ParsesWhatUpstreamsSend) {
  ScriptedUpstream up;
  const Endpoint ep{"127.0.0.1", up.port};
  struct Got {
    int status = 0;
    std::string body;
    std::optional<UpstreamError> error;
    std::size_t idle_after = 0;
  };
  auto fetch = [&](std::string target) {
    return run_client([&](ConnectionPool& pool) -> Task<std::vector<Got>> {
      std::vector<Got> out;
      // Twice each: the second exchange shows whether the connection went back to the pool.
      for (int i = 0; i < 2; ++i) {
        Got g;
        const Headers none;
        auto ex = co_await pool.start(ep, "GET", target, none, {});
        if (!ex) {
          g.error = ex.error().kind;
        } else {
          g.status = ex->status();
          auto body = co_await ex->read_all(1 << 20);
          if (body)
            g.body = *body;
          else
            g.error = body.error().kind;
        }
        g.idle_after = pool.idle_connections();
        out.push_back(std::move(g));
      }
      co_return out;
    });
  };
  auto got = fetch("/continue");  // a 100 Continue before the response, body split over reads
  for (const auto& g : got) {
    EXPECT_EQ(g.status, 200);
    EXPECT_EQ(g.body, "hello");
    EXPECT_EQ(g.idle_after, 1u);
  }
  got = fetch("/chunked");  // extensions and trailers, a chunk per read
  for (const auto& g : got) {
    EXPECT_EQ(g.body, "abcde");
    EXPECT_EQ(g.idle_after, 1u);
  }
  got = fetch("/no-content");
  EXPECT_EQ(got[1].status, 204);
  EXPECT_EQ(got[1].body, "");
  EXPECT_EQ(got[1].idle_after, 1u);
  const int before = up.accepted.load();
  got = fetch("/close");  // no length: the body ends when the upstream closes; never pooled
  for (const auto& g : got) {
    EXPECT_EQ(g.body, "until close");
    EXPECT_EQ(g.idle_after, 0u);
  }
  EXPECT_EQ(up.accepted.load() - before, 2);
  got = fetch("/bad-chunk");
  EXPECT_EQ(got[0].status, 200);
  EXPECT_EQ(got[0].error, UpstreamError::kProtocol);
  EXPECT_EQ(got[0].idle_after, 0u);
  got = fetch("/ssh");
  EXPECT_EQ(got[0].error, UpstreamError::kProtocol);
}

// The upstream request carries the client's end-to-end headers in order, its own Host (the
// backend's host:port) and Content-Length, and none of the headers that describe the client's
// connection.
TEST(Client, ForwardsEndToEndHeadersAndDropsHopByHopOnes) {
  Server up(local_options(), [](Request& req, ResponseWriter& w) -> Task<void> {
    std::string seen = req.method + " " + req.target + "\n";
    for (const auto& [k, v] : req.headers) seen += std::string(k) + ": " + std::string(v) + "\n";
    seen += "body: " + req.body + "\n";
    const Headers none;
    co_await w.send(200, "text/plain", std::move(seen), none);
  });
  const auto port = up.start();
  ASSERT_TRUE(port.has_value());
  const Endpoint ep{"127.0.0.1", *port};
  const Headers sent{{"Host", "client.example"},
                     {"Connection", "keep-alive, X-Hop"},
                     {"X-Hop", "named by Connection"},
                     {"connection", "X-Other"},
                     {"x-other", "named by a second Connection field"},
                     {"Keep-Alive", "timeout=5"},
                     {"TE", "trailers"},
                     {"X-Session-Id", "s1"},
                     {"Proxy-Connection", "keep-alive"},
                     {"Proxy-Authorization", "Basic"},
                     {"Upgrade", "h2c"},
                     {"Authorization", "Bearer t"},
                     {"Content-Length", "999"},
                     {"content-type", "application/json"}};
  auto seen = run_client([&](ConnectionPool& pool) -> Task<std::string> {
    std::string all;
    for (int i = 0; i < 2; ++i) {  // a new connection, then the pooled one
      auto ex = co_await pool.start(ep, "POST", "/v1/x?y=1", sent, "abc");
      if (!ex) co_return "failed: " + ex.error().message;
      auto body = co_await ex->read_all(1 << 20);
      all += body ? *body : "failed: " + body.error().message;
    }
    co_return all;
  });
  const std::string expected = "POST /v1/x?y=1\nHost: 127.0.0.1:" + std::to_string(*port) +
                               "\nX-Session-Id: s1\nAuthorization: Bearer t\n"
                               "content-type: application/json\nContent-Length: 3\nbody: abc\n";
  EXPECT_EQ(seen, expected + expected);
  up.stop(std::chrono::milliseconds(0));
}

// An idle pooled connection whose peer closes it (an engine that stops or restarts) leaves the pool
// at once, instead of failing the next request that takes it; drop_idle() empties an endpoint.
TEST(Client, IdleConnectionClosedByPeerLeavesThePool) {
  auto serve = [](Request&, ResponseWriter& w) -> Task<void> {
    const Headers none;
    co_await w.send(200, "text/plain", std::string("ok"), none);
  };
  auto up = std::make_unique<Server>(local_options(), serve);
  const auto port = up->start();
  ASSERT_TRUE(port.has_value());
  const Endpoint ep{"127.0.0.1", *port};
  auto got = run_client([&](ConnectionPool& pool) -> Task<std::string> {
    auto ex = co_await pool.start(ep, "GET", "/", Headers{}, "");
    if (!ex) co_return "failed: " + ex.error().message;
    auto body = co_await ex->read_all(1 << 20);
    if (!body) co_return "failed: " + body.error().message;
    if (pool.idle_connections() != 1) co_return "not pooled";
    // The server goes away: it closes its idle keep-alive connections.
    up->stop(std::chrono::milliseconds(0));
    net::steady_timer t(co_await net::this_coro::executor);
    for (int i = 0; i < 200 && pool.idle_connections() != 0; ++i) {
      t.expires_after(std::chrono::milliseconds(5));
      co_await t.async_wait(use_task);
    }
    if (pool.idle_connections() != 0) co_return "the dead connection stayed in the pool";
    // Back on the same port: the next request gets a fresh connection at the first try.
    ServerOptions o = local_options();
    o.port = ep.port;
    up = std::make_unique<Server>(o, serve);
    if (!up->start()) co_return "restart failed";
    ex = co_await pool.start(ep, "GET", "/", Headers{}, "");
    if (!ex) co_return "after restart: " + ex.error().message;
    body = co_await ex->read_all(1 << 20);
    if (pool.idle_connections() != 1) co_return "not pooled after restart";
    pool.drop_idle(ep);
    if (pool.idle_connections() != 0) co_return "drop_idle left connections";
    co_return body ? *body : "failed: " + body.error().message;
  });
  EXPECT_EQ(got, "ok");
  up->stop(std::chrono::milliseconds(0));
}

// The client's address is appended to X-Forwarded-For and Forwarded, after what the client sent.
TEST(Client, AppendsTheClientToForwardedHeaders) {
  Server up(local_options(), [](Request& req, ResponseWriter& w) -> Task<void> {
    std::string seen;
    for (const auto& [k, v] : req.headers) seen += std::string(k) + ": " + std::string(v) + "\n";
    const Headers none;
    co_await w.send(200, "text/plain", std::move(seen), none);
  });
  const auto port = up.start();
  ASSERT_TRUE(port.has_value());
  const Endpoint ep{"127.0.0.1", *port};
  auto seen = run_client([&](ConnectionPool& pool) -> Task<std::string> {
    std::string all;
    const Headers from_proxy{{"X-Forwarded-For", "203.0.113.7"}, {"Forwarded", "for=203.0.113.7"}};
    for (const Headers* h : {&from_proxy, static_cast<const Headers*>(nullptr)}) {
      const Headers none;
      auto ex = co_await pool.start(ep, "GET", "/", h ? *h : none, "", nullptr,
                                    h ? "10.1.2.3" : "2001:db8::1");
      if (!ex) co_return "failed: " + ex.error().message;
      auto body = co_await ex->read_all(1 << 20);
      all += body ? *body : "failed";
      all += "--\n";
    }
    co_return all;
  });
  EXPECT_NE(seen.find("X-Forwarded-For: 203.0.113.7, 10.1.2.3\nForwarded: for=203.0.113.7, "
                      "for=10.1.2.3;proto=http\n"),
            std::string::npos)
      << seen;
  EXPECT_NE(
      seen.find("X-Forwarded-For: 2001:db8::1\nForwarded: for=\"[2001:db8::1]\";proto=http\n"),
      std::string::npos)
      << seen;
  up.stop(std::chrono::milliseconds(0));
}

TEST(Client, RefusedConnectionIsRetryableConnectError) {
  // Bind and close a listener to get a port nobody listens on.
  std::uint16_t dead_port;
  {
    Server s(local_options(), [](Request&, ResponseWriter& w) -> Task<void> {
      const Headers none;
      co_await w.send(200, "text/plain", std::string(), none);
    });
    dead_port = *s.start();
    s.stop(std::chrono::milliseconds(0));
  }
  auto kind = run_client([&](ConnectionPool& pool) -> Task<UpstreamError> {
    const Endpoint dead{"127.0.0.1", dead_port};
    const Headers none;
    auto ex = co_await pool.start(dead, "GET", "/", none, {});
    EXPECT_FALSE(ex.has_value());
    co_return ex.error().kind;
  });
  EXPECT_EQ(kind, UpstreamError::kConnect);
}

TEST(ParseHttpUrl, AcceptsHostPortAndRejectsOthers) {
  auto ep = parse_http_url("http://127.0.0.1:8001");
  ASSERT_TRUE(ep);
  EXPECT_EQ(ep->host, "127.0.0.1");
  EXPECT_EQ(ep->port, 8001);
  EXPECT_FALSE(ep->tls);
  EXPECT_TRUE(parse_http_url("localhost:9/"));
  auto tls = parse_http_url("https://engine-0.ns.svc");
  ASSERT_TRUE(tls);
  EXPECT_TRUE(tls->tls);
  EXPECT_EQ(tls->port, 443);
  EXPECT_EQ(tls->host, "engine-0.ns.svc");
  EXPECT_FALSE(parse_http_url("ftp://x:1"));
  EXPECT_FALSE(parse_http_url("http://x:99999"));
  EXPECT_FALSE(parse_http_url("http://x:1/v1"));
}

}  // namespace
}  // namespace kvroute::http
