#include "proxy/proxy.h"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <thread>

#include "http/server.h"
#include "testing/raw_http.h"
#include "testing/subprocess.h"
#include "testing/wait.h"

namespace kvroute::proxy {
namespace {

namespace net = boost::asio;
using http::Headers;
using http::Request;
using http::ResponseWriter;
using namespace std::chrono_literals;

http::Task<void> sleep_for(std::chrono::milliseconds d) {
  net::steady_timer t(co_await net::this_coro::executor, d);
  co_await t.async_wait(http::use_task);
}

// A scriptable OpenAI-compatible upstream.
struct FakeEngine {
  std::string name;
  std::atomic<int> hits{0};
  std::atomic<int> streams_cancelled{0};
  std::atomic<int> mode{
      0};  // 0 normal, 1 break mid-stream, 2 slow stream, 3 hang, 4 break before head
  std::string last_body;
  std::mutex mu;
  std::unique_ptr<http::Server> server;
  std::uint16_t port = 0;

  explicit FakeEngine(std::string n) : name(std::move(n)) {
    http::ServerOptions o;
    o.address = "127.0.0.1";
    o.port = 0;
    server = std::make_unique<http::Server>(
        o, [this](Request& r, ResponseWriter& w) { return handle(r, w); });
    port = *server->start();
  }
  ~FakeEngine() { server->stop(0ms); }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port); }

  http::Task<void> handle(Request& r, ResponseWriter& w) {
    const Headers none;
    if (r.path() == "/health") {
      std::string b = "{}";
      co_await w.send(200, "application/json", std::move(b), none);
      co_return;
    }
    if (r.path() == "/v1/models") {
      std::string b = R"({"object":"list","data":[{"id":"m1","object":"model"}]})";
      co_await w.send(200, "application/json", std::move(b), none);
      co_return;
    }
    if (!r.path().starts_with("/v1/")) {
      std::string b;
      co_await w.send(404, "text/plain", std::move(b), none);
      co_return;
    }
    ++hits;
    {
      std::lock_guard l(mu);
      last_body = r.body;
    }
    if (mode == 3) {
      co_await sleep_for(3000ms);
      co_return;
    }
    const bool stream = r.body.find("\"stream\":true") != std::string::npos;
    if (!stream) {
      std::string b = R"({"id":"cmpl-1","object":"text_completion","backend":")" + name + R"("})";
      co_await w.send(200, "application/json", std::move(b), none);
      co_return;
    }
    co_await w.start_stream(200, "text/event-stream", none);
    for (int i = 0; i < 5; ++i) {
      if (mode == 1 && i == 2) {
        std::string partial = "data: {\"partial";
        co_await w.write_chunk(partial);
        co_return;  // the session ends the chunked body; the proxy sees a truncated event
      }
      std::string ev = "data: {\"i\":" + std::to_string(i) + "}\n\n";
      if (!co_await w.write_chunk(ev)) {
        ++streams_cancelled;
        co_return;
      }
      if (mode == 2) {
        co_await sleep_for(200ms);
        if (w.client_gone()) {
          ++streams_cancelled;
          co_return;
        }
      }
    }
    std::string done = "data: [DONE]\n\n";
    co_await w.write_chunk(done);
    co_await w.end_stream();
  }
};

config::Config base_config(std::initializer_list<const FakeEngine*> engines) {
  config::Config c;
  c.address = "127.0.0.1";
  c.port = 0;
  c.threads = 2;
  c.log_level = "warn";
  c.health_interval = 100ms;
  for (auto* e : engines) {
    config::BackendConfig b;
    b.url = e->url();
    b.name = e->name;
    c.backends.push_back(b);
  }
  return c;
}

std::uint16_t dead_port() {
  http::ServerOptions o;
  o.address = "127.0.0.1";
  o.port = 0;
  http::Server s(o, [](Request&, ResponseWriter&) -> http::Task<void> { co_return; });
  auto p = *s.start();
  s.stop(0ms);
  return p;
}

TEST(Proxy, ForwardsBodyByteForByteAndRelaysResponse) {
  FakeEngine e("e0");
  Proxy p(base_config({&e}));
  auto port = p.start();
  ASSERT_TRUE(port) << port.error().message;
  const std::string body = R"({"model":"m1",  "prompt":"hello \u00e9", "max_tokens":3})";
  auto r = testing::post_json(*port, "/v1/completions", body);
  EXPECT_EQ(r.status, 200) << r.raw;
  EXPECT_NE(r.body.find("\"backend\":\"e0\""), std::string::npos);
  std::lock_guard l(e.mu);
  EXPECT_EQ(e.last_body, body);
}

TEST(Proxy, StreamsSseEventsAsTheyArrive) {
  FakeEngine e("e0");
  e.mode = 2;  // 200 ms between events
  Proxy p(base_config({&e}));
  auto port = *p.start();
  // Read just the first event: it must arrive long before the whole stream (~1 s) is done.
  const std::string body = R"({"model":"m1","prompt":"x","stream":true})";
  std::string req =
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\n\r\n" + body;
  auto t0 = std::chrono::steady_clock::now();
  std::string got = testing::send_then_disconnect(port, req, 1, 2000ms);
  while (got.find("data: {\"i\":0}") == std::string::npos &&
         std::chrono::steady_clock::now() - t0 < 2s) {
    got += testing::send_then_disconnect(port, req, 1, 10ms);  // not reached normally
  }
  auto elapsed = std::chrono::steady_clock::now() - t0;
  EXPECT_NE(got.find("text/event-stream"), std::string::npos) << got;
  EXPECT_LT(elapsed, 600ms);
  // The full stream through the proxy is complete and ends with [DONE].
  e.mode = 0;
  auto full = testing::post_json(port, "/v1/completions", body);
  EXPECT_EQ(full.status, 200);
  EXPECT_NE(full.body.find("data: {\"i\":4}\n\ndata: [DONE]\n\n"), std::string::npos) << full.body;
}

TEST(Proxy, ClientDisconnectCancelsUpstream) {
  FakeEngine e("e0");
  e.mode = 2;
  Proxy p(base_config({&e}));
  auto port = *p.start();
  const std::string body = R"({"model":"m1","prompt":"x","stream":true})";
  std::string req =
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\n\r\n" + body;
  testing::send_then_disconnect(port, req, 20, 2000ms);
  // The engine notices within a couple of its 200 ms ticks, well before its 5 events are done.
  EXPECT_TRUE(testing::wait_until([&] { return e.streams_cancelled.load() != 0; },
                                  std::chrono::seconds(10)));
  EXPECT_EQ(e.streams_cancelled.load(), 1);
}

TEST(Proxy, RetriesRefusedBackendBeforeFirstByte) {
  FakeEngine good("good");
  auto flaky = std::make_unique<FakeEngine>("dead");
  auto cfg = base_config({flaky.get(), &good});
  cfg.policy = "round-robin";
  cfg.health_interval = 60s;  // the dead backend stays "healthy" so the retry path is exercised
  Proxy p(cfg);
  auto port = *p.start();
  // Wait for the first health round (it also learns the models), then kill one backend.
  EXPECT_TRUE(testing::wait_until(
      [&] { return testing::get(port, "/v1/models").body.find("m1") != std::string::npos; },
      std::chrono::seconds(10)));
  std::this_thread::sleep_for(50ms);
  flaky.reset();
  for (int i = 0; i < 4; ++i) {
    auto r = testing::post_json(port, "/v1/completions", R"({"model":"m1","prompt":"x"})");
    EXPECT_EQ(r.status, 200) << r.raw;
  }
  EXPECT_EQ(good.hits.load(), 4);  // each request reached the good backend exactly once
  auto m = testing::get(port, "/metrics");
  EXPECT_NE(m.body.find("kvroute_retries_total{backend=\"dead\"}"), std::string::npos) << m.body;
  EXPECT_NE(m.body.find("kvroute_upstream_errors_total{backend=\"dead\",kind=\"connect\"}"),
            std::string::npos);
}

TEST(Proxy, NeverResendsAfterTheBackendStartedAnswering) {
  FakeEngine a("a"), b("b");
  a.mode = 1;
  b.mode = 1;
  auto cfg = base_config({&a, &b});
  Proxy p(cfg);
  auto port = *p.start();
  auto r =
      testing::post_json(port, "/v1/completions", R"({"model":"m1","prompt":"x","stream":true})");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(a.hits.load() + b.hits.load(), 1);
  // Mid-stream failure ends with a well-formed SSE error event and [DONE], on an event boundary.
  EXPECT_NE(r.body.find("data: {\"i\":1}\n\n"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("\n\ndata: {\"error\":"), std::string::npos) << r.body;
  EXPECT_TRUE(r.body.ends_with("data: [DONE]\n\n")) << r.body;
}

TEST(Proxy, ErrorPathsGetOpenAiErrors) {
  FakeEngine e("e0");
  auto cfg = base_config({&e});
  cfg.max_body_bytes = 4096;
  cfg.max_header_bytes = 2048;
  Proxy p(cfg);
  auto port = *p.start();
  // Wait until the models are learned.
  EXPECT_TRUE(testing::wait_until(
      [&] { return testing::get(port, "/v1/models").body.find("m1") != std::string::npos; },
      std::chrono::seconds(10)));
  struct Case {
    std::string path, body;
    int status;
    std::string needle;
  } cases[] = {
      {"/v1/completions", "{oops", 400, "invalid JSON"},
      {"/v1/completions", R"({"model":"m1"})", 400, "\"param\":\"prompt\""},
      {"/v1/chat/completions", R"({"model":"m1","messages":"hi"})", 400, "messages"},
      {"/v1/completions", R"({"model":"nope","prompt":"x"})", 404, "does not exist"},
      {"/v1/completions", std::string(5000, ' '), 413, "exceeds"},
      {"/v2/zzz", "{}", 404, "no route"},
  };
  for (const auto& c : cases) {
    auto r = testing::post_json(port, c.path, c.body);
    EXPECT_EQ(r.status, c.status) << c.body.substr(0, 40) << " -> " << r.raw;
    EXPECT_NE(r.body.find("\"error\":{"), std::string::npos) << r.raw;
    EXPECT_NE(r.body.find(c.needle), std::string::npos) << r.raw;
  }
  auto big = testing::post_json(port, "/v1/completions", R"({"prompt":"x"})",
                                "X-Big: " + std::string(4000, 'a') + "\r\n");
  EXPECT_EQ(big.status, 431) << big.raw;
  auto wrong_method = testing::get(port, "/v1/completions");
  EXPECT_EQ(wrong_method.status, 405);
  // The router kept serving everyone else.
  auto ok = testing::post_json(port, "/v1/completions", R"({"model":"m1","prompt":"x"})");
  EXPECT_EQ(ok.status, 200);
}

TEST(Proxy, UpstreamTimeoutIs504AndNoHealthyBackendIs503) {
  FakeEngine e("e0");
  e.mode = 3;  // hangs
  auto cfg = base_config({&e});
  cfg.first_byte_timeout = 300ms;
  cfg.max_retries = 0;
  Proxy p(cfg);
  auto port = *p.start();
  auto r = testing::post_json(port, "/v1/completions", R"({"prompt":"x"})");
  EXPECT_EQ(r.status, 504) << r.raw;

  auto cfg2 = base_config({});
  config::BackendConfig dead;
  dead.url = "http://127.0.0.1:" + std::to_string(dead_port());
  dead.name = "dead";
  cfg2.backends.push_back(dead);
  Proxy p2(cfg2);
  auto port2 = *p2.start();
  // The health checker marks it unhealthy; then requests get 503 and /ready says not ready.
  EXPECT_TRUE(testing::wait_until([&] { return testing::get(port2, "/ready").status == 503; },
                                  std::chrono::seconds(10)));
  EXPECT_EQ(testing::get(port2, "/ready").status, 503);
  auto r2 = testing::post_json(port2, "/v1/completions", R"({"prompt":"x"})");
  EXPECT_EQ(r2.status, 503) << r2.raw;
  EXPECT_EQ(testing::get(port2, "/health").status, 200);
}

TEST(Proxy, GracefulShutdownFinishesInFlightRequests) {
  FakeEngine e("e0");
  e.mode = 2;  // ~1 s stream
  Proxy p(base_config({&e}));
  auto port = *p.start();
  testing::RawResponse r;
  std::thread client(
      [&] { r = testing::post_json(port, "/v1/completions", R"({"prompt":"x","stream":true})"); });
  ASSERT_TRUE(testing::wait_until([&] { return e.hits.load() == 1; }));  // the stream has begun
  p.stop(5000ms);
  client.join();
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(r.body.ends_with("data: [DONE]\n\n")) << r.body;
  // After stop, new connections are refused.
  EXPECT_EQ(testing::get(port, "/health").status, 0);
}

TEST(Proxy, MetricsAndModels) {
  FakeEngine a("a"), b("b");
  Proxy p(base_config({&a, &b}));
  auto port = *p.start();
  EXPECT_TRUE(testing::wait_until(
      [&] { return testing::get(port, "/v1/models").body.find("m1") != std::string::npos; },
      std::chrono::seconds(10)));
  auto models = testing::get(port, "/v1/models");
  EXPECT_NE(models.body.find(R"({"id":"m1","object":"model")"), std::string::npos) << models.body;
  EXPECT_EQ(models.body.find("m1", models.body.find("m1") + 2),
            std::string::npos);  // union, no duplicates
  testing::post_json(port, "/v1/completions", R"({"model":"m1","prompt":"x"})");
  auto m = testing::get(port, "/metrics");
  EXPECT_NE(m.body.find("kvroute_requests_total{endpoint=\"/v1/completions\",code=\"200\""),
            std::string::npos);
  auto check = testing::run_command("promtool check metrics", m.body);
  EXPECT_EQ(check.exit_code, 0) << check.output;
}

}  // namespace
}  // namespace kvroute::proxy
