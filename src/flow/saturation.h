// File: flow/saturation.h
//
// Whether an engine has room for one more request, for flow control (issue 18,
// docs/design/flow-control.md). An engine has room when its metrics are fresh and its estimated
// queue and KV-cache usage are under their thresholds. The estimate adds to the scraped
// `vllm:num_requests_waiting` the requests this router dispatched to it since that scrape which
// have not started yet (Backend::unstarted_since_scrape) and will not find a free running slot:
// those beyond the engine's running limit (configured max_num_seqs, else learned from scrapes,
// Backend::running_limit) less its scraped running count. So a burst between two scrapes is not
// dispatched blind, and requests merely in prefill at an engine with free slots do not count as a
// queue (ADR 0026). With several router replicas each counts only its own dispatches, which keeps
// every replica conservative. Metrics older than the staleness threshold, or none, mean no room
// (fail closed, as llm-d's utilization detector).
//
// Thread-safety: pure functions over a snapshot; snapshot() reads a Backend's atomics.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string_view>

#include "routing/backend.h"

namespace kvroute::flow {

struct SaturationOptions {
  double queue_depth_threshold = 5;      // estimated waiting requests per engine
  double kv_cache_util_threshold = 0.8;  // vllm:kv_cache_usage_perc, 0..1
  std::chrono::milliseconds metrics_staleness{3000};
  double headroom = 0;         // room while under threshold x (1 + headroom)
  int max_concurrency = 0;     // > 0: also no room at this many requests in flight from this router
  int engine_max_running = 0;  // > 0: every engine's running limit (vLLM --max-num-seqs); 0: learn
};

// What the detector reads of one engine at one moment.
struct EngineSnapshot {
  bool scraped = false;            // metrics were ever scraped
  std::int64_t scraped_at_ms = 0;  // steady-clock ms
  double waiting = 0;
  double running = 0;
  double kv_usage = 0;
  double running_limit = 0;        // Backend::running_limit (learned; 0: not yet)
  int unstarted_since_scrape = 0;  // this router's dispatches since the scrape, not started
  int inflight = 0;                // this router's requests in flight
};

EngineSnapshot snapshot(const routing::Backend& b);

enum class Room { kRoom, kQueueFull, kKvFull, kConcurrencyFull, kStale };
std::string_view to_string(Room r);

Room judge(const SaturationOptions& o, const EngineSnapshot& e, std::int64_t now_ms);

// Scraped waiting plus the unstarted dispatches beyond the engine's free running slots.
double estimated_waiting(const SaturationOptions& o, const EngineSnapshot& e);

// max(estimated waiting / queue threshold, kv usage / kv threshold); 1 for stale or unscraped
// metrics. Above 1 (x (1 + headroom)) the engine has no room.
double saturation(const SaturationOptions& o, const EngineSnapshot& e, std::int64_t now_ms);

// The mean saturation over `engines` (1 when empty), as llm-d's pool saturation gauge.
double pool_saturation(const SaturationOptions& o, std::span<const EngineSnapshot> engines,
                       std::int64_t now_ms);

}  // namespace kvroute::flow
