// Router::pick_with_room under each flowControl.pickAmong (ADR 0027), on two engines with fresh
// metrics of which only the second has room (the first reports a queue). The round-robin policy's
// first pick is the first engine.
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
  c.flow_control.metrics_staleness = std::chrono::milliseconds(60000);
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
  for (auto* b : (*r)->backend_list()) b->scraped_at_ms.store(routing::steady_now_ms());
  (*r)->backend_list()[0]->scraped_waiting.store(10);  // e0: a queue over the threshold
  return std::move(*r);
}

struct Try {
  std::string engine;  // "" when the request waits
  std::size_t candidates_left = 0;
};

Try try_once(Router& r, std::int64_t waited_ms = -1) {
  routing::RouteRequest rr;
  const auto list = r.backend_list();
  Candidates cs(list.begin(), list.end());
  const auto now = routing::steady_now_ms();
  Assignment a = r.pick_with_room(rr, cs, now, waited_ms >= 0 ? now - waited_ms : -1);
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
  for (auto* r : {best.get(), room.get(), all.get()}) {
    r->backend_list()[1]->scraped_waiting.store(10);
    EXPECT_EQ(try_once(*r).engine, "");
  }
}

TEST(PickAmong, BestSpillsAfterItsLongestWaitAndNeverWaitsForAStaleEngine) {
  metrics::Registry reg;
  auto best = two_engines(reg, "best");
  ASSERT_TRUE(best);
  // Waited less than the bound: still waits for e0 (the round-robin pick; each try advances it,
  // so each case starts from a fresh router).
  EXPECT_EQ(try_once(*best, Router::kBestMaxWaitMs - 100).engine, "");
  metrics::Registry reg2;
  auto waited = two_engines(reg2, "best");
  ASSERT_TRUE(waited);
  EXPECT_EQ(try_once(*waited, Router::kBestMaxWaitMs).engine, "e1");  // then as with-room
  // An engine never scraped (just discovered, or its /metrics fails) is not waited for.
  metrics::Registry reg3;
  auto stale = two_engines(reg3, "best");
  ASSERT_TRUE(stale);
  stale->backend_list()[0]->scraped_at_ms.store(-1);
  stale->backend_list()[0]->scraped_waiting.store(0);
  EXPECT_EQ(try_once(*stale).engine, "e1");
}

}  // namespace
}  // namespace kvroute::router
