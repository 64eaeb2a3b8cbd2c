#include "http/server.h"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_future.hpp>

#include <atomic>

#include "http/client.h"

namespace kvroute::http {
namespace {

// Runs `fn(pool)` as a coroutine on a private io_context and returns its result.
template <typename F>
auto run_client(F fn) {
  net::io_context ioc;
  ConnectionPool pool(ioc.get_executor(), ClientOptions{});
  auto fut = net::co_spawn(ioc, fn(pool), net::use_future);
  ioc.run();
  return fut.get();
}

ServerOptions local_options() {
  ServerOptions o;
  o.address = "127.0.0.1";
  o.port = 0;
  o.threads = 2;
  return o;
}

TEST(Server, ServesAndReusesKeepAliveConnections) {
  std::atomic<int> calls{0};
  Server server(local_options(), [&](Request& req, ResponseWriter& w) -> net::awaitable<void> {
    ++calls;
    std::string body = req.method + " " + req.target + " " + req.body;
    const Headers none;
    co_await w.send(200, "text/plain", std::move(body), none);
  });
  auto port = server.start();
  ASSERT_TRUE(port.has_value());
  Endpoint ep{"127.0.0.1", *port};
  auto out = run_client([&](ConnectionPool& pool) -> net::awaitable<std::string> {
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

TEST(Server, StreamsChunksAsTheyAreWritten) {
  Server server(local_options(), [](Request&, ResponseWriter& w) -> net::awaitable<void> {
    co_await w.start_stream(200, "text/event-stream");
    for (int i = 0; i < 5; ++i) {
      const std::string chunk = "data: " + std::to_string(i) + "\n\n";
      co_await w.write_chunk(chunk);
      net::steady_timer t(co_await net::this_coro::executor, std::chrono::milliseconds(5));
      co_await t.async_wait(net::use_awaitable);
    }
    co_await w.end_stream();
  });
  auto port = server.start();
  ASSERT_TRUE(port);
  Endpoint ep{"127.0.0.1", *port};
  auto pieces = run_client([&](ConnectionPool& pool) -> net::awaitable<int> {
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

TEST(Client, RefusedConnectionIsRetryableConnectError) {
  // Bind and close a listener to get a port nobody listens on.
  std::uint16_t dead_port;
  {
    Server s(local_options(), [](Request&, ResponseWriter& w) -> net::awaitable<void> {
      const Headers none;
      co_await w.send(200, "text/plain", std::string(), none);
    });
    dead_port = *s.start();
    s.stop(std::chrono::milliseconds(0));
  }
  auto kind = run_client([&](ConnectionPool& pool) -> net::awaitable<UpstreamError> {
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
  EXPECT_TRUE(parse_http_url("localhost:9/"));
  EXPECT_FALSE(parse_http_url("https://x:1"));
  EXPECT_FALSE(parse_http_url("http://x:99999"));
  EXPECT_FALSE(parse_http_url("http://x:1/v1"));
}

}  // namespace
}  // namespace kvroute::http
