// File: flow/rate_limit.h
//
// Per-tenant token buckets for flow control (issue 18): requests per second and tokens per second
// (a request costs its prompt tokens plus its expected output), each with a burst of `burst`
// seconds of its rate. A request that does not fit is refused with the seconds after which it would
// (Retry-After); a refused request takes nothing from either bucket.
//
// Thread-safety: all methods are safe from any thread (one mutex; a tenant's state is two
// doubles and a time).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <unordered_map>

#include "common/mutex.h"

namespace kvroute::flow {

struct RateLimit {
  double requests_per_second = 0;  // 0: unlimited
  double tokens_per_second = 0;    // 0: unlimited
  double burst_seconds = 1;
  bool unlimited() const { return requests_per_second <= 0 && tokens_per_second <= 0; }
};

class RateLimiter {
 public:
  // `limits` by tenant; `fallback` for tenants not listed.
  RateLimiter(std::unordered_map<std::string, RateLimit> limits, RateLimit fallback);

  // 0 when the request fits (and is charged); else the whole seconds to wait, at least 1.
  int take(const std::string& tenant, double tokens, std::int64_t now_ms);
  bool enabled() const { return enabled_; }

 private:
  struct Bucket {
    double requests = 0;  // available
    double tokens = 0;
    std::int64_t at_ms = -1;  // last refill (-1: new, full)
  };
  const RateLimit& limit_of(const std::string& tenant) const;

  const std::unordered_map<std::string, RateLimit> limits_;
  const RateLimit fallback_;
  const bool enabled_;
  Mutex mu_;
  std::unordered_map<std::string, Bucket> buckets_ GUARDED_BY(mu_);
};

}  // namespace kvroute::flow
