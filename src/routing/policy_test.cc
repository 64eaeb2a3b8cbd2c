#include "routing/policy.h"

#include <gtest/gtest.h>

#include <map>

namespace kvroute::routing {
namespace {

struct Fixture {
  std::vector<std::unique_ptr<Backend>> owned;
  std::vector<Backend*> ptrs;
  explicit Fixture(int n) {
    for (int i = 0; i < n; ++i) {
      owned.push_back(std::make_unique<Backend>(i, "b" + std::to_string(i), "http://127.0.0.1:1",
                                                http::Endpoint{"127.0.0.1", 1}));
      ptrs.push_back(owned.back().get());
    }
  }
};

std::unique_ptr<Policy> make(const std::string& name, Fixture& f) {
  config::Config c;
  c.policy = name;
  auto p = make_policy(c, f.ptrs);
  EXPECT_TRUE(p) << name;
  return std::move(*p);
}

TEST(Policies, RoundRobinCycles) {
  Fixture f(3);
  auto p = make("round-robin", f);
  RouteRequest r;
  for (int i = 0; i < 6; ++i) EXPECT_EQ(p->pick(r, f.ptrs).backend->index, i % 3);
}

TEST(Policies, LeastInflightPicksTheIdleOne) {
  Fixture f(3);
  auto p = make("least-inflight", f);
  f.ptrs[0]->inflight = 5;
  f.ptrs[1]->inflight = 1;
  f.ptrs[2]->inflight = 3;
  RouteRequest r;
  for (int i = 0; i < 5; ++i) EXPECT_EQ(p->pick(r, f.ptrs).backend->index, 1);
  // Ties rotate.
  f.ptrs[0]->inflight = 1;
  std::map<int, int> seen;
  for (int i = 0; i < 10; ++i) seen[p->pick(r, f.ptrs).backend->index]++;
  EXPECT_EQ(seen.size(), 2u);
}

TEST(Policies, RandomSpreads) {
  Fixture f(4);
  auto p = make("random", f);
  std::map<int, int> seen;
  RouteRequest r;
  for (int i = 0; i < 400; ++i) seen[p->pick(r, f.ptrs).backend->index]++;
  EXPECT_EQ(seen.size(), 4u);
  for (auto [k, v] : seen) EXPECT_GT(v, 40);
}

TEST(Policies, UnknownNameIsAnError) {
  Fixture f(1);
  config::Config c;
  c.policy = "nope";
  auto p = make_policy(c, f.ptrs);
  ASSERT_FALSE(p);
  EXPECT_NE(p.error().message.find("round-robin"), std::string::npos);
}

}  // namespace
}  // namespace kvroute::routing
