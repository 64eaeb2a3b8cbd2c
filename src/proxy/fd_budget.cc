#include "proxy/internal/fd_budget.h"

#include <sys/resource.h>

#include <algorithm>

namespace kvroute::proxy {

OpenFileLimit raise_open_file_limit() {
  OpenFileLimit out;
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return out;
  out.before = rl.rlim_cur;
  out.now = rl.rlim_cur;
  constexpr rlim_t kCap = 1u << 20;
  const rlim_t want =
      rl.rlim_max == RLIM_INFINITY ? std::max<rlim_t>(kCap, rl.rlim_cur) : rl.rlim_max;
  if (want > rl.rlim_cur) {
    rlimit raised = rl;
    raised.rlim_cur = want;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) out.now = want;
  }
  return out;
}

FdPlan plan_fds(std::uint64_t fds, int threads, std::size_t backends, std::size_t max_connections,
                std::size_t max_idle_per_backend) {
  const std::size_t t = static_cast<std::size_t>(std::max(1, threads));
  const std::size_t b = std::max<std::size_t>(1, backends);
  const std::size_t reserve = kReservedFds + kReservedFdsPerThread * t;
  // Health probes and metric scrapes pool one connection per backend each.
  const std::size_t fixed = reserve + 2 * b;
  const std::size_t budget = fds > fixed ? static_cast<std::size_t>(fds) - fixed : 0;
  FdPlan p;
  p.max_idle_per_backend =
      std::min(max_idle_per_backend, std::max<std::size_t>(1, budget / 4 / (t * b)));
  const std::size_t idle = p.max_idle_per_backend * t * b;
  p.max_connections =
      std::min(max_connections, std::max<std::size_t>(1, budget > idle ? (budget - idle) / 2 : 0));
  p.clamped = p.max_connections < max_connections || p.max_idle_per_backend < max_idle_per_backend;
  return p;
}

}  // namespace kvroute::proxy
