// `kvroute demo` (ADR 0203): a small run end to end, the verdict line and the speed it picks.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "bench/bench_command.h"
#include "bench/internal/report.h"

namespace kvroute::bench {
namespace {

TEST(Demo, SmallDemoMeasuresCapacityAndPrintsTheTableAndVerdict) {
  ::testing::internal::CaptureStdout();
  const int rc =
      run_demo({.engines = 2, .time_scale = 20, .seconds = 2, .scale = 0.25, .think_s = 0});
  const std::string out = ::testing::internal::GetCapturedStdout();
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("capacity: "), std::string::npos) << out;
  EXPECT_NE(out.find("offered: 80% of it, open loop"), std::string::npos) << out;
  for (const char* p : {"round-robin", "session-affinity", "sglang-cache-aware", "kvroute"})
    EXPECT_NE(out.find(fmt::format("| {} |", p)), std::string::npos) << p << "\n" << out;
  EXPECT_EQ(out.find("| kvroute-approx |"), std::string::npos) << out;
  EXPECT_NE(out.find("kvroute: "), std::string::npos) << out;
  EXPECT_NE(out.find("among policies with imbalance <= 1.25"), std::string::npos) << out;
  EXPECT_EQ(out.find("/0 |"), std::string::npos) << out;  // every policy completed requests
}

Summary demo_row(std::string label, double p50_ms, double p99_ms, double imbalance) {
  Summary s;
  s.label = std::move(label);
  s.ttft.p50 = p50_ms / 1000;
  s.ttft.p99 = p99_ms / 1000;
  s.ttft.n = 100;
  s.imbalance = imbalance;
  s.hit_rate = 0.5;
  return s;
}

TEST(Demo, VerdictComparesOnlyBalancedPolicies) {
  // An unbalanced policy with lower latency does not count against kvroute.
  const std::vector<Summary> rows = {demo_row("round-robin", 30, 90, 1.0),
                                     demo_row("sglang-cache-aware", 5, 20, 2.5),
                                     demo_row("kvroute", 10, 40, 1.05)};
  const auto v = demo_verdict(rows, "kvroute", 1.25);
  EXPECT_EQ(v.find("kvroute: lowest TTFT p50 and p99"), 0u) << v;
  EXPECT_NE(v.find("next best round-robin 30.0 ms"), std::string::npos) << v;
  // Beaten on p99 by a balanced policy: said so.
  auto rows2 = rows;
  rows2.push_back(demo_row("gie-prefix", 12, 35, 1.1));
  const auto v2 = demo_verdict(rows2, "kvroute", 1.25);
  EXPECT_EQ(v2.find("kvroute: NOT the lowest"), 0u) << v2;
  EXPECT_NE(v2.find("p99 40.0 ms (next best gie-prefix 35.0 ms)"), std::string::npos) << v2;
  // kvroute itself unbalanced: never "lowest".
  auto rows3 = rows;
  rows3[2].imbalance = 1.4;
  EXPECT_EQ(demo_verdict(rows3, "kvroute", 1.25).find("kvroute: NOT"), 0u);
  EXPECT_EQ(demo_verdict({}, "kvroute", 1.25), "kvroute: no result");
}

TEST(Demo, TimeScaleFollowsTheFreeCpu) {
  EXPECT_LT(demo_time_scale(0.5, 6), demo_time_scale(2, 6));
  EXPECT_LE(demo_time_scale(2, 6), demo_time_scale(16, 6));
  EXPECT_EQ(demo_time_scale(0.01, 60), 0.5);
  EXPECT_EQ(demo_time_scale(1.9, 6), 1.25);
  EXPECT_LE(demo_time_scale(1000, 1), 4.0);
}

}  // namespace
}  // namespace kvroute::bench
