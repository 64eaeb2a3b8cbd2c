// bench compare --replicas (issue 17): N routers per policy in front of the same engines, requests
// spread over them, a row per mode ("P xN" with the exchange, "P xN uncoord" without); every
// request succeeds in both modes and bad options are refused. (That the exchange steers a replica
// is asserted in router_test's Replicas.* and replication_test.)
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "bench/internal/compare.h"
#include "bench/internal/workload.h"
#include "bench/test_support.h"

namespace kvroute::bench {
namespace {

TEST(CompareReplicas, RowsPerModeAndEveryRequestSucceeds) {
  WorkloadOptions wo;
  wo.name = "multi-turn";
  wo.mt_sessions = 2;
  wo.mt_turns = 4;
  wo.mt_turn_len = 40;
  wo.mt_system_len = 64;
  wo.mt_think_s = 0.01;
  wo.output_len = 4;
  auto wl = make_workload(wo);
  ASSERT_TRUE(wl) << wl.error().message;
  CompareOptions co = test_support::one_user_on_two_engines();
  co.policies = {"kvroute-approx"};
  co.replicas = 2;
  co.exchange = "both";
  auto runs = run_compare(*wl, co);
  ASSERT_TRUE(runs) << runs.error().message;
  ASSERT_EQ(runs->size(), 2u);
  EXPECT_EQ((*runs)[0].policy, "kvroute-approx x2");
  EXPECT_EQ((*runs)[1].policy, "kvroute-approx x2 uncoord");
  for (const auto& r : *runs) {
    ASSERT_TRUE(r.error.empty()) << r.error;
    ASSERT_EQ(r.run.records.size(), 8u) << r.policy;
    for (const auto& rec : r.run.records) EXPECT_EQ(rec.outcome, Outcome::kOk) << rec.error;
    EXPECT_EQ(r.summary.completed, 8u);
  }

  CompareOptions bad = co;
  bad.exchange = "sometimes";
  EXPECT_FALSE(run_compare(*wl, bad));
  bad = co;
  bad.replicas = 0;
  EXPECT_FALSE(run_compare(*wl, bad));
}

}  // namespace
}  // namespace kvroute::bench
