// File: routing/backend.h
//
// What the router knows about one engine: its address, health, load the router itself observes
// (in-flight requests and tokens), what it last scraped from the engine's /metrics, and the models
// it serves. Backends are created at start-up or by discovery and never move or die while the
// router lives (a removed one is only marked removed); fields are atomics or immutable
// snapshots, so the hot path reads them without a mutex, except InflightBlocks (below).
//
// Thread-safety: all members are safe to read and write from any thread. Counters and flags are
// atomics (the health loop writes health; any worker the in-flight counts and passive ejection).
// `load` is a std::atomic<std::shared_ptr>, which libstdc++ implements with a spin-lock bit held
// for a reference-count update; the scrape loop replaces it. ModelList::set takes a mutex; get()
// is one atomic pointer load. InflightBlocks locks its own mutex per add/remove/shared_prefix.
#pragma once

#include <atomic>
#include <boost/unordered/unordered_flat_map.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/hash.h"
#include "common/mutex.h"
#include "http/endpoint.h"

namespace kvroute::routing {

// The KV blocks the requests in flight on one engine pin: a reference count per prompt block hash,
// so a prefix shared by requests running together counts once, as the engine holds it once.
// Thread-safe (one mutex per engine; add/remove once per request, shared_prefix only for engines
// near their memory limit).
class InflightBlocks {
 public:
  void add(std::span<const std::uint64_t> blocks);
  void remove(std::span<const std::uint64_t> blocks);
  // Distinct blocks pinned.
  std::int64_t unique_blocks() const { return unique_.load(std::memory_order_relaxed); }
  // How many leading blocks of `blocks` are pinned already. Chained hashes: when block k is
  // pinned, so are blocks 0..k-1, so this is a binary search.
  std::size_t shared_prefix(std::span<const std::uint64_t> blocks) const;

 private:
  mutable Mutex mu_;
  boost::unordered_flat_map<std::uint64_t, std::uint32_t> refs_ GUARDED_BY(mu_);
  std::atomic<std::int64_t> unique_{0};
};

struct EngineLoad {
  double waiting = 0;                // vllm:num_requests_waiting
  double running = 0;                // vllm:num_requests_running
  double kv_usage = 0;               // vllm:kv_cache_usage_perc, 0..1
  double prefix_queries = 0;         // vllm:prefix_cache_queries_total (tokens)
  double prefix_hits = 0;            // vllm:prefix_cache_hits_total (tokens)
  std::uint32_t num_gpu_blocks = 0;  // vllm:cache_config_info{num_gpu_blocks}
  std::uint32_t block_size = 0;
  std::chrono::steady_clock::time_point scraped_at{};
};

// The model names a backend serves: set once (from the configuration or the backend's
// /v1/models) and read on every request by every worker. A read is one load of a pointer; an
// atomic<shared_ptr> read took a lock bit and two reference counts, all writes to lines the
// workers shared.
class ModelList {
 public:
  // Null until known.
  const std::vector<std::string>* get() const { return ptr_.load(std::memory_order_acquire); }
  // The first set wins (the list is never replaced or freed while the backend lives); false when
  // already set.
  bool set(std::vector<std::string> names) {
    MutexLock lock(mu_);
    if (owned_) return false;
    owned_ = std::make_unique<const std::vector<std::string>>(std::move(names));
    ptr_.store(owned_.get(), std::memory_order_release);
    return true;
  }

 private:
  Mutex mu_;
  std::unique_ptr<const std::vector<std::string>> owned_ GUARDED_BY(mu_);
  std::atomic<const std::vector<std::string>*> ptr_{nullptr};
};

struct Backend {
  Backend(int i, std::string n, std::string u, http::Endpoint e)
      : index(i),
        name(std::move(n)),
        url(std::move(u)),
        endpoint(std::move(e)),
        name_hash(hash64(name)),
        url_hash(hash64(url)) {}

  const int index;
  const std::string name;
  const std::string url;
  const http::Endpoint endpoint;
  const std::uint64_t name_hash;  // hash64(name): the backend's identity in session hashing
  const std::uint64_t url_hash;   // hash64(url): its identity between replicas (replication/)

  std::atomic<bool> healthy{true};
  // Discovery removed it: never available again (requests in flight finish; docs/adr/0021).
  std::atomic<bool> removed{false};
  std::atomic<int> consecutive_failures{0};
  std::atomic<std::int64_t> ejected_until_ms{0};  // steady-clock ms; 0 when not ejected
  std::atomic<int> inflight{0};
  std::atomic<std::int64_t> inflight_tokens{0};  // uncached prefill tokens not yet started
  // The same two figures of the other replicas (replication/: their last report, summed); 0
  // without replicas. Load-aware plugins read the sums below; flow control counts its own.
  std::atomic<int> peer_inflight{0};
  std::atomic<std::int64_t> peer_inflight_tokens{0};
  int load_inflight() const {
    return inflight.load(std::memory_order_relaxed) + peer_inflight.load(std::memory_order_relaxed);
  }
  std::int64_t load_inflight_tokens() const {
    return inflight_tokens.load(std::memory_order_relaxed) +
           peer_inflight_tokens.load(std::memory_order_relaxed);
  }
  std::atomic<std::int64_t> active_blocks{0};  // Dynamo-style: blocks of requests in flight
  // KV memory (ADR 0008): the prompt blocks requests in flight pin (shared prefixes once), the
  // output tokens they are expected to add, and the engine's KV capacity in tokens (num_gpu_blocks
  // * block_size, configured or scraped; 0: unknown).
  InflightBlocks inflight_blocks;
  std::atomic<std::int64_t> inflight_output_tokens{0};
  std::atomic<std::int64_t> kv_capacity_tokens{0};
  ModelList models;
  std::atomic<std::shared_ptr<const EngineLoad>> load;  // null until scraped
  // The figures flow control reads on every dispatch, as plain atomics (the shared_ptr's lock bit
  // is not for a hot path, and ThreadSanitizer does not see it as a lock).
  std::atomic<double> scraped_waiting{0};
  std::atomic<double> scraped_running{0};
  std::atomic<double> scraped_kv_usage{0};
  std::atomic<std::int64_t> scraped_at_ms{-1};  // steady-clock ms; -1: never
  // The most requests the engine is known to run at once (flow/saturation.h): its running count at
  // the last scrape that found requests waiting (it was at its limit: max_num_seqs or KV), else
  // the highest running count scraped since. 0 until one scrape saw it busy.
  std::atomic<double> running_limit{0};
  // Flow control's view between scrapes (flow/saturation.h): requests this router dispatched that
  // the last scrape cannot have seen and that have not started (no first byte). A scrape advances
  // `dispatch_epoch` when it sends its request: what was dispatched before (the old epoch) is in
  // the figures it gets back or has started, so the response zeroes the old epoch's count and
  // marks it settled; requests dispatched meanwhile count on in the new epoch. A request takes
  // itself off its epoch's count when it starts, unless that epoch is settled. Two counts by
  // epoch parity suffice (one scrape in flight per backend). A request racing the response can
  // leave a count off by one until that parity is zeroed again (readers clamp at 0).
  std::atomic<std::uint32_t> dispatch_epoch{1};
  std::atomic<std::uint32_t> settled_epoch{0};
  std::atomic<int> unstarted_by_parity[2] = {0, 0};
  int unstarted_since_scrape() const {
    return unstarted_by_parity[0].load(std::memory_order_relaxed) +
           unstarted_by_parity[1].load(std::memory_order_relaxed);
  }

  bool serves(std::string_view model) const;
  // Healthy, not ejected at `now_ms`, not removed.
  bool available(std::int64_t now_ms) const;
};

// Backend::running_limit after a scrape of `waiting` and `running` requests.
double learn_running_limit(double limit, double waiting, double running);

// Milliseconds on the steady clock: now, or at a reading already taken.
std::int64_t steady_ms(std::chrono::steady_clock::time_point t);
std::int64_t steady_now_ms();

}  // namespace kvroute::routing
