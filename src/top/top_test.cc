#include "top/top.h"

#include <gtest/gtest.h>

#include <cmath>

namespace kvroute::top {
namespace {

// A frame from two snapshots one second apart: rates, the TTFT quantiles from bucket deltas, the
// engines' hit rate over the interval, and who is ejected.
TEST(Top, RendersRatesQuantilesAndHitRates) {
  Options o;
  o.routers = {"http://r:9090"};
  Snapshot a, b;
  a.at = std::chrono::steady_clock::now();
  b.at = a.at + std::chrono::seconds(2);
  auto& ra = a.routers["http://r:9090"];
  auto& rb = b.routers["http://r:9090"];
  ra.up = rb.up = true;
  ra.requests = 100;
  rb.requests = 300;  // 100/s
  ra.errors = 0;
  rb.errors = 10;  // 5/s
  ra.ttfb_buckets = {{0.01, 0}, {0.1, 0}, {INFINITY, 0}};
  rb.ttfb_buckets = {{0.01, 50}, {0.1, 100}, {INFINITY, 100}};  // p50 at the 0.01 s bound
  ra.decisions = {{"prefix-hit", 10}, {"load-balance", 10}};
  rb.decisions = {{"prefix-hit", 160}, {"load-balance", 60}};  // 150 vs 50 -> 75% / 25%
  rb.healthy = {{"http://e0:8000", 1}, {"http://e1:8000", 0}};
  rb.inflight = {{"http://e0:8000", 7}, {"http://e1:8000", 0}};
  auto& ea = a.engines["http://e0:8000"];
  auto& eb = b.engines["http://e0:8000"];
  ea.up = eb.up = true;
  ea.hits = 0;
  ea.queries = 0;
  eb.hits = 800;
  eb.queries = 1000;
  eb.running = 3;
  eb.kv_usage = 0.25;
  b.engines["http://e1:8000"].up = true;
  const std::string f = render(o, a, b, 140);
  EXPECT_NE(f.find("100.0"), std::string::npos) << f;
  EXPECT_NE(f.find("5.0"), std::string::npos) << f;
  EXPECT_NE(f.find("10.0 ms"), std::string::npos) << f;
  EXPECT_NE(f.find("prefix-hit 75%"), std::string::npos) << f;
  EXPECT_NE(f.find("load-balance 25%"), std::string::npos) << f;
  EXPECT_NE(f.find("80.0%"), std::string::npos) << f;
  EXPECT_NE(f.find("25.0%"), std::string::npos) << f;
  EXPECT_NE(f.find("ejected"), std::string::npos) << f;
}

}  // namespace
}  // namespace kvroute::top
