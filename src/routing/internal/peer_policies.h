// File: routing/internal/peer_policies.h
//
// Policies that reproduce the published algorithms of other routers (SGLang router's cache_aware
// policy, sgl-project/sglang sgl-router; NVIDIA Dynamo's KV router, ai-dynamo/dynamo
// lib/kv-router), so users can compare them with kvroute's default on their own workload:
//  - session-affinity: consistent hashing with bounded loads on the session key;
//  - sglang-cache-aware: SGLang router's cache_aware (imbalance check, match-rate threshold);
//  - dynamo-cost: Dynamo KV router's logit = overlap_weight * prefill_blocks + active_blocks.
// Thread-safety: safe from all worker threads.
#pragma once

#include <memory>

#include "routing/policy.h"
#include "routing/scheduler.h"

namespace kvroute::routing {

// Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam 2018): the session's point
// on a ring of virtual nodes; walk on past backends whose in-flight count would exceed
// ceil(c * (total + 1) / n). A session moves only when its backend is overloaded or gone.
class SessionRing {
 public:
  SessionRing(std::span<Backend* const> backends, int vnodes = 128);
  // The backend for `key` among `candidates` (null when none), honouring the load bound `c`.
  Backend* lookup(std::string_view key, std::span<Backend* const> candidates, double c) const;

 private:
  std::vector<std::pair<std::uint64_t, int>> ring_;  // (point, backend index), sorted
};

std::unique_ptr<Policy> make_session_affinity(std::span<Backend* const> backends,
                                              double load_bound);
std::unique_ptr<Policy> make_sglang_cache_aware(std::shared_ptr<RoutingContext> ctx,
                                                double cache_threshold, int balance_abs,
                                                double balance_rel);
std::unique_ptr<Policy> make_dynamo_cost(std::shared_ptr<RoutingContext> ctx,
                                         double overlap_weight);

}  // namespace kvroute::routing
