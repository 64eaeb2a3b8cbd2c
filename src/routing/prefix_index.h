// File: routing/prefix_index.h
//
// ApproxPrefixIndex: what the router believes each backend holds in its prefix cache, learned from
// its own routing decisions (no engine feedback). Keys are chained block hashes (token blocks when
// a tokenizer is configured, else character blocks), so holding block i implies holding the whole
// prefix up to i.
//
// Forgetting: each backend has a capacity in blocks (vllm:cache_config_info num_gpu_blocks, or
// configured) and a logical clock that advances by one per block the engine must allocate for what
// the router sends it (prompt blocks it did not hold, then output blocks at completion); a block
// it already held is touched, not allocated. An entry stamped at clock s is alive while
// clock - s < capacity: the engine's LRU must have evicted anything older than its last `capacity`
// block allocations. (Counting every prompt block instead, hits included, ages a hot prefix's
// neighbours once per request that reuses it: ADR 0024 measured that as the index forgetting
// prefixes the engines still held.) Dead entries are dropped lazily when touched and by an
// incremental sweep, so memory stays bounded without any global pass or global lock.
//
// Concurrency: the table is split into 64 shards, each with its own mutex; a lookup or insert
// takes one shard lock per block it touches, never a global one. Thread-safe.
//
// Thread-safety: every member is safe from any thread (the workers call match/insert/advance per
// request; the scrape loop set_capacity, the health loop clear_backend). Each shard's mutex guards
// its map and holder count and is held for one block at a time, never two shards at once; the
// per-backend clocks and capacities, the sweep cursor and the insert counters are relaxed atomics.
// A match that runs beside inserts sees each block as of its own shard lock, not one snapshot.
#pragma once

#include <atomic>
#include <boost/unordered/unordered_flat_map.hpp>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "common/mutex.h"

namespace kvroute::routing {

class ApproxPrefixIndex {
 public:
  static constexpr std::size_t kMaxBackends = 1024;

  explicit ApproxPrefixIndex(std::size_t num_backends,
                             std::uint64_t default_capacity_blocks = 1u << 20);

  // Sets the capacity of backend `b` in blocks.
  void set_capacity(std::size_t b, std::uint64_t blocks);
  // Records that `blocks` (in prefix order) were sent to backend `b`, of which the first `held`
  // were alive there (match()'s answer for b): only the others advance b's clock.
  void insert(std::size_t b, std::span<const std::uint64_t> blocks, std::size_t held = 0);
  // Advances b's clock by `n` blocks it allocated without a known hash (generated tokens).
  void advance(std::size_t b, std::uint64_t n);
  // Longest alive prefix run (in blocks, from block 0) for each backend; out.size() == backends.
  // Assumes chained hashes: if b holds block i it holds blocks < i (binary search over depth).
  void match(std::span<const std::uint64_t> blocks, std::vector<std::uint32_t>& out) const;
  // match()'s answer for backend `b` alone (0 for an unknown b): what insert() takes as `held`.
  std::uint32_t held(std::size_t b, std::span<const std::uint64_t> blocks) const;
  // Forgets everything about backend `b` (restart, ejection).
  void clear_backend(std::size_t b);

  std::size_t entries() const;       // live + not yet swept (block, backend) pairs
  std::size_t memory_bytes() const;  // approximate heap use
  std::size_t num_backends() const { return clock_.size(); }

 private:
  struct Holder {
    std::uint16_t backend;
    std::uint32_t stamp_lo;  // low 32 bits of the clock (wraps; alive check uses modular distance)
  };
  // One holder inline (the common case), more in an overflow vector: a 24-byte slot with its key.
  struct Entry {
    static constexpr std::uint16_t kEmpty = 0xffff;
    Holder first{kEmpty, 0};
    std::unique_ptr<std::vector<Holder>> more;
    std::uint32_t size() const {
      return (first.backend != kEmpty ? 1u : 0u) +
             (more ? static_cast<std::uint32_t>(more->size()) : 0u);
    }
    Holder& at(std::uint32_t i) { return i == 0 ? first : (*more)[i - 1]; }
    const Holder& at(std::uint32_t i) const { return i == 0 ? first : (*more)[i - 1]; }
    void push(Holder h);
    void erase(std::uint32_t i);  // swaps in the last holder
  };
  struct alignas(64) Shard {
    mutable Mutex mu;
    boost::unordered_flat_map<std::uint64_t, Entry> map GUARDED_BY(mu);
    std::size_t holders GUARDED_BY(mu) = 0;
  };

  bool alive(const Holder& h) const;
  void sweep_some();
  // Backends holding `block` alive, as a bitmask over `mask` words.
  void holders_of(std::uint64_t block, std::vector<std::uint64_t>& mask) const;

  std::vector<std::atomic<std::uint64_t>> clock_;
  std::vector<std::atomic<std::uint64_t>> capacity_;
  std::unique_ptr<Shard[]> shards_;
  std::atomic<std::uint64_t> inserts_{0};
  std::atomic<std::size_t> sweep_cursor_{0};
  std::atomic<std::uint64_t> since_sweep_{0};
};

}  // namespace kvroute::routing
