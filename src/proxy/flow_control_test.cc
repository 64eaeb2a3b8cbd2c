// Flow control through `kvroute serve` (issue 18): one simulated engine that runs one request at
// a time; the router holds what the engine cannot start, dispatches higher priorities first, and
// sheds sheddable requests with 429 while saturated.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "proxy/proxy.h"
#include "sim/server.h"
#include "testing/raw_http.h"
#include "testing/wait.h"

namespace kvroute::proxy {
namespace {

using namespace std::chrono_literals;

sim::SimOptions one_slot_engine() {
  auto o = sim::loopback_options(1, "m", 256);
  o.engine.max_num_seqs = 1;       // one request runs, the rest wait in the engine
  o.preset = "llama-3.1-8b-h100";  // real-time steps: a 24-token answer takes ~0.2 s
  return o;
}

config::Config flow_config(const sim::SimCluster& sim) {
  config::Config c;
  c.address = "127.0.0.1";
  c.port = 0;
  c.log_level = "warn";
  c.policy = "round-robin";
  c.debug_headers = true;
  c.metrics_scrape_interval = std::chrono::milliseconds(20);
  c.flow_control.enabled = true;
  c.flow_control.queue_depth_threshold = 1;  // at most one request waiting in the engine
  c.flow_control.metrics_staleness = std::chrono::milliseconds(2000);
  c.flow_control.objectives = {{"critical", 10}, {"batch", -1}};
  for (const auto& e : sim.endpoints()) {
    config::BackendConfig b;
    b.url = e.url;
    b.name = "engine";
    b.models = {"m"};
    c.backends.push_back(b);
  }
  return c;
}

std::string body(int i, int max_tokens) {
  return R"({"model":"m","max_tokens":)" + std::to_string(max_tokens) + R"(,"prompt":"request )" +
         std::to_string(i) + R"("})";
}

std::string header(const testing::RawResponse& r, std::string_view name) {
  const auto at = r.head.find(std::string(name) + ": ");
  if (at == std::string::npos) return {};
  const auto from = at + name.size() + 2;
  return r.head.substr(from, r.head.find("\r\n", from) - from);
}

TEST(FlowControl, HigherPriorityOvertakesTheRoutersQueueAndSheddableIsRefused) {
  sim::SimCluster sim(one_slot_engine());
  ASSERT_TRUE(sim.start());
  Proxy p(flow_config(sim));
  auto port = p.start();
  ASSERT_TRUE(port) << port.error().message;
  // Idle and scraped: a request goes straight through, sheddable or not.
  ASSERT_TRUE(testing::wait_until(
      [&] {
        return testing::post_json(*port, "/v1/completions", body(100, 2),
                                  "x-gateway-inference-objective: batch\r\n")
                   .status == 200;
      },
      5s));

  std::mutex mu;
  std::vector<std::string> finished;  // in completion order
  std::vector<testing::RawResponse> responses(6);
  std::vector<std::thread> clients;
  auto send = [&](int i, std::string name, std::string headers) {
    responses[i] = testing::post_json(*port, "/v1/completions", body(i, 24), headers);
    std::lock_guard l(mu);
    finished.push_back(name);
  };
  for (int i = 0; i < 5; ++i) {
    clients.emplace_back(send, i, "normal" + std::to_string(i), "");
    std::this_thread::sleep_for(15ms);
  }
  // Saturated now (one running, one waiting in the engine, three in the router): a sheddable
  // request is refused at once, with Retry-After and an OpenAI-shaped error.
  auto shed = testing::post_json(*port, "/v1/completions", body(50, 2),
                                 "x-gateway-inference-objective: batch\r\n");
  EXPECT_EQ(shed.status, 429) << shed.raw;
  EXPECT_EQ(header(shed, "Retry-After"), "1") << shed.head;
  EXPECT_EQ(header(shed, "x-kvroute-dropped-reason"), "rejected-saturated") << shed.head;
  EXPECT_NE(shed.body.find(R"("type":"rate_limit_error")"), std::string::npos) << shed.body;
  // A critical request arrives last and goes before the normal ones queued in the router.
  clients.emplace_back(send, 5, "critical", "x-gateway-inference-objective: critical\r\n");
  for (auto& t : clients) t.join();
  for (const auto& r : responses) EXPECT_EQ(r.status, 200) << r.raw;
  ASSERT_EQ(finished.size(), 6u);
  const auto critical_at =
      std::find(finished.begin(), finished.end(), "critical") - finished.begin();
  EXPECT_LE(critical_at, 3) << "completion order: " << ::testing::PrintToString(finished);
  EXPECT_GT(std::stoi(header(responses[5], "x-kvroute-queue-ms")), 0) << responses[5].head;
  p.stop(1000ms);
}

TEST(FlowControl, ALightTenantIsNotStuckBehindAHeavyTenantsBurst) {
  sim::SimCluster sim(one_slot_engine());
  ASSERT_TRUE(sim.start());
  Proxy p(flow_config(sim));
  auto port = p.start();
  ASSERT_TRUE(port) << port.error().message;
  ASSERT_TRUE(testing::wait_until(
      [&] { return testing::post_json(*port, "/v1/completions", body(100, 2)).status == 200; },
      5s));
  std::mutex mu;
  std::vector<std::string> finished;
  std::vector<std::thread> clients;
  auto send = [&](int i, std::string name, std::string tenant) {
    auto r = testing::post_json(*port, "/v1/completions", body(i, 24),
                                "x-gateway-inference-fairness-id: " + tenant + "\r\n");
    EXPECT_EQ(r.status, 200) << r.raw;
    std::lock_guard l(mu);
    finished.push_back(name);
  };
  for (int i = 0; i < 6; ++i) {
    clients.emplace_back(send, i, "heavy" + std::to_string(i), "heavy");
    std::this_thread::sleep_for(10ms);
  }
  clients.emplace_back(send, 6, "light", "light");
  for (auto& t : clients) t.join();
  ASSERT_EQ(finished.size(), 7u);
  // Two of heavy's went to the engine before light arrived; in the router's queue light is next
  // (round-robin between tenants), not behind heavy's remaining four.
  const auto light_at = std::find(finished.begin(), finished.end(), "light") - finished.begin();
  EXPECT_LE(light_at, 3) << ::testing::PrintToString(finished);
  p.stop(1000ms);
}

double metric(std::uint16_t port, const std::string& series) {
  // The sample's line (not the # HELP line, which names the series too).
  const auto m = "\n" + testing::get(port, "/metrics").body;
  const auto at = m.find("\n" + series + " ");
  return at == std::string::npos ? -1 : std::strtod(m.c_str() + at + series.size() + 2, nullptr);
}

TEST(FlowControl, TenantRateLimitIs429WithRetryAfter) {
  sim::SimCluster sim(sim::loopback_options(1, "m", 256));
  ASSERT_TRUE(sim.start());
  auto c = flow_config(sim);
  c.flow_control.tenant_rate_limits = {{"acme", 1, 0, std::chrono::milliseconds(1000)}};
  Proxy p(c);
  auto port = p.start();
  ASSERT_TRUE(port) << port.error().message;
  ASSERT_TRUE(testing::wait_until(
      [&] { return testing::post_json(*port, "/v1/completions", body(100, 2)).status == 200; },
      5s));
  const std::string acme = "x-gateway-inference-fairness-id: acme\r\n";
  EXPECT_EQ(testing::post_json(*port, "/v1/completions", body(1, 2), acme).status, 200);
  auto limited = testing::post_json(*port, "/v1/completions", body(2, 2), acme);
  EXPECT_EQ(limited.status, 429) << limited.raw;
  EXPECT_EQ(header(limited, "Retry-After"), "1") << limited.head;
  EXPECT_EQ(header(limited, "x-kvroute-dropped-reason"), "rejected-rate-limited");
  EXPECT_NE(limited.body.find("rate limit"), std::string::npos) << limited.body;
  // Another tenant is not limited.
  EXPECT_EQ(testing::post_json(*port, "/v1/completions", body(3, 2),
                               "x-gateway-inference-fairness-id: beta\r\n")
                .status,
            200);
  // Outcomes by tenant; tenants past the first 64 seen share the label "other".
  EXPECT_EQ(
      metric(
          *port,
          R"(kvroute_flow_control_tenant_requests_total{tenant="acme",outcome="rejected-rate-limited"})"),
      1);
  EXPECT_EQ(
      metric(*port,
             R"(kvroute_flow_control_tenant_requests_total{tenant="acme",outcome="dispatched"})"),
      1);
  for (int i = 0; i < 70; ++i) {
    ASSERT_EQ(testing::post_json(*port, "/v1/completions", body(10 + i, 1),
                                 "x-gateway-inference-fairness-id: t" + std::to_string(i) + "\r\n")
                  .status,
              200);
  }
  const std::string m = testing::get(*port, "/metrics").body;
  std::size_t labels = 0;
  for (auto at = m.find("\nkvroute_flow_control_tenant_requests_total{"); at != std::string::npos;
       at = m.find("\nkvroute_flow_control_tenant_requests_total{", at + 1))
    ++labels;
  EXPECT_LE(labels, 64u + 2u) << m;  // 64 tenants' dispatched series, acme's 429, "other"
  EXPECT_GE(
      metric(*port,
             R"(kvroute_flow_control_tenant_requests_total{tenant="other",outcome="dispatched"})"),
      1)
      << m;
  EXPECT_EQ(
      metric(*port,
             R"(kvroute_flow_control_tenant_requests_total{tenant="t69",outcome="dispatched"})"),
      -1);
  p.stop(1000ms);
}

TEST(FlowControl, AQueuedRequestWhoseClientLeavesLeavesTheQueue) {
  sim::SimCluster sim(one_slot_engine());
  ASSERT_TRUE(sim.start());
  Proxy p(flow_config(sim));
  auto port = p.start();
  ASSERT_TRUE(port) << port.error().message;
  ASSERT_TRUE(testing::wait_until(
      [&] { return testing::post_json(*port, "/v1/completions", body(100, 2)).status == 200; },
      5s));
  // One running and one waiting in the engine: the next request waits in the router.
  std::vector<testing::RawResponse> responses(2);
  std::vector<std::thread> clients;
  for (int i = 0; i < 2; ++i) {
    clients.emplace_back(
        [&, i] { responses[i] = testing::post_json(*port, "/v1/completions", body(i, 48)); });
    std::this_thread::sleep_for(20ms);
  }
  const std::string raw =
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
      "application/json\r\nContent-Length: " +
      std::to_string(body(9, 8).size()) + "\r\n\r\n" + body(9, 8);
  std::thread leaver([&] { testing::send_then_disconnect(*port, raw, 1, 300ms); });
  EXPECT_TRUE(testing::wait_until(
      [&] { return metric(*port, "kvroute_flow_control_queue_size") == 1; }, 2s));
  leaver.join();
  EXPECT_TRUE(testing::wait_until(
      [&] {
        return metric(
                   *port,
                   R"(kvroute_flow_control_requests_total{priority="0",outcome="rejected-context-cancelled"})") ==
               1;
      },
      2s));
  EXPECT_EQ(metric(*port, "kvroute_flow_control_queue_size"), 0);
  for (auto& t : clients) t.join();
  for (const auto& r : responses) EXPECT_EQ(r.status, 200) << r.raw;
  p.stop(1000ms);
}

TEST(FlowControl, ShutdownAnswersQueuedRequestsWith503) {
  sim::SimCluster sim(one_slot_engine());
  ASSERT_TRUE(sim.start());
  Proxy p(flow_config(sim));
  auto port = p.start();
  ASSERT_TRUE(port) << port.error().message;
  ASSERT_TRUE(testing::wait_until(
      [&] { return testing::post_json(*port, "/v1/completions", body(100, 2)).status == 200; },
      5s));
  // One runs, one waits in the engine, the rest wait in the router. (Four, not three: a request
  // racing a scrape can reach the engine before the scrape counts it, so the router may let one
  // more through than its threshold, on a loaded machine.)
  std::vector<testing::RawResponse> responses(4);
  std::vector<std::thread> clients;
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back(
        [&, i] { responses[i] = testing::post_json(*port, "/v1/completions", body(i, 400)); });
    std::this_thread::sleep_for(30ms);
  }
  const bool queued = testing::wait_until(
      [&] { return metric(*port, "kvroute_flow_control_queue_size") >= 1; }, 5s);
  p.stop(100ms);  // the grace ends long before the engine could start the queued ones
  for (auto& t : clients) t.join();
  ASSERT_TRUE(queued);
  int refused = 0;
  for (const auto& r : responses) {
    if (r.status != 503 || header(r, "x-kvroute-dropped-reason") != "rejected-shutting-down")
      continue;
    ++refused;
    EXPECT_NE(r.body.find("shutting down"), std::string::npos) << r.body;
  }
  EXPECT_GE(refused, 1);
}

}  // namespace
}  // namespace kvroute::proxy
