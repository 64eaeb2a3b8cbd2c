#include "flow/saturation.h"

#include <algorithm>

namespace kvroute::flow {

EngineSnapshot snapshot(const routing::Backend& b) {
  EngineSnapshot e;
  const std::int64_t at = b.scraped_at_ms.load(std::memory_order_acquire);
  if (at >= 0) {
    e.scraped = true;
    e.scraped_at_ms = at;
    e.waiting = b.scraped_waiting.load(std::memory_order_relaxed);
    e.running = b.scraped_running.load(std::memory_order_relaxed);
    e.kv_usage = b.scraped_kv_usage.load(std::memory_order_relaxed);
    e.running_limit = b.running_limit.load(std::memory_order_relaxed);
  }
  e.unstarted_since_scrape = std::max(0, b.unstarted_since_scrape());
  e.inflight = b.inflight.load(std::memory_order_relaxed);
  return e;
}

std::string_view to_string(Room r) {
  switch (r) {
    case Room::kRoom:
      return "room";
    case Room::kQueueFull:
      return "queue-full";
    case Room::kKvFull:
      return "kv-full";
    case Room::kConcurrencyFull:
      return "concurrency-full";
    case Room::kStale:
      return "stale-metrics";
  }
  return "unknown";
}

namespace {

bool stale(const SaturationOptions& o, const EngineSnapshot& e, std::int64_t now_ms) {
  return !e.scraped || now_ms - e.scraped_at_ms > o.metrics_staleness.count();
}

}  // namespace

double estimated_waiting(const SaturationOptions& o, const EngineSnapshot& e) {
  const double limit = o.engine_max_running > 0 ? o.engine_max_running : e.running_limit;
  // A scraped queue means no free slot, whatever the limit says.
  const double free_slots = e.waiting > 0 ? 0.0 : std::max(0.0, limit - e.running);
  return e.waiting + std::max(0.0, static_cast<double>(e.unstarted_since_scrape) - free_slots);
}

Room judge(const SaturationOptions& o, const EngineSnapshot& e, std::int64_t now_ms) {
  if (stale(o, e, now_ms)) return Room::kStale;
  const double slack = 1 + std::max(0.0, o.headroom);
  if (o.max_concurrency > 0 && e.inflight >= o.max_concurrency) return Room::kConcurrencyFull;
  if (estimated_waiting(o, e) >= o.queue_depth_threshold * slack) return Room::kQueueFull;
  if (e.kv_usage >= o.kv_cache_util_threshold * slack) return Room::kKvFull;
  return Room::kRoom;
}

double saturation(const SaturationOptions& o, const EngineSnapshot& e, std::int64_t now_ms) {
  if (stale(o, e, now_ms)) return 1.0;
  const double q =
      o.queue_depth_threshold > 0 ? estimated_waiting(o, e) / o.queue_depth_threshold : 0.0;
  const double kv = o.kv_cache_util_threshold > 0 ? e.kv_usage / o.kv_cache_util_threshold : 0.0;
  return std::max(q, kv);
}

double pool_saturation(const SaturationOptions& o, std::span<const EngineSnapshot> engines,
                       std::int64_t now_ms) {
  if (engines.empty()) return 1.0;
  double sum = 0;
  for (const auto& e : engines) sum += saturation(o, e, now_ms);
  return sum / static_cast<double>(engines.size());
}

}  // namespace kvroute::flow
