#include "flow/rate_limit.h"

#include <gtest/gtest.h>

namespace kvroute::flow {
namespace {

TEST(RateLimiter, RequestsPerSecondWithABurst) {
  RateLimiter rl({{"acme", RateLimit{2, 0, 1}}}, RateLimit{});
  EXPECT_TRUE(rl.enabled());
  EXPECT_EQ(rl.take("acme", 10, 0), 0);
  EXPECT_EQ(rl.take("acme", 10, 0), 0);
  EXPECT_EQ(rl.take("acme", 10, 0), 1);    // the burst (2) is spent: wait 0.5 s -> 1
  EXPECT_EQ(rl.take("acme", 10, 500), 0);  // refilled one
  EXPECT_EQ(rl.take("other", 10, 0), 0);   // not listed: unlimited
  for (int i = 0; i < 100; ++i) EXPECT_EQ(rl.take("other", 1e6, 0), 0);
}

TEST(RateLimiter, TokensPerSecondAndRetryAfter) {
  RateLimiter rl({}, RateLimit{0, 1000, 2});  // every tenant: 1,000 tokens/s, 2 s of burst
  EXPECT_EQ(rl.take("t", 1500, 0), 0);
  EXPECT_EQ(rl.take("t", 400, 0), 0);     // 100 left
  EXPECT_EQ(rl.take("t", 2100, 0), 2);    // capped at the bucket (2,000): 1.9 s -> 2
  EXPECT_EQ(rl.take("t", 1000, 900), 0);  // 100 + 900 refilled
  // A refused request took nothing.
  EXPECT_EQ(rl.take("u", 5000, 0), 0);  // capped at 2,000: the whole bucket
  EXPECT_EQ(rl.take("u", 1, 0), 1);
}

TEST(RateLimiter, UnlimitedByDefault) {
  RateLimiter rl({}, RateLimit{});
  EXPECT_FALSE(rl.enabled());
  EXPECT_EQ(rl.take("x", 1e9, 0), 0);
}

}  // namespace
}  // namespace kvroute::flow
