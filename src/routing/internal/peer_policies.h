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

// Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam 2018), by rendezvous
// (highest random weight) hashing: each candidate's weight is a hash of the session key and the
// backend's name; the heaviest whose in-flight count stays within ceil(c * (total + 1) / n) wins.
// A session moves only when its backend is overloaded or gone, and when backends come and go
// (discovery) only the sessions of those backends move. No state: the candidates are the ring.
class SessionHash {
 public:
  // The backend for `key` among `candidates` (null when none), honouring the load bound `c`.
  static Backend* lookup(std::string_view key, std::span<Backend* const> candidates, double c);
};

std::unique_ptr<Policy> make_session_affinity(double load_bound);
std::unique_ptr<Policy> make_sglang_cache_aware(std::shared_ptr<RoutingContext> ctx,
                                                double cache_threshold, int balance_abs,
                                                double balance_rel);
std::unique_ptr<Policy> make_dynamo_cost(std::shared_ptr<RoutingContext> ctx,
                                         double overlap_weight);

}  // namespace kvroute::routing
