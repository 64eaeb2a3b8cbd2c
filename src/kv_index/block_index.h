// File: kv_index/block_index.h
//
// KvBlockIndex: the precise prefix index. It records, from vLLM KV events, which engine holds which
// prefix block, keyed by the router's OWN chained block hashes (common/hash.h:
// chained_block_hashes(prompt_tokens, block_size, hash64(model))), so a routing lookup is the
// prompt's block list the router already computed.
//
// Keying (docs/adr/0220): engine hashes are opaque ids. Each BlockStored's token_ids are re-chunked
// by the router's block size and chained from the parent: a nil parent starts from the seed
// (hash64(lora_name) when the event names a LoRA, else hash64(engine model)); a non-nil parent is
// the engine hash of the block before the run, mapped to our hash through the engine's
// engine_hash -> our_hash map. So the engine's hash algorithm, seed and PYTHONHASHSEED do not
// matter. The engine block size must be a multiple of ours (16 | 32 | 64 ... with ours 16); one
// engine block then stands for block_size/ours of our blocks. extra_keys (LoRA, salt, multimodal)
// are not mixed in: the router's request hash does not carry them either.
//
// State: a global table our_hash -> holders {engine, ref count per tier (GPU / CPU / other),
// speculative deadline}, split into shards with a reader-writer lock each; per engine, the
// engine_hash -> {our_hash, refs per tier} map (resolves BlockRemoved and tokenless tier updates,
// and is the reverse index that clears an engine) and the store order for eviction. Duplicates (an
// engine caching one hash in two blocks) are ref counts: one BlockRemoved removes one copy.
//
// Bounded memory (docs/adr/0222): each engine may hold at most max_entries / num_engines records
// (one record = one engine block); storing beyond that evicts that engine's least recently stored
// records, as if the engine had removed them (the index then under-reports, never over-reports).
//
// Speculative entries (docs/adr/0223): after a routing decision the router marks the prompt's
// blocks as held by the chosen engine until now + ttl, so a burst of identical prompts lands on one
// engine before its BlockStored arrives. A real store of the block clears the mark; expired marks
// are ignored by lookups and swept lazily.
//
// Staleness: mark_stale(e, until) flags an engine whose events were lost; is_stale() is true until
// `until` or clear_stale(). The index keeps applying the engine's events meanwhile; what stale
// means for scoring is the caller's rule (kv_index/precise_indexer.h).
//
// Thread-safety: match(), add_speculative(), is_stale(), stats() and the accessors are safe from
// any thread at any time. apply(), clear_engine() and set_engine_model() serialize per engine on a
// writer mutex that lookups never take; lookups take one shard lock (shared) per block.
#pragma once

#include <array>
#include <atomic>
#include <boost/unordered/unordered_flat_map.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/mutex.h"
#include "kv_events/event.h"

namespace kvroute::kv_index {

enum class Tier : std::uint8_t { kGpu = 0, kCpu = 1, kOther = 2 };
inline constexpr std::size_t kNumTiers = 3;
// nil or "GPU" (any case) -> kGpu, "CPU" -> kCpu, anything else ("STORAGE", "DISK", ...) -> kOther.
Tier tier_of(const std::optional<std::string>& medium);

struct IndexOptions {
  std::size_t num_engines = 1;         // engine index = the router's backend index
  std::uint32_t block_size = 16;       // router's tokens per block (config block_size)
  std::size_t max_entries = 4u << 20;  // (engine block, engine) records over all engines
  // Score weight of a block by the best tier holding it (llm-d: GPU 1.0, CPU 0.8).
  std::array<double, kNumTiers> tier_weights{1.0, 0.8, 0.5};
  std::chrono::milliseconds max_speculative_ttl{60000};
};

struct IndexStats {
  std::uint64_t events = 0;          // events applied (all kinds)
  std::uint64_t blocks_stored = 0;   // engine blocks stored (duplicates and tier copies included)
  std::uint64_t blocks_removed = 0;  // engine blocks removed by BlockRemoved
  std::uint64_t tier_updates = 0;    // tokenless BlockStored blocks applied to a known engine hash
  std::uint64_t unknown_removals = 0;  // BlockRemoved of an engine hash (or tier) not in the index
  std::uint64_t unknown_tier_updates = 0;  // tokenless BlockStored of an unknown engine hash
  std::uint64_t unknown_parents = 0;       // BlockStored runs skipped: parent hash not in the index
  std::uint64_t rejected_events = 0;  // BlockStored with token count/block size we cannot chunk,
                                      // or no model known for the engine
  std::uint64_t conflicting_stores =
      0;                                // an engine hash re-stored with different tokens (kept old)
  std::uint64_t clears = 0;             // AllBlocksCleared + clear_engine()
  std::uint64_t evicted = 0;            // records dropped by the memory bound
  std::uint64_t speculative_added = 0;  // blocks marked speculative
};

class KvBlockIndex {
 public:
  static constexpr std::size_t kMaxEngines = 65535;

  // REQUIRES: 0 < num_engines <= kMaxEngines, block_size > 0.
  explicit KvBlockIndex(IndexOptions options);
  ~KvBlockIndex();
  KvBlockIndex(const KvBlockIndex&) = delete;
  KvBlockIndex& operator=(const KvBlockIndex&) = delete;

  // The model whose name seeds chains that start at block 0 (hash64(model)); BlockStored events of
  // an engine without a model are rejected (counted). Events naming a lora_name use that instead.
  void set_engine_model(std::size_t engine, std::string_view model);

  // Applies a batch from `engine` in order. Unknown engines are ignored.
  void apply(std::size_t engine, const kv_events::EventBatch& batch);

  // For each engine e (out.size() == num_engines()): the number of leading blocks of `blocks`
  // that e holds in any tier (or speculatively), i.e. the longest run from block 0. When
  // `weighted` is given it receives the sum over that run of each block's best-tier weight.
  void match(std::span<const std::uint64_t> blocks, std::vector<std::uint32_t>& out,
             std::vector<double>* weighted = nullptr) const;

  // Marks `blocks` as held by `engine` (GPU weight) until now + ttl (capped at
  // max_speculative_ttl).
  void add_speculative(std::size_t engine, std::span<const std::uint64_t> blocks,
                       std::chrono::milliseconds ttl);
  // Drops expired speculative marks of every engine (also done lazily by apply/add_speculative).
  void sweep_speculative();

  // Forgets everything about `engine` (real and speculative entries). Counted in stats().clears.
  void clear_engine(std::size_t engine);

  void mark_stale(std::size_t engine, std::chrono::steady_clock::time_point until);
  void clear_stale(std::size_t engine);
  bool is_stale(std::size_t engine) const;

  // --- introspection (tests, metrics) ---
  struct EngineRecord {
    std::uint64_t engine_hash = 0;
    std::uint64_t our_hash = 0;  // of the engine block's last sub-block
    std::array<std::uint16_t, kNumTiers> refs{};
  };
  // A snapshot of the engine's records (takes the engine's writer mutex).
  std::vector<EngineRecord> engine_records(std::size_t engine) const;
  // Records held by `engine` (engine hashes, not copies).
  std::size_t engine_entries(std::size_t engine) const;
  std::size_t entries() const;       // records over all engines
  std::size_t memory_bytes() const;  // approximate heap use of all tables
  IndexStats stats() const;
  std::size_t num_engines() const { return engines_.size(); }
  std::uint32_t block_size() const { return opts_.block_size; }
  const IndexOptions& options() const { return opts_; }

 private:
  struct Holder {
    std::uint16_t engine = 0;
    std::array<std::uint16_t, kNumTiers> refs{};
    std::uint32_t spec_until = 0;  // ms on the index clock; 0 = none
  };
  struct Entry {  // one holder inline, more in an overflow vector
    Holder first{kNoEngine, {}, 0};
    std::unique_ptr<std::vector<Holder>> more;
  };
  // Reader-writer spinlock: one atomic word, one CAS per acquisition (cheaper than
  // std::shared_mutex here). Critical sections are one hash-map probe; waiters yield after 64
  // spins.
  class CAPABILITY("mutex") RwSpin {
   public:
    void lock() ACQUIRE();
    void unlock() RELEASE() { v_.fetch_and(~kWriter, std::memory_order_release); }
    void lock_shared() ACQUIRE_SHARED();
    void unlock_shared() RELEASE_SHARED() { v_.fetch_sub(1, std::memory_order_release); }

   private:
    static constexpr std::uint32_t kWriter = 0x80000000u;
    std::atomic<std::uint32_t> v_{0};
  };
  struct alignas(64) Shard {
    mutable RwSpin mu;
    boost::unordered_flat_map<std::uint64_t, Entry> map GUARDED_BY(mu);
  };
  struct Record {
    std::uint64_t our = 0;
    std::uint64_t stamp = 0;
    std::array<std::uint16_t, kNumTiers> refs{};
  };
  // One engine's records: written by apply() on the event thread, read by queries.
  struct EngineState {
    mutable Mutex mu;                                                         // writer side
    boost::unordered_flat_map<std::uint64_t, Record> records GUARDED_BY(mu);  // engine hash ->
    // Engine blocks larger than ours: engine hash -> our hashes of its leading sub-blocks (the
    // last one is Record::our).
    boost::unordered_flat_map<std::uint64_t, std::vector<std::uint64_t>> multi GUARDED_BY(mu);
    // (engine hash, stamp), store order.
    std::deque<std::pair<std::uint64_t, std::uint64_t>> order GUARDED_BY(mu);
    std::uint64_t next_stamp GUARDED_BY(mu) = 0;
    std::uint64_t seed GUARDED_BY(mu) = 0;
    bool has_seed GUARDED_BY(mu) = false;
    std::atomic<std::size_t> entries{0};
    std::atomic<std::int64_t> stale_until{0};  // steady_clock ticks; 0 = fresh

    std::atomic<bool> has_spec{false};  // spec non-empty (a hint)
    Mutex spec_mu;
    // (until, our hash), insertion order.
    std::deque<std::pair<std::uint32_t, std::uint64_t>> spec GUARDED_BY(spec_mu);
  };
  static constexpr std::uint16_t kNoEngine = 0xffff;

  std::uint32_t now_ms() const;
  struct Tally;  // per-batch counter deltas, flushed once per apply()
  Shard& shard_of(std::uint64_t h) const;
  // Global-table edits (each takes the shard lock).
  void add_ref(std::uint64_t our, std::uint16_t engine, Tier t);
  void sub_ref(std::uint64_t our, std::uint16_t engine, std::size_t tier, std::uint32_t n,
               std::uint32_t now);
  void drop_holder(std::uint64_t our, std::uint16_t engine);
  void set_spec(std::uint64_t our, std::uint16_t engine, std::uint32_t until);
  void expire_spec(std::uint64_t our, std::uint16_t engine, std::uint32_t now, bool force);
  // Per-engine edits, with the engine's writer mutex held.
  void store_locked(EngineState& es, std::uint16_t e, const kv_events::BlockStored& s, Tally& t)
      REQUIRES(es.mu);
  void remove_locked(EngineState& es, std::uint16_t e, const kv_events::BlockRemoved& r, Tally& t)
      REQUIRES(es.mu);
  void drop_record_locked(EngineState& es, std::uint16_t e, std::uint64_t engine_hash,
                          std::uint32_t now) REQUIRES(es.mu);
  void clear_locked(EngineState& es, std::uint16_t e) REQUIRES(es.mu);
  void sweep_spec(EngineState& es, std::uint16_t e, std::uint32_t now);

  IndexOptions opts_;
  std::size_t per_engine_cap_;
  std::size_t shard_mask_;
  std::unique_ptr<Shard[]> shards_;
  std::vector<std::unique_ptr<EngineState>> engines_;
  std::chrono::steady_clock::time_point epoch_;
  std::atomic<std::size_t> entries_{0};
  // Counters: written under engine writer mutexes (several engines at once), so atomics.
  struct Counters;
  std::unique_ptr<Counters> counters_;
};

}  // namespace kvroute::kv_index
