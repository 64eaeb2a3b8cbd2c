#include "flow/queues.h"

#include <gtest/gtest.h>

#include <deque>
#include <string>
#include <vector>

namespace kvroute::flow {
namespace {

// Items live in a deque (stable addresses), as waiters own theirs.
struct Items {
  std::deque<QueueItem> all;
  QueueItem* make(int priority, std::string tenant, std::size_t bytes = 100, double in = 100,
                  double out = 10, std::int64_t deadline = 0) {
    QueueItem& it = all.emplace_back();
    it.priority = priority;
    it.fairness_id = std::move(tenant);
    it.bytes = bytes;
    it.input_tokens = in;
    it.output_tokens = out;
    it.deadline_ms = deadline;
    return &it;
  }
};

// Dispatches up to `slots` items; returns their tenants in order.
std::vector<std::string> drain(Queues& q, int slots) {
  std::vector<std::string> order;
  q.dispatch([&](QueueItem& it) {
    if (slots == 0) return false;
    --slots;
    order.push_back(std::to_string(it.priority) + ":" + it.fairness_id);
    return true;
  });
  return order;
}

TEST(Queues, HigherBandsGoFirst) {
  Queues q({}, BandOptions{});
  Items items;
  q.push(items.make(0, "a"));
  q.push(items.make(-1, "b"));
  q.push(items.make(10, "c"));
  q.push(items.make(0, "d"));
  EXPECT_TRUE(q.waiting_at_or_above(10));
  EXPECT_FALSE(q.waiting_at_or_above(11));
  EXPECT_EQ(drain(q, 2), (std::vector<std::string>{"10:c", "0:a"}));
  EXPECT_EQ(drain(q, 10), (std::vector<std::string>{"0:d", "-1:b"}));
  EXPECT_EQ(q.size(), 0u);
  EXPECT_EQ(q.bytes(), 0u);
}

TEST(Queues, RoundRobinAlternatesTenantsSoABurstDoesNotStarveOthers) {
  Queues q({}, BandOptions{});
  Items items;
  for (int i = 0; i < 5; ++i) q.push(items.make(0, "heavy"));
  q.push(items.make(0, "light1"));
  q.push(items.make(0, "light2"));
  EXPECT_EQ(drain(q, 4), (std::vector<std::string>{"0:heavy", "0:light1", "0:light2", "0:heavy"}));
  EXPECT_EQ(q.size(0), 3u);
}

TEST(Queues, ACycleWithNoRoomDoesNotPassTheTurn) {
  Queues q({}, BandOptions{});
  Items items;
  q.push(items.make(0, "a"));
  q.push(items.make(0, "b"));
  EXPECT_TRUE(drain(q, 0).empty());  // nothing had room
  EXPECT_EQ(drain(q, 1), std::vector<std::string>{"0:a"});
}

TEST(Queues, VtcServesTheTenantWithFewestWeightedTokensAndLiftsNewcomers) {
  BandOptions vtc;
  vtc.fairness = Fairness::kVtc;
  Queues q({}, vtc, VtcWeights{1, 2});
  Items items;
  // Heavy sends big prompts; light small ones: after one each, light goes again until even.
  for (int i = 0; i < 3; ++i) q.push(items.make(0, "heavy", 100, 1000, 0));
  for (int i = 0; i < 3; ++i) q.push(items.make(0, "light", 100, 300, 0));
  EXPECT_EQ(drain(q, 5),
            (std::vector<std::string>{"0:heavy", "0:light", "0:light", "0:light", "0:heavy"}));
  EXPECT_DOUBLE_EQ(q.counter(0, "heavy"), 2000);
  EXPECT_DOUBLE_EQ(q.counter(0, "light"), 900);  // idle, remembered above the floor
  // A newcomer starts at the lowest active counter (heavy's 2000), not at 0.
  q.push(items.make(0, "new", 100, 10, 0));
  EXPECT_DOUBLE_EQ(q.counter(0, "new"), 2000);
  // Light comes back: lifted too, it does not bank its idle time.
  q.push(items.make(0, "light", 100, 10, 0));
  EXPECT_DOUBLE_EQ(q.counter(0, "light"), 2000);
}

TEST(Queues, GlobalStrictIsOldestFirst) {
  BandOptions strict;
  strict.fairness = Fairness::kGlobalStrict;
  Queues q({}, strict);
  Items items;
  q.push(items.make(0, "a"));
  q.push(items.make(0, "a"));
  q.push(items.make(0, "b"));
  EXPECT_EQ(drain(q, 3), (std::vector<std::string>{"0:a", "0:a", "0:b"}));
}

TEST(Queues, AFullPoolIsSkippedForTheCycleAndOtherPoolsGoOn) {
  Queues q({}, BandOptions{});
  Items items;
  auto in = [](QueueItem* it, const char* pool) {
    it->pool = pool;
    return it;
  };
  q.push(in(items.make(5, "x"), "model-a"));  // model-a's engines have no room
  q.push(in(items.make(5, "x2"), "model-a"));
  q.push(in(items.make(5, "y"), "model-b"));
  q.push(in(items.make(0, "z"), "model-b"));
  q.push(in(items.make(0, "w"), "model-a"));
  std::vector<std::string> order;
  int offered_a = 0;
  q.dispatch([&](QueueItem& it) {
    if (it.pool == "model-a") {
      ++offered_a;
      return false;
    }
    order.push_back(it.fairness_id);
    return true;
  });
  EXPECT_EQ(offered_a, 1);  // once per cycle, not once per queued request of the pool
  EXPECT_EQ(order, (std::vector<std::string>{"y", "z"}));
  EXPECT_EQ(q.size(), 3u);
}

TEST(Queues, RoomThatFreesDuringACycleGoesToTheHigherBandFirst) {
  // The high band's head finds no room; room frees while the cycle goes on: a lower band of the
  // same pool must not take it (it is the high band's, next cycle).
  Queues q({}, BandOptions{});
  Items items;
  q.push(items.make(10, "high"));
  for (int i = 0; i < 50; ++i) q.push(items.make(0, "low" + std::to_string(i)));
  int tries = 0;
  std::vector<std::string> order;
  auto room_after_first_try = [&](QueueItem& it) {
    if (++tries == 1) return false;
    order.push_back(it.fairness_id);
    return true;
  };
  EXPECT_EQ(q.dispatch(room_after_first_try), 0u);
  EXPECT_EQ(tries, 1);
  EXPECT_EQ(q.dispatch([&](QueueItem& it) {
    order.push_back(it.fairness_id);
    return order.size() <= 1;
  }),
            1u);
  EXPECT_EQ(order, (std::vector<std::string>{"high", "low0"}));
}

TEST(Queues, LimitsPerBandAndOverall) {
  BandOptions small;
  small.priority = 1;
  small.max_requests = 2;
  small.max_bytes = 250;
  Queues q({small}, BandOptions{}, {}, /*max_requests=*/4);
  Items items;
  EXPECT_EQ(q.push(items.make(1, "a", 100)), Push::kQueued);
  EXPECT_EQ(q.push(items.make(1, "a", 200)), Push::kBandFull);  // bytes
  EXPECT_EQ(q.push(items.make(1, "b", 100)), Push::kQueued);
  EXPECT_EQ(q.push(items.make(1, "c", 10)), Push::kBandFull);  // requests
  EXPECT_EQ(q.push(items.make(0, "d")), Push::kQueued);
  EXPECT_EQ(q.push(items.make(0, "e")), Push::kQueued);
  EXPECT_EQ(q.push(items.make(0, "f")), Push::kGlobalFull);
}

TEST(Queues, RemoveAndExpire) {
  Queues q({}, BandOptions{});
  Items items;
  auto* a = items.make(0, "a", 100, 1, 1, /*deadline=*/1000);
  auto* b = items.make(0, "b", 100, 1, 1, /*deadline=*/5000);
  auto* c = items.make(0, "c");
  for (auto* it : {a, b, c}) q.push(it);
  EXPECT_TRUE(q.remove(c));
  EXPECT_FALSE(q.remove(c));  // not queued any more
  auto gone = q.expire(1000);
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_EQ(gone[0], a);
  EXPECT_FALSE(q.remove(a));
  EXPECT_EQ(q.size(), 1u);
  EXPECT_EQ(drain(q, 5), (std::vector<std::string>{"0:b"}));
}

}  // namespace
}  // namespace kvroute::flow
