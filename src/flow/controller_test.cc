#include "flow/controller.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include "routing/backend.h"
#include "testing/wait.h"

namespace kvroute::flow {
namespace {

using std::chrono::milliseconds;

// Engines with `slots` free places; tickets record how they were answered.
struct Harness {
  std::atomic<int> slots{0};
  std::mutex mu;
  std::vector<std::string> answered;  // "name:outcome", in order
  std::deque<Ticket> tickets;

  bool take_slot() {
    int s = slots.load();
    while (s > 0) {
      if (slots.compare_exchange_weak(s, s - 1)) return true;
    }
    return false;
  }
  Ticket& make(const std::string& name, int priority, std::string tenant = "t") {
    Ticket& t = tickets.emplace_back();
    t.priority = priority;
    t.fairness_id = std::move(tenant);
    t.bytes = 10;
    t.try_dispatch = [this] { return take_slot(); };
    t.done = [this, name](const Admission& a) {
      std::lock_guard l(mu);
      answered.push_back(name + ":" + std::string(to_string(a.outcome)));
    };
    return t;
  }
  std::vector<std::string> answers() {
    std::lock_guard l(mu);
    return answered;
  }
  bool wait_answers(std::size_t n) {
    return testing::wait_until([&] { return answers().size() >= n; }, std::chrono::seconds(10));
  }
};

std::int64_t now() { return routing::steady_now_ms(); }

TEST(FlowController, DispatchesAtOnceWhenThereIsRoom) {
  Harness h;
  h.slots = 1;
  FlowController fc(FlowOptions{});
  const auto a = fc.admit(h.make("a", 0), now());
  EXPECT_EQ(a.outcome, Outcome::kDispatched);
  EXPECT_FALSE(a.queued);
  EXPECT_EQ(h.slots.load(), 0);
  EXPECT_TRUE(h.answers().empty());  // done() is only for queued tickets
}

TEST(FlowController, QueuesWithoutRoomAndDispatchesWhenRoomFrees) {
  Harness h;
  FlowController fc(FlowOptions{});
  auto& low = h.make("low", 0);
  auto& high = h.make("high", 10);
  EXPECT_TRUE(fc.admit(low, now()).queued);
  EXPECT_TRUE(fc.admit(high, now()).queued);
  EXPECT_EQ(fc.queued(), 2u);
  // One place frees: the higher band goes first, though it came second.
  h.slots = 1;
  fc.wake();
  ASSERT_TRUE(h.wait_answers(1));
  EXPECT_EQ(h.answers(), std::vector<std::string>{"high:dispatched"});
  EXPECT_EQ(fc.queued(0), 1u);
  h.slots = 1;
  fc.wake();
  ASSERT_TRUE(h.wait_answers(2));
  EXPECT_EQ(h.answers()[1], "low:dispatched");
  EXPECT_EQ(fc.queued(), 0u);
}

TEST(FlowController, NoOvertakingWhileOthersOfTheBandWait) {
  Harness h;
  FlowController fc(FlowOptions{});
  // The first request's engines stay full until `open` (the dispatcher may cycle meanwhile).
  std::atomic<bool> open{false};
  auto& first = h.make("first", 0);
  first.try_dispatch = [&] { return open.load() && h.take_slot(); };
  EXPECT_TRUE(fc.admit(first, now()).queued);
  // Room appears elsewhere; a newcomer of the same band does not take it ahead of the queued one.
  h.slots = 1;
  std::atomic<int> tried{0};
  auto& second = h.make("second", 0);
  second.try_dispatch = [&] {
    ++tried;
    return h.take_slot();
  };
  EXPECT_TRUE(fc.admit(second, now()).queued);
  EXPECT_EQ(tried.load(), 0);
  // A higher band is not held back by lower bands waiting.
  EXPECT_EQ(fc.admit(h.make("urgent", 5), now()).outcome, Outcome::kDispatched);
  EXPECT_EQ(h.slots.load(), 0);
  h.slots = 2;
  open = true;
  fc.wake();
  ASSERT_TRUE(h.wait_answers(2));
  EXPECT_EQ(h.answers(), (std::vector<std::string>{"first:dispatched", "second:dispatched"}));
}

TEST(FlowController, ShedsSheddableAndRefusesWhenTheBandIsFull) {
  Harness h;
  FlowOptions o;
  o.default_band.max_requests = 1;
  FlowController fc(o);
  const auto shed = fc.admit(h.make("batch", -1), now());
  EXPECT_EQ(shed.outcome, Outcome::kRejectedSaturated);
  EXPECT_FALSE(shed.queued);
  EXPECT_EQ(http_status(shed.outcome), 429);
  EXPECT_GE(shed.retry_after_s, 1);
  EXPECT_TRUE(fc.admit(h.make("a", 0), now()).queued);
  const auto full = fc.admit(h.make("b", 0), now());
  EXPECT_EQ(full.outcome, Outcome::kRejectedCapacity);
  EXPECT_EQ(http_status(full.outcome), 429);
  // Sheddable with room: served.
  Harness roomy;
  roomy.slots = 1;
  FlowController idle(FlowOptions{});
  EXPECT_EQ(idle.admit(roomy.make("batch2", -1), now()).outcome, Outcome::kDispatched);
}

TEST(FlowController, ExpiresPastTheDeadline) {
  Harness h;
  FlowOptions o;
  o.default_ttl = milliseconds(50);
  FlowController fc(o);
  EXPECT_TRUE(fc.admit(h.make("late", 0), now()).queued);
  ASSERT_TRUE(h.wait_answers(1));
  EXPECT_EQ(h.answers()[0], "late:rejected-ttl-expired");
  EXPECT_EQ(http_status(Outcome::kExpired), 503);
  EXPECT_EQ(fc.queued(), 0u);
}

TEST(FlowController, CancelTakesAQueuedTicketOutWithoutAnAnswer) {
  Harness h;
  FlowController fc(FlowOptions{});
  auto& gone = h.make("gone", 0);
  auto& stays = h.make("stays", 0);
  EXPECT_TRUE(fc.admit(gone, now()).queued);
  EXPECT_TRUE(fc.admit(stays, now()).queued);
  EXPECT_TRUE(fc.cancel(gone));
  EXPECT_FALSE(fc.cancel(gone));
  EXPECT_EQ(fc.queued(), 1u);
  h.slots = 5;
  fc.wake();
  ASSERT_TRUE(h.wait_answers(1));
  EXPECT_EQ(h.answers(), std::vector<std::string>{"stays:dispatched"});
  EXPECT_EQ(h.slots.load(), 4);  // the cancelled one took no place
}

TEST(FlowController, StopAnswersEveryQueuedTicket) {
  Harness h;
  auto fc = std::make_unique<FlowController>(FlowOptions{});
  EXPECT_TRUE(fc->admit(h.make("a", 0, "x"), now()).queued);
  EXPECT_TRUE(fc->admit(h.make("b", 3, "y"), now()).queued);
  fc->stop();
  EXPECT_EQ(h.answers().size(), 2u);
  for (const auto& a : h.answers()) EXPECT_NE(a.find("rejected-shutting-down"), std::string::npos);
  EXPECT_EQ(fc->admit(h.make("c", 0), now()).outcome, Outcome::kShuttingDown);
  fc.reset();  // a second stop is a no-op
}

TEST(FlowController, TenantRateLimitsRefuseBeforeQueueing) {
  Harness h;
  h.slots = 100;
  FlowOptions o;
  o.tenant_limits["heavy"] = RateLimit{1, 0, 1};  // one request per second, no more at once
  FlowController fc(o);
  EXPECT_EQ(fc.admit(h.make("a", 0, "heavy"), now()).outcome, Outcome::kDispatched);
  const auto limited = fc.admit(h.make("b", 0, "heavy"), now());
  EXPECT_EQ(limited.outcome, Outcome::kRateLimited);
  EXPECT_EQ(http_status(limited.outcome), 429);
  EXPECT_EQ(limited.retry_after_s, 1);
  EXPECT_EQ(fc.admit(h.make("c", 0, "light"), now()).outcome, Outcome::kDispatched);
  EXPECT_EQ(h.slots.load(), 98);  // the refused one took no place
}

TEST(FlowController, FairnessBetweenTenantsInsideABand) {
  Harness h;
  FlowController fc(FlowOptions{});  // round-robin
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(fc.admit(h.make("heavy", 0, "heavy"), now()).queued);
  EXPECT_TRUE(fc.admit(h.make("light", 0, "light"), now()).queued);
  h.slots = 2;
  fc.wake();
  ASSERT_TRUE(h.wait_answers(2));
  EXPECT_EQ(h.answers(), (std::vector<std::string>{"heavy:dispatched", "light:dispatched"}));
}

}  // namespace
}  // namespace kvroute::flow
