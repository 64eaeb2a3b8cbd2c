#include "metrics/registry.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <thread>

#include "testing/subprocess.h"

namespace kvroute::metrics {
namespace {

TEST(Registry, RendersCountersGaugesHistograms) {
  Registry reg;
  auto& c = reg.counter("kvroute_requests_total", "Requests.", {"endpoint", "code"});
  auto& g = reg.gauge("kvroute_backend_inflight", "In flight.", {"backend"});
  auto& h = reg.histogram("kvroute_latency_seconds", "Latency.", {0.1, 1}, {"endpoint"});
  c.with({"/v1/completions", "200"}).inc();
  c.with({"/v1/completions", "200"}).inc(2);
  g.with({"http://a:1"}).set(4);
  h.with({"/x"}).observe(0.05);
  h.with({"/x"}).observe(0.5);
  h.with({"/x"}).observe(5);
  const std::string text = reg.render();
  EXPECT_NE(text.find("kvroute_requests_total{endpoint=\"/v1/completions\",code=\"200\"} 3\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("kvroute_backend_inflight{backend=\"http://a:1\"} 4\n"), std::string::npos);
  EXPECT_NE(text.find("kvroute_latency_seconds_bucket{endpoint=\"/x\",le=\"0.1\"} 1\n"),
            std::string::npos);
  EXPECT_NE(text.find("kvroute_latency_seconds_bucket{endpoint=\"/x\",le=\"1\"} 2\n"),
            std::string::npos);
  EXPECT_NE(text.find("kvroute_latency_seconds_bucket{endpoint=\"/x\",le=\"+Inf\"} 3\n"),
            std::string::npos);
  EXPECT_NE(text.find("kvroute_latency_seconds_count{endpoint=\"/x\"} 3\n"), std::string::npos);
}

TEST(Registry, ConcurrentIncrementsAreNotLost) {
  Registry reg;
  auto& c = reg.counter("x_total", "X.", {"t"});
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) c.with({"a"}).inc();
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(c.with({"a"}).value(), 40000);
}

// Counters and histograms are sharded per thread: more threads than shards, each updating the same
// cells, lose nothing, and the rendered histogram adds the shards up bucket by bucket.
TEST(Registry, ShardedCellsAddUpAcrossMoreThreadsThanShards) {
  Registry reg;
  auto& c = reg.counter("y_total", "Y.");
  auto& h = reg.histogram("y_seconds", "Y.", {0.1, 1});
  auto& counter = c.with({});
  auto& hist = h.with({});
  std::vector<std::thread> ts;
  for (int t = 0; t < 20; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < 1000; ++i) {
        counter.inc(2);
        hist.observe(t % 2 == 0 ? 0.05 : 5.0);  // even threads in the first bucket, odd above both
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(counter.value(), 40000);
  EXPECT_EQ(hist.count(), 20000u);
  EXPECT_EQ(hist.cumulative(0), 10000u);
  EXPECT_EQ(hist.cumulative(1), 10000u);
  EXPECT_NEAR(hist.sum(), 10000 * 0.05 + 10000 * 5.0, 1e-6);
  const std::string text = reg.render();
  EXPECT_NE(text.find("y_seconds_bucket{le=\"0.1\"} 10000"), std::string::npos) << text;
  EXPECT_NE(text.find("y_seconds_bucket{le=\"+Inf\"} 20000"), std::string::npos) << text;
  EXPECT_NE(text.find("y_total 40000"), std::string::npos) << text;
}

TEST(Registry, ExpositionPassesPromtool) {
  Registry reg;
  reg.counter("kvroute_requests_total", "Requests.", {"endpoint"}).with({"a\"b\\c"}).inc();
  reg.histogram("kvroute_ttfb_seconds", "TTFB.", latency_buckets()).with({}).observe(0.2);
  reg.gauge("kvroute_ready", "Ready.").with({}).set(1);
  auto r = testing::run_command("promtool check metrics", reg.render());
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

}  // namespace
}  // namespace kvroute::metrics
