#include "sim/server.h"

#include <gtest/gtest.h>

#include <mutex>
#include <set>
#include <thread>

#include "kv_events/subscriber.h"
#include "testing/raw_http.h"
#include "testing/subprocess.h"
#include "testing/wait.h"

namespace kvroute::sim {
namespace {

using namespace std::chrono_literals;

std::uint16_t port_of(const std::string& url) {
  return static_cast<std::uint16_t>(std::stoi(url.substr(url.rfind(':') + 1)));
}

SimOptions test_options(int engines) { return loopback_options(engines, "sim-model", 64); }

std::string words(int n, int salt = 0) {
  std::string s;
  for (int i = 0; i < n; ++i) s += "w" + std::to_string(i * 7 + salt) + " ";
  return s;
}

TEST(SimServer, CompletionsReportCachedTokensOnRepeat) {
  SimCluster c(test_options(1));
  ASSERT_TRUE(c.start());
  auto port = port_of(c.endpoints()[0].url);
  const std::string body =
      R"({"model":"sim-model","prompt":")" + words(40) + R"(","max_tokens":4})";
  auto r1 = testing::post_json(port, "/v1/completions", body);
  ASSERT_EQ(r1.status, 200) << r1.raw;
  EXPECT_NE(r1.body.find(R"("object":"text_completion")"), std::string::npos);
  EXPECT_NE(r1.body.find(R"("prompt_tokens":40)"), std::string::npos) << r1.body;
  EXPECT_NE(r1.body.find(R"("cached_tokens":0)"), std::string::npos) << r1.body;
  EXPECT_NE(r1.body.find(R"("completion_tokens":4)"), std::string::npos);
  auto r2 = testing::post_json(port, "/v1/completions", body);
  // 40 tokens = 2 full blocks of 16 (the prompt-1 cap allows both).
  EXPECT_NE(r2.body.find(R"("cached_tokens":32)"), std::string::npos) << r2.body;
  auto s = c.stats(0);
  EXPECT_EQ(s.prefix_cache_queries_total, 80u);
  EXPECT_EQ(s.prefix_cache_hits_total, 32u);
  auto m = testing::get(port, "/metrics");
  EXPECT_NE(
      m.body.find("vllm:prefix_cache_queries_total{engine=\"0\",model_name=\"sim-model\"} 80"),
      std::string::npos)
      << m.body;
  EXPECT_NE(m.body.find("vllm:prefix_cache_hits_total{engine=\"0\",model_name=\"sim-model\"} 32"),
            std::string::npos);
  EXPECT_NE(m.body.find("num_gpu_blocks=\"64\""), std::string::npos);
  // promtool's only complaint may be the colon in vLLM's own names (a lint for recording rules).
  auto check = testing::run_command("promtool check metrics", m.body);
  std::string other;
  std::size_t pos = 0;
  while (pos < check.output.size()) {
    auto nl = check.output.find('\n', pos);
    std::string line =
        check.output.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    if (!line.empty() && line.find("should not contain ':'") == std::string::npos)
      other += line + "\n";
    pos = nl == std::string::npos ? check.output.size() : nl + 1;
  }
  EXPECT_TRUE(check.exit_code == 0 || check.exit_code == 3) << check.output;
  EXPECT_EQ(other, "") << check.output;
}

TEST(SimServer, StreamingChatWithUsage) {
  SimCluster c(test_options(1));
  ASSERT_TRUE(c.start());
  auto port = port_of(c.endpoints()[0].url);
  auto r = testing::post_json(
      port, "/v1/chat/completions",
      R"({"model":"sim-model","messages":[{"role":"user","content":"hi there"}],"max_tokens":3,"stream":true,"stream_options":{"include_usage":true}})");
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_NE(r.head.find("text/event-stream"), std::string::npos);
  EXPECT_NE(r.body.find(R"("delta":{"role":"assistant","content":""})"), std::string::npos)
      << r.body;
  EXPECT_NE(r.body.find(R"("finish_reason":"length")"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find(R"("choices":[],"usage":{"prompt_tokens":)"), std::string::npos) << r.body;
  EXPECT_TRUE(r.body.ends_with("data: [DONE]\n\n"));
}

TEST(SimServer, ErrorsAsVllmReturnsThem) {
  SimCluster c(test_options(1));
  ASSERT_TRUE(c.start());
  auto port = port_of(c.endpoints()[0].url);
  auto r = testing::post_json(port, "/v1/completions", R"({"model":"other","prompt":"x"})");
  EXPECT_EQ(r.status, 404);
  EXPECT_NE(r.body.find("NotFoundError"), std::string::npos);
  r = testing::post_json(port, "/v1/completions", R"({"prompt":""})");
  EXPECT_EQ(r.status, 400) << r.raw;
  r = testing::post_json(port, "/v1/completions", R"({"prompt":"x","max_tokens":100000})");
  EXPECT_EQ(r.status, 400) << r.raw;
  r = testing::post_json(port, "/v1/completions", "nope");
  EXPECT_EQ(r.status, 400);
  auto t = testing::post_json(port, "/tokenize", R"({"prompt":"a b c"})");
  EXPECT_EQ(t.status, 200);
  EXPECT_NE(t.body.find(R"("count":3)"), std::string::npos) << t.body;
  EXPECT_EQ(testing::get(port, "/health").status, 200);
  EXPECT_NE(testing::get(port, "/v1/models").body.find(R"("id":"sim-model")"), std::string::npos);
}

TEST(SimServer, KvEventsReconstructTheCachedBlockSet) {
  auto o = test_options(2);
  o.engine.num_gpu_blocks = 24;  // small: the workload forces evictions
  SimCluster c(o);
  ASSERT_TRUE(c.start());
  std::mutex mu;
  std::map<std::string, std::multiset<std::uint64_t>> seen;
  kv_events::SubscriberCallbacks cb;
  cb.on_batch = [&](const std::string& id, std::uint64_t, const kv_events::EventBatch& b) {
    std::lock_guard l(mu);
    auto& set = seen[id];
    for (const auto& e : b.events) {
      if (auto* s = std::get_if<kv_events::BlockStored>(&e)) {
        for (auto h : s->block_hashes) set.insert(h);
      } else if (auto* r = std::get_if<kv_events::BlockRemoved>(&e)) {
        for (auto h : r->block_hashes) {
          auto it = set.find(h);
          if (it != set.end()) set.erase(it);
        }
      } else {
        set.clear();
      }
    }
  };
  auto sub = kv_events::ZmqEventSubscriber::create({.topic_filter = ""}, cb);
  ASSERT_TRUE(sub);
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE((*sub)->add_engine(
        {"e" + std::to_string(i), c.endpoints()[i].kv_events, c.endpoints()[i].kv_replay}));
  }
  std::this_thread::sleep_for(200ms);  // let SUB connect (replay covers the rest)
  for (int k = 0; k < 30; ++k) {
    const int e = k % 2;
    const std::string body =
        R"({"prompt":")" + words(20 + (k * 13) % 50, k % 5) + R"(","max_tokens":2})";
    ASSERT_EQ(testing::post_json(port_of(c.endpoints()[e].url), "/v1/completions", body).status,
              200);
  }
  for (int i = 0; i < 2; ++i) {
    auto truth = c.cached_block_hashes(i);
    std::multiset<std::uint64_t> want(truth.begin(), truth.end());
    const bool equal = testing::wait_until(
        [&] {
          std::lock_guard l(mu);
          return seen["e" + std::to_string(i)] == want;
        },
        2000ms);
    EXPECT_TRUE(equal) << "engine " << i << " truth " << want.size();
  }
  EXPECT_GT(c.stats(0).num_cached_blocks, 0u);
  (*sub)->stop();
}

}  // namespace
}  // namespace kvroute::sim
