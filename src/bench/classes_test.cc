// Traffic classes in `kvroute bench` (--class): parsing, assignment, per-class outcomes, and a
// comparison whose router (a policy config with flowControl) tells the classes apart by header.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "bench/internal/compare.h"
#include "bench/internal/report.h"
#include "bench/internal/workload.h"
#include "bench/test_support.h"

namespace kvroute::bench {
namespace {

TEST(TrafficClass, ParsesNameShareAndHeaders) {
  auto c = parse_traffic_class("high:0.25:x-gateway-inference-objective=critical,x-tenant=a b");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->name, "high");
  EXPECT_DOUBLE_EQ(c->share, 0.25);
  ASSERT_EQ(c->headers.size(), 2u);
  EXPECT_EQ(c->headers[0].first, "x-gateway-inference-objective");
  EXPECT_EQ(c->headers[0].second, "critical");
  EXPECT_EQ(c->headers[1].second, "a b");
  auto bare = parse_traffic_class("all:3");
  ASSERT_TRUE(bare);
  EXPECT_TRUE(bare->headers.empty());
  for (const char* bad : {"", "name", ":1", "x:0", "x:-1", "x:abc", "x:1:novalue", "x:1:=v",
                          "x:1:bad header=v", "x:nan"}) {
    auto r = parse_traffic_class(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_NE(r.error().message.find("NAME:SHARE"), std::string::npos) << bad;
    }
  }
}

TEST(TrafficClass, SessionsSplitByShareDeterministicallyAndCarryTheHeaders) {
  WorkloadOptions o;
  o.sp_groups = 20;
  o.sp_prompts_per_group = 50;  // 1,000 sessions
  o.classes = {{"heavy", 9, {{"x-fairness", "heavy"}}}, {"light", 1, {{"x-fairness", "light"}}}};
  auto a = make_workload(o);
  auto b = make_workload(o);
  ASSERT_TRUE(a && b);
  std::map<std::string, int> n;
  for (std::size_t i = 0; i < a->sessions.size(); ++i) {
    const auto& s = a->sessions[i];
    ++n[s.cls];
    ASSERT_EQ(s.headers.size(), 1u);
    EXPECT_EQ(s.headers[0].second, s.cls);
    EXPECT_EQ(s.cls, b->sessions[i].cls);  // same seed, same split
  }
  EXPECT_EQ(n["heavy"] + n["light"], 1000);
  EXPECT_GT(n["light"], 60);  // 100 expected; 4 standard deviations either side
  EXPECT_LT(n["light"], 140);
  // Classes do not change the text or the order of the sessions.
  WorkloadOptions plain = o;
  plain.classes.clear();
  auto c = make_workload(plain);
  ASSERT_TRUE(c);
  ASSERT_EQ(c->sessions.size(), a->sessions.size());
  EXPECT_EQ(render_prompt(c->sessions[7].turns[0]), render_prompt(a->sessions[7].turns[0]));
  EXPECT_TRUE(c->sessions[7].cls.empty());
}

TEST(Workload, OutputLengthsFixedOrDrawnWithTheMean) {
  WorkloadOptions o;
  o.sp_groups = 10;
  o.sp_prompts_per_group = 100;
  o.output_len = 64;
  for (const char* dist : {"fixed", "uniform", "exponential"}) {
    o.output_len_dist = dist;
    auto wl = make_workload(o);
    ASSERT_TRUE(wl) << dist;
    double sum = 0;
    std::uint32_t lo = 1u << 30, hi = 0;
    for (const auto& s : wl->sessions) {
      const auto n = s.turns[0].max_tokens;
      sum += n;
      lo = std::min(lo, n);
      hi = std::max(hi, n);
    }
    const double mean = sum / static_cast<double>(wl->sessions.size());
    if (std::string(dist) == "fixed") {
      EXPECT_EQ(lo, 64u);
      EXPECT_EQ(hi, 64u);
    } else {
      EXPECT_NEAR(mean, 64, 64 * 0.12) << dist;  // 1,000 draws
      EXPECT_GE(lo, 1u);
      EXPECT_LT(lo, 16u) << dist;
      EXPECT_GT(hi, 100u) << dist;
      EXPECT_LE(hi, std::string(dist) == "uniform" ? 127u : 512u) << dist;
    }
  }
  o.output_len_dist = "pareto";
  auto bad = make_workload(o);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("pareto"), std::string::npos);
}

TEST(TrafficClass, SummaryCountsEachOutcomePerClass) {
  RunResult r;
  r.wall_s = 2;
  auto add = [&](std::string cls, Outcome o, int status, double ttft, double queue_ms) {
    RequestRecord rec;
    rec.cls = std::move(cls);
    rec.outcome = o;
    rec.status = status;
    rec.ttft_s = ttft;
    rec.queue_ms = queue_ms;
    r.records.push_back(rec);
  };
  add("high", Outcome::kOk, 200, 0.010, 0);
  add("high", Outcome::kOk, 200, 0.030, 12);
  add("low", Outcome::kHttpError, 429, -1, -1);
  add("low", Outcome::kHttpError, 503, -1, -1);
  add("low", Outcome::kHttpError, 500, -1, -1);
  add("low", Outcome::kTransportError, 0, -1, -1);
  add("low", Outcome::kCancelled, 0, -1, -1);
  add("low", Outcome::kOk, 200, 0.5, 400);
  add("", Outcome::kOk, 200, 0.5, -1);  // no class: not in any class
  const auto cs = class_summaries(r);
  ASSERT_EQ(cs.size(), 2u);
  EXPECT_EQ(cs[0].name, "high");
  EXPECT_EQ(cs[0].sent, 2u);
  EXPECT_EQ(cs[0].completed, 2u);
  EXPECT_DOUBLE_EQ(cs[0].goodput, 1.0);
  EXPECT_NEAR(cs[0].ttft.p99, 0.030, 0.001);
  EXPECT_NEAR(cs[0].queue_ms.p99, 12, 0.5);
  EXPECT_EQ(cs[1].name, "low");
  EXPECT_EQ(cs[1].sent, 6u);
  EXPECT_EQ(cs[1].completed, 1u);
  EXPECT_EQ(cs[1].rejected_429, 1u);
  EXPECT_EQ(cs[1].rejected_503, 1u);
  EXPECT_EQ(cs[1].failed_other, 2u);
  EXPECT_EQ(cs[1].cancelled, 1u);
  const std::string lines = class_lines("p", cs);
  EXPECT_NE(lines.find("class p/low: 6 sent, 1 ok (0.50/s), 1 x 429, 1 x 503, 2 failed"),
            std::string::npos)
      << lines;
  const std::string csv = records_csv("p", r, true);
  EXPECT_NE(csv.find(",class,queue_ms\n"), std::string::npos) << csv;
  EXPECT_NE(csv.find(",high,12\n"), std::string::npos) << csv;
}

TEST(TrafficClass, ARouterWithFlowControlTellsTheClassesApartByHeader) {
  // A policy config with flowControl only (on the kvroute preset): tenant "limited" has a token
  // bucket of one request per 100 s; tenant "free" none. One user sends the sessions back to back:
  // the limited tenant's requests after its first are refused (429), the free tenant's all pass.
  const auto dir = std::filesystem::temp_directory_path() / "kvroute_classes_test";
  std::filesystem::create_directories(dir);
  {
    std::ofstream f(dir / "flow.yaml");
    f << "routing: {policy: kvroute}\n"
         "flowControl:\n"
         "  enabled: true\n"
         "  rateLimits:\n"
         "    tenants:\n"
         "      - {name: limited, requestsPerSecond: 0.01, burst: 100s}\n";
  }
  WorkloadOptions wo;
  wo.sp_groups = 2;
  wo.sp_prompts_per_group = 8;
  wo.sp_system_len = 32;
  wo.sp_question_len = 8;
  wo.output_len = 4;
  wo.classes = {{"limited", 1, {{"x-gateway-inference-fairness-id", "limited"}}},
                {"free", 1, {{"x-gateway-inference-fairness-id", "free"}}}};
  auto wl = make_workload(wo);
  ASSERT_TRUE(wl);
  CompareOptions co = test_support::one_user_on_two_engines();
  co.policies = {"flow"};
  co.policy_configs = {{"flow", (dir / "flow.yaml").string()}};
  auto runs = run_compare(*wl, co);
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(runs) << runs.error().message;
  ASSERT_EQ(runs->size(), 1u);
  ASSERT_TRUE((*runs)[0].error.empty()) << (*runs)[0].error;
  const auto& cs = (*runs)[0].summary.classes;
  ASSERT_EQ(cs.size(), 2u);
  std::map<std::string, ClassSummary> by;
  for (const auto& c : cs) by[c.name] = c;
  ASSERT_GE(by["limited"].sent, 2u);
  EXPECT_EQ(by["limited"].completed, 1u);
  EXPECT_EQ(by["limited"].rejected_429, by["limited"].sent - 1);
  EXPECT_EQ(by["free"].completed, by["free"].sent);
  EXPECT_EQ(by["free"].rejected_429, 0u);
}

}  // namespace
}  // namespace kvroute::bench
