// File: kv_index/precise_indexer.h
//
// PreciseIndexer: feeds a KvBlockIndex from the engines' vLLM KV events. It owns one
// ZmqEventSubscriber (one thread for all engines), maps the subscriber's engine ids to backend
// indices (= index engine slots) and applies each batch on the subscriber thread.
//
// Consistency rule per engine (docs/adr/0221):
//   - a gap the subscriber recovered through replay is NOT stale (on_batch saw every seq);
//   - on_stale (events lost for good: gap without replay, replay timeout/incomplete, malformed
//     payload, overflow) -> the engine's entries are cleared (lost BlockRemoved events could leave
//     phantom blocks, the dangerous direction) and the engine is stale for `stale_ttl`; events keep
//     being applied meanwhile, so afterwards the index holds what was stored since, and at worst
//     under-reports older blocks (a miss, never a false hit);
//   - it becomes fresh earlier when the engine's cache is known empty: an AllBlocksCleared in a
//     batch, or on_reset (publisher restart = engine restart: seq went backwards) which also
//     clears the engine's entries;
//   - has_precise(b) = the backend has an event endpoint and is not stale. Scorers fall back to the
//     approximate index for backends without precise info (kv_index/precise_scorer.h).
// An engine that never publishes is tracked and fresh: it holds nothing (score 0), as an idle
// engine would; it does not delay the others (the subscriber polls all sockets).
//
// Thread-safety: every public member is safe from any thread. Callbacks run on the subscriber's
// thread; stop() (and the destructor) join it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/mutex.h"
#include "common/result.h"
#include "config/config.h"
#include "kv_events/subscriber.h"
#include "kv_index/block_index.h"

namespace kvroute::kv_index {

struct IndexedEngine {
  std::size_t backend = 0;      // routing::Backend::index
  std::string endpoint;         // the engine's PUB (tcp://host:port)
  std::string replay_endpoint;  // its replay ROUTER, "" = none
  std::string model;            // seeds chains from block 0 (hash64(model)); "" = set later
  std::string engine_id;        // subscriber key; "" = "backend-<index>"
};

struct IndexerConfig {
  std::size_t num_backends = 0;        // index slots (all backends, with or without events)
  std::vector<IndexedEngine> engines;  // the backends that publish events
  IndexOptions index;                  // num_engines is set to num_backends
  kv_events::SubscriberConfig subscriber = default_subscriber();
  std::chrono::milliseconds stale_ttl{60000};
  std::chrono::milliseconds speculative_ttl{2000};  // llm-d's default
  // Test hook: runs on the subscriber thread before each batch is applied (slow consumers).
  std::function<void()> before_apply_for_test;

  // Per-engine sockets need no topic filter: vLLM's default topic is "" (llm-d's "kv@" would drop
  // it).
  static kv_events::SubscriberConfig default_subscriber() {
    kv_events::SubscriberConfig c;
    c.topic_filter = "";
    return c;
  }
};

// Builds the indexer configuration from the router's: every backend with kv_events_endpoint set is
// indexed (backend index = its position in cfg.backends); model = the backend's first configured
// model, else cfg's default is unknown and PreciseIndexer::set_model must be called when learned.
IndexerConfig indexer_config_from(const config::Config& cfg);

struct IndexerStats {
  IndexStats index;
  std::uint64_t batches = 0;              // batches applied
  std::uint64_t resets = 0;               // on_reset (publisher restarts)
  std::uint64_t backend_down_clears = 0;  // forget_backend (health checks saw the engine down)
  std::uint64_t stale_reports = 0;        // on_stale calls
  std::uint64_t stale_engines = 0;        // engines stale now
  std::uint64_t entries = 0;              // (engine block, engine) records
  // The last batch's age when it was applied: this machine's clock minus the engine's timestamp
  // (KV-event lag; clock skew between the machines adds to it).
  double last_lag_s = 0;
  std::uint64_t memory_bytes = 0;  // only when stats(true)
  kv_events::SubscriberStats subscriber;
};

class PreciseIndexer {
 public:
  // Creates the index and the subscriber and connects to every engine (ZMQ connects lazily, so an
  // engine that is down now is picked up when it comes up). Errors: bad endpoints, duplicate ids,
  // backend index out of range.
  static Result<std::unique_ptr<PreciseIndexer>> create(IndexerConfig config);
  ~PreciseIndexer();  // stop()
  PreciseIndexer(const PreciseIndexer&) = delete;
  PreciseIndexer& operator=(const PreciseIndexer&) = delete;

  // Subscribes to one more backend's events while running (discovery added it). Errors: bad
  // endpoint, backend out of range or already tracked.
  Status add_engine(IndexedEngine e);
  // Unsubscribes from `backend` and forgets its entries (discovery removed it); when this returns
  // no callback for it runs any more. No-op when not tracked.
  void remove_engine(std::size_t backend);

  // The model served by `backend` (seeds block-0 chains). Call when learned from /v1/models.
  void set_model(std::size_t backend, std::string_view model);

  // The backend went down (health checks). A restarted engine comes back with an empty cache, and
  // its publisher's sequence does not always reveal the restart (docs/adr/0221), so what it held is
  // forgotten now; events rebuild the entries once it is back.
  void forget_backend(std::size_t backend);

  // True when the index can be trusted for `backend`: it publishes events and is not stale.
  bool has_precise(std::size_t backend) const;
  bool is_tracked(std::size_t backend) const;

  // The speculative hook: call after a routing decision sent `blocks` (RouteRequest::blocks, token
  // blocks only) to `backend`. Marks them held for speculative_ttl.
  void on_routed(std::size_t backend, std::span<const std::uint64_t> blocks);

  KvBlockIndex& index() { return *index_; }
  const KvBlockIndex& index() const { return *index_; }
  const IndexerConfig& config() const { return cfg_; }
  // memory = true also walks the tables for memory_bytes (takes every lock briefly).
  IndexerStats stats(bool memory = false) const;

  void stop();  // idempotent

 private:
  explicit PreciseIndexer(IndexerConfig config);
  void on_batch(const std::string& id, const kv_events::EventBatch& batch);
  void on_reset(const std::string& id);
  void on_stale(const std::string& id);
  std::size_t backend_of(const std::string& id) const;

  IndexerConfig cfg_;
  std::unique_ptr<KvBlockIndex> index_;
  // Subscriber engine id -> backend, for the engines subscribed now (the subscriber thread reads
  // it once per batch; discovery writes it).
  mutable Mutex mu_;
  std::vector<std::pair<std::string, std::size_t>> engines_ GUARDED_BY(mu_);
  std::unique_ptr<std::atomic<std::uint8_t>[]> tracked_;  // by backend: 1 while subscribed
  std::uint64_t generation_ GUARDED_BY(mu_) = 0;          // makes engine ids unique across reuse
  std::unique_ptr<kv_events::ZmqEventSubscriber> sub_;
  std::atomic<double> last_lag_s_{0};
  std::atomic<std::uint64_t> batches_{0}, resets_{0}, stale_reports_{0}, down_clears_{0};
};

}  // namespace kvroute::kv_index
