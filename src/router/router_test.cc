// Router::pick_with_room under each flowControl.pickAmong (ADR 0027), on two engines of which only
// the second has room (fresh metrics); the first's metrics were never scraped (no room). The
// round-robin policy's first pick is the first engine.
#include "router/router.h"

#include <gtest/gtest.h>

#include <string>

#include "metrics/registry.h"

namespace kvroute::router {
namespace {

std::unique_ptr<Router> two_engines(metrics::Registry& reg, const std::string& pick_among) {
  config::Config c;
  c.log_level = "warn";
  c.policy = "round-robin";
  c.flow_control.enabled = true;
  c.flow_control.pick_among = pick_among;
  for (int i = 0; i < 2; ++i) {
    config::BackendConfig b;
    b.url = "http://10.0.0." + std::to_string(i + 1) + ":8000";
    b.name = "e" + std::to_string(i);
    b.models = {"m"};
    c.backends.push_back(b);
  }
  auto r = Router::create(std::move(c), reg);
  EXPECT_TRUE(r) << r.error().message;
  if (!r) return nullptr;
  (*r)->backend_list()[1]->scraped_at_ms.store(routing::steady_now_ms());  // only e1 has room
  return std::move(*r);
}

struct Try {
  std::string engine;  // "" when the request waits
  std::size_t candidates_left = 0;
};

Try try_once(Router& r) {
  routing::RouteRequest rr;
  const auto list = r.backend_list();
  Candidates cs(list.begin(), list.end());
  Assignment a = r.pick_with_room(rr, cs, routing::steady_now_ms());
  return {a ? a.backend()->name : "", cs.size()};
}

TEST(PickAmong, BestWaitsForThePoliciesPickWithRoomSpillsAllJoinsTheQueue) {
  metrics::Registry reg_best, reg_room, reg_all;
  auto best = two_engines(reg_best, "best");
  auto room = two_engines(reg_room, "with-room");
  auto all = two_engines(reg_all, "all");
  ASSERT_TRUE(best && room && all);
  // best: the policy wants e0, which has no room: the request waits, nothing is taken.
  const Try b = try_once(*best);
  EXPECT_EQ(b.engine, "");
  EXPECT_EQ(b.candidates_left, 2u);
  EXPECT_EQ(best->backend_list()[0]->inflight.load(), 0);
  // with-room: only e1 is offered to the policy.
  const Try w = try_once(*room);
  EXPECT_EQ(w.engine, "e1");
  EXPECT_EQ(w.candidates_left, 1u);
  // all: e1 has room, so the pool is not saturated, and the policy's e0 wins though full.
  const Try a = try_once(*all);
  EXPECT_EQ(a.engine, "e0");
  // None has room: every mode waits.
  best->backend_list()[1]->scraped_at_ms.store(-1);
  room->backend_list()[1]->scraped_at_ms.store(-1);
  all->backend_list()[1]->scraped_at_ms.store(-1);
  for (auto* r : {best.get(), room.get(), all.get()}) EXPECT_EQ(try_once(*r).engine, "");
}

}  // namespace
}  // namespace kvroute::router
