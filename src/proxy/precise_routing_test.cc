// The router fed by the engines' KV events: kvroute serve in front of simulated engines that
// publish vLLM KV events; the kvroute policy routes repeats by what the engines actually hold.
#include <gtest/gtest.h>

#include <thread>

#include "proxy/proxy.h"
#include "sim/server.h"
#include "testing/raw_http.h"

namespace kvroute::proxy {
namespace {

using namespace std::chrono_literals;

TEST(PreciseRouting, RepeatsFollowTheEnginesCacheAndEventsAreIndexed) {
  sim::SimOptions so;
  so.engines = 3;
  so.port = 0;
  so.preset = "none";
  so.model = "m";
  so.kv_events_ephemeral = true;
  so.engine.num_gpu_blocks = 256;
  sim::SimCluster sim(so);
  ASSERT_TRUE(sim.start());
  config::Config c;
  c.address = "127.0.0.1";
  c.port = 0;
  c.log_level = "warn";
  c.policy = "kvroute";
  c.tokenizer = "word";  // the simulator's tokenizer: the router's blocks equal the engines'
  c.debug_headers = true;
  for (const auto& e : sim.endpoints()) {
    config::BackendConfig b;
    b.url = e.url;
    b.name = e.url;
    b.models = {"m"};
    b.kv_events_endpoint = e.kv_events;
    b.kv_events_replay = e.kv_replay;
    c.backends.push_back(b);
  }
  Proxy p(c);
  auto port = p.start();
  ASSERT_TRUE(port) << port.error().message;
  std::this_thread::sleep_for(200ms);  // SUB sockets connect
  std::string prompt;
  for (int i = 0; i < 64; ++i) prompt += "doc" + std::to_string(i) + " ";
  std::string first_backend;
  int hits = 0;
  for (int i = 0; i < 6; ++i) {
    const std::string body = R"({"model":"m","max_tokens":2,"prompt":")" + prompt + "q" + std::to_string(i) + R"("})";
    auto r = testing::post_json(*port, "/v1/completions", body);
    ASSERT_EQ(r.status, 200) << r.raw;
    auto pos = r.head.find("x-kvroute-backend: ");
    ASSERT_NE(pos, std::string::npos);
    std::string backend = r.head.substr(pos + 19, r.head.find("\r\n", pos) - pos - 19);
    if (i == 0) first_backend = backend;
    if (backend == first_backend) ++hits;
    if (i > 0) {
      EXPECT_NE(r.body.find(R"("cached_tokens":64)"), std::string::npos) << r.body;
    }
    std::this_thread::sleep_for(20ms);  // let the events arrive (speculative entries cover bursts)
  }
  EXPECT_EQ(hits, 6);
  auto m = testing::get(*port, "/metrics");
  auto pos = m.body.find("kvroute_kv_events{counter=\"blocks_stored\"} ");
  ASSERT_NE(pos, std::string::npos) << m.body;
  EXPECT_GT(std::stod(m.body.substr(pos + 43)), 0.0);
  p.stop(1000ms);
}

}  // namespace
}  // namespace kvroute::proxy
