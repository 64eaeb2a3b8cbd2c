#include "flow/rate_limit.h"

#include <algorithm>
#include <cmath>

namespace kvroute::flow {

RateLimiter::RateLimiter(std::unordered_map<std::string, RateLimit> limits, RateLimit fallback)
    : limits_(std::move(limits)),
      fallback_(fallback),
      enabled_(!fallback.unlimited() ||
               std::any_of(limits_.begin(), limits_.end(),
                           [](const auto& kv) { return !kv.second.unlimited(); })) {}

const RateLimit& RateLimiter::limit_of(const std::string& tenant) const {
  auto it = limits_.find(tenant);
  return it == limits_.end() ? fallback_ : it->second;
}

int RateLimiter::take(const std::string& tenant, double tokens, std::int64_t now_ms) {
  const RateLimit& l = limit_of(tenant);
  if (l.unlimited()) return 0;
  const double burst = std::max(l.burst_seconds, 0.001);
  const double max_requests = l.requests_per_second * burst;
  const double max_tokens = l.tokens_per_second * burst;
  MutexLock lock(mu_);
  if (buckets_.size() > 100000) buckets_.clear();  // bounded: idle tenants start full again
  Bucket& b = buckets_[tenant];
  if (b.at_ms < 0) {
    b.requests = max_requests;
    b.tokens = max_tokens;
  } else {
    const double dt = static_cast<double>(std::max<std::int64_t>(0, now_ms - b.at_ms)) / 1000.0;
    b.requests = std::min(max_requests, b.requests + dt * l.requests_per_second);
    b.tokens = std::min(max_tokens, b.tokens + dt * l.tokens_per_second);
  }
  b.at_ms = now_ms;
  double wait_s = 0;
  if (l.requests_per_second > 0 && b.requests < 1)
    wait_s = std::max(wait_s, (1 - b.requests) / l.requests_per_second);
  // A request larger than the whole bucket would never fit: it waits for a full bucket.
  const double need = std::min(tokens, max_tokens);
  if (l.tokens_per_second > 0 && b.tokens < need)
    wait_s = std::max(wait_s, (need - b.tokens) / l.tokens_per_second);
  if (wait_s > 0) return std::max(1, static_cast<int>(std::ceil(wait_s)));
  if (l.requests_per_second > 0) b.requests -= 1;
  if (l.tokens_per_second > 0) b.tokens -= need;
  return 0;
}

}  // namespace kvroute::flow
