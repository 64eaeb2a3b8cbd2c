#include "flow/saturation.h"

#include <gtest/gtest.h>

#include <vector>

namespace kvroute::flow {
namespace {

constexpr std::int64_t kNow = 100000;

EngineSnapshot fresh(double waiting, double kv, int unstarted = 0) {
  EngineSnapshot e;
  e.scraped = true;
  e.scraped_at_ms = kNow - 500;
  e.waiting = waiting;
  e.kv_usage = kv;
  e.unstarted_since_scrape = unstarted;
  return e;
}

TEST(Saturation, RoomUnderBothThresholds) {
  const SaturationOptions o;  // 5 waiting, 0.8 KV
  EXPECT_EQ(judge(o, fresh(4, 0.79), kNow), Room::kRoom);
  EXPECT_EQ(judge(o, fresh(5, 0.1), kNow), Room::kQueueFull);
  EXPECT_EQ(judge(o, fresh(0, 0.8), kNow), Room::kKvFull);
  EXPECT_DOUBLE_EQ(saturation(o, fresh(4, 0.4), kNow), 0.8);
  EXPECT_DOUBLE_EQ(saturation(o, fresh(1, 0.4), kNow), 0.5);
}

TEST(Saturation, StaleOrMissingMetricsFailClosed) {
  const SaturationOptions o;
  EngineSnapshot never;
  EXPECT_EQ(judge(o, never, kNow), Room::kStale);
  EXPECT_DOUBLE_EQ(saturation(o, never, kNow), 1.0);
  auto old = fresh(0, 0);
  old.scraped_at_ms = kNow - 3001;
  EXPECT_EQ(judge(o, old, kNow), Room::kStale);
  old.scraped_at_ms = kNow - 3000;
  EXPECT_EQ(judge(o, old, kNow), Room::kRoom);
}

TEST(Saturation, DispatchesSinceTheScrapeCountAsWaiting) {
  // The engine said it was idle and its running limit is not known yet; the router has since
  // sent it requests that have not started: a burst between two scrapes fills it at the
  // threshold, not never.
  const SaturationOptions o;
  EXPECT_EQ(judge(o, fresh(0, 0.1, 4), kNow), Room::kRoom);
  EXPECT_EQ(judge(o, fresh(0, 0.1, 5), kNow), Room::kQueueFull);
  EXPECT_EQ(judge(o, fresh(2, 0.1, 3), kNow), Room::kQueueFull);
}

TEST(Saturation, UnstartedDispatchesFillFreeRunningSlotsFirst) {
  // An engine known to run 8 at once runs 5: three more start at its next step, the rest wait.
  SaturationOptions o;
  auto e = fresh(0, 0.1, 7);
  e.running = 5;
  e.running_limit = 8;
  EXPECT_DOUBLE_EQ(estimated_waiting(o, e), 4);  // 7 sent - 3 free slots
  EXPECT_EQ(judge(o, e, kNow), Room::kRoom);
  e.unstarted_since_scrape = 8;
  EXPECT_EQ(judge(o, e, kNow), Room::kQueueFull);  // 5 beyond the free slots
  // A scraped queue means no free slot, whatever the limit.
  e = fresh(1, 0.1, 4);
  e.running = 2;
  e.running_limit = 8;
  EXPECT_DOUBLE_EQ(estimated_waiting(o, e), 5);
  // The configured max_num_seqs wins over the learned limit.
  o.engine_max_running = 256;
  e = fresh(0, 0.1, 100);
  e.running = 100;
  e.running_limit = 8;
  EXPECT_DOUBLE_EQ(estimated_waiting(o, e), 0);
  EXPECT_EQ(judge(o, e, kNow), Room::kRoom);
  // Running above the limit (another router's requests): no free slot, never negative.
  o.engine_max_running = 0;
  e.running = 20;
  e.unstarted_since_scrape = 2;
  EXPECT_DOUBLE_EQ(estimated_waiting(o, e), 2);
}

TEST(Saturation, TheRunningLimitIsLearnedFromScrapes) {
  double limit = 0;
  limit = routing::learn_running_limit(limit, 0, 12);  // idle-ish: runs at least 12
  EXPECT_EQ(limit, 12);
  limit = routing::learn_running_limit(limit, 0, 3);  // fewer now: the limit stays
  EXPECT_EQ(limit, 12);
  limit = routing::learn_running_limit(limit, 0, 40);
  EXPECT_EQ(limit, 40);
  limit = routing::learn_running_limit(limit, 6, 32);  // a queue at 32 running: that is the limit
  EXPECT_EQ(limit, 32);
  limit = routing::learn_running_limit(limit, 0, 33);  // and it grows again when it can
  EXPECT_EQ(limit, 33);
}

TEST(Saturation, HeadroomAndConcurrencyCap) {
  SaturationOptions o;
  o.headroom = 0.2;  // room up to 6 waiting, 0.96 KV
  EXPECT_EQ(judge(o, fresh(5, 0.9), kNow), Room::kRoom);
  EXPECT_EQ(judge(o, fresh(6, 0.9), kNow), Room::kQueueFull);
  o.max_concurrency = 3;
  auto e = fresh(0, 0);
  e.inflight = 3;
  EXPECT_EQ(judge(o, e, kNow), Room::kConcurrencyFull);
  EXPECT_EQ(to_string(Room::kConcurrencyFull), "concurrency-full");
}

TEST(Saturation, PoolIsTheMeanAndEmptyIsSaturated) {
  const SaturationOptions o;
  const std::vector<EngineSnapshot> es = {fresh(0, 0.4), EngineSnapshot{}};
  EXPECT_DOUBLE_EQ(pool_saturation(o, es, kNow), 0.75);  // (0.5 + stale 1) / 2
  EXPECT_DOUBLE_EQ(pool_saturation(o, {}, kNow), 1.0);
}

TEST(Saturation, SnapshotReadsTheBackend) {
  routing::Backend b(0, "e0", "http://127.0.0.1:1", http::Endpoint{"127.0.0.1", 1, false});
  EXPECT_FALSE(snapshot(b).scraped);
  b.scraped_waiting.store(2);
  b.scraped_kv_usage.store(0.5);
  b.running_limit.store(16);
  b.scraped_at_ms.store(routing::steady_now_ms());
  b.unstarted_by_parity[0].store(-1);  // a race with a scrape: clamped
  b.inflight.store(7);
  const auto s = snapshot(b);
  EXPECT_TRUE(s.scraped);
  EXPECT_EQ(s.waiting, 2);
  EXPECT_EQ(s.running_limit, 16);
  EXPECT_EQ(s.unstarted_since_scrape, 0);
  EXPECT_EQ(s.inflight, 7);
  EXPECT_EQ(judge(SaturationOptions{}, s, routing::steady_now_ms()), Room::kRoom);
}

}  // namespace
}  // namespace kvroute::flow
