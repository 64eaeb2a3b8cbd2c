// File: bench/internal/bounds.h
//
// Offline reference points for a cluster's prefix-cache hit rate, computed from the block-hash
// sequence of the requests in the order they were sent (docs/adr/0201, docs/adr/0024):
//  - infinite: one cache that never evicts (every block seen before is a hit) — no router can do
//    better on this sequence;
//  - pooled LRU: one LRU cache holding the sum of the engines' blocks — what a perfect router
//    would get if the engines' caches were one (an LRU, not an optimal cache, so a reference
//    point rather than a strict bound; it never exceeds `infinite`);
//  - pooled LRU with outputs: the same cache, but every request's generated tokens also take
//    blocks (engines cache them and evict them first; nothing later reuses them);
//  - load-capped longest-prefix oracle: `engines` separate LRU caches of capacity/engines blocks
//    each (with outputs), requests assigned one at a time to the engine that holds the longest
//    prefix among those whose request count stays within `load_cap` x the mean (ties: fewest
//    requests). It knows every cache exactly and never meets concurrency: a router that matches it
//    at that balance is as good as routing by prefix gets.
// All count as vLLM does: hits are whole blocks from block 0 up to the first miss, capped so that
// at least one prompt token is recomputed (hit <= num_tokens - 1); queries are prompt tokens.
// After a lookup every full block of the prompt is cached; the prompt's blocks are inserted so
// that its tail is evicted first (vLLM frees a request's blocks in reverse order).
//
// Also: percentiles (linear interpolation between closest ranks, numpy's default).
//
// Thread-safety: a BoundsCalculator is not synchronized: one per run, fed by one thread. The
// percentile functions are pure; safe from any thread.
#pragma once

#include <cstdint>
#include <list>
#include <span>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace kvroute::bench {

struct BoundsResult {
  std::uint64_t requests = 0;
  std::uint64_t query_tokens = 0;
  std::uint64_t infinite_hit_tokens = 0;
  std::uint64_t lru_hit_tokens = 0;
  std::uint64_t lru_output_hit_tokens = 0;  // pooled LRU, outputs taking blocks
  std::uint64_t oracle_hit_tokens = 0;      // load-capped longest-prefix oracle
  std::uint64_t capacity_blocks = 0;        // 0: unbounded (lru == infinite)
  std::uint32_t block_size = 0;             // tokens per block of the bounds
  std::uint32_t engines = 0;                // of the oracle (0: no oracle)
  double load_cap = 0;                      // of the oracle: max/mean requests allowed
  double oracle_imbalance = 0;              // the oracle's max/mean requests per engine
  double infinite_hit_rate() const;
  double lru_hit_rate() const;
  double lru_output_hit_rate() const;
  double oracle_hit_rate() const;
};

// A cache of block hashes in LRU order with a fixed capacity (0: unbounded).
class LruBlocks {
 public:
  explicit LruBlocks(std::uint64_t capacity) : capacity_(capacity) {}
  bool contains(std::uint64_t h) const { return pos_.contains(h); }
  // Leading blocks held (up to `max_blocks`).
  std::size_t prefix_hits(std::span<const std::uint64_t> hashes, std::size_t max_blocks) const;
  // Makes `h` the most recently used, evicting the least recently used beyond capacity.
  void touch(std::uint64_t h);
  // Caches a request's blocks: `output_blocks` generated ones first (ids no prompt block has,
  // so they are evicted first and never hit), then the prompt's, tail first.
  void admit(std::span<const std::uint64_t> hashes, std::uint64_t output_blocks);
  std::size_t size() const { return lru_.size(); }

 private:
  std::uint64_t capacity_;
  std::uint64_t next_output_id_ = 0;
  std::list<std::uint64_t> lru_;  // front: most recently used
  std::unordered_map<std::uint64_t, std::list<std::uint64_t>::iterator> pos_;
};

// vLLM's counting: of a prompt's `num_hashes` full blocks, at most (num_tokens - 1) / block_size
// can hit (at least one token is recomputed).
std::size_t max_hit_blocks(std::size_t num_hashes, std::uint64_t num_tokens,
                           std::uint32_t block_size);
// Blocks a request's generated tokens fill: the prompt's partial last block and the ones after it.
std::uint64_t output_blocks(std::uint64_t num_tokens, std::uint64_t output_tokens,
                            std::uint32_t block_size);

class BoundsCalculator {
 public:
  // `capacity_blocks` 0: the pooled cache is unbounded. `engines` 0: no oracle.
  BoundsCalculator(std::uint32_t block_size, std::uint64_t capacity_blocks,
                   std::uint32_t engines = 0, double load_cap = 1.1);

  // One request: its full-block chained hashes, its prompt length and its output length in
  // tokens.
  void add(std::span<const std::uint64_t> block_hashes, std::uint64_t num_tokens,
           std::uint64_t output_tokens = 0);
  // Convenience: hashes the tokens itself (chained_block_hashes with seed 0).
  void add_tokens(std::span<const std::uint32_t> tokens, std::uint64_t output_tokens = 0);
  const BoundsResult& result() const { return r_; }

 private:
  std::uint32_t block_size_;
  BoundsResult r_;
  std::unordered_set<std::uint64_t> seen_;
  LruBlocks pooled_;
  LruBlocks pooled_out_;
  std::vector<LruBlocks> engines_;
  std::vector<std::uint64_t> assigned_;
};

// p in [0, 100]; `sorted` ascending; 0 for an empty input.
double percentile_sorted(std::span<const double> sorted, double p);
// Sorts a copy.
double percentile(std::vector<double> values, double p);

}  // namespace kvroute::bench
