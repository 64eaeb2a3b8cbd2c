#include "proxy/internal/fd_budget.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

namespace kvroute::proxy {
namespace {

TEST(FdPlan, GenerousLimitKeepsWhatWasAsked) {
  const FdPlan p = plan_fds(1u << 20, 2, 4, 100000, 256);
  EXPECT_EQ(p.max_connections, 100000u);
  EXPECT_EQ(p.max_idle_per_backend, 256u);
  EXPECT_FALSE(p.clamped);
}

// systemd's default soft limit: both limits shrink, and together they never exceed the limit,
// counting every client connection with an upstream one beside it and every idle pool full.
TEST(FdPlan, LowLimitFitsConnectionsAndIdlePoolsUnderIt) {
  for (const std::uint64_t fds : {256u, 1024u, 4096u}) {
    for (const int threads : {1, 2, 8}) {
      for (const std::size_t backends : {1u, 4u, 16u}) {
        const FdPlan p = plan_fds(fds, threads, backends, 100000, 256);
        EXPECT_TRUE(p.clamped);
        const std::size_t t = static_cast<std::size_t>(threads);
        const std::size_t worst = kReservedFds + kReservedFdsPerThread * t + 2 * backends +
                                  p.max_idle_per_backend * t * backends + 2 * p.max_connections;
        if (fds >= 1024) {
          EXPECT_LE(worst, fds) << fds << " " << threads << " " << backends;
          EXPECT_GE(p.max_connections, 100u) << fds << " " << threads << " " << backends;
        }
        EXPECT_GE(p.max_connections, 1u);
        EXPECT_GE(p.max_idle_per_backend, 1u);
      }
    }
  }
  EXPECT_EQ(plan_fds(1024, 2, 4, 100, 8).max_connections, 100u);  // asked for less: kept
}

TEST(OpenFileLimit, SoftLimitIsRaisedToTheHardOne) {
  rlimit rl{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &rl), 0);
  const rlimit saved = rl;
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < 512) GTEST_SKIP() << "hard limit too low";
  rl.rlim_cur = 256;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &rl), 0);
  const OpenFileLimit l = raise_open_file_limit();
  EXPECT_EQ(l.before, 256u);
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &rl), 0);
  EXPECT_EQ(l.now, rl.rlim_cur);
  EXPECT_GT(rl.rlim_cur, 256u);
  if (saved.rlim_max != RLIM_INFINITY) {
    EXPECT_EQ(rl.rlim_cur, saved.rlim_max);
  }
  ::setrlimit(RLIMIT_NOFILE, &saved);
}

}  // namespace
}  // namespace kvroute::proxy
