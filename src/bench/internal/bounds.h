// File: bench/internal/bounds.h
//
// Offline reference points for a cluster's prefix-cache hit rate, computed from the block-hash
// sequence of the requests in the order they were sent (docs/adr/0201):
//  - infinite: one cache that never evicts (every block seen before is a hit) — no router can do
//    better on this sequence;
//  - pooled LRU: one LRU cache holding the sum of the engines' blocks — what a perfect router
//    would get if the engines' caches were one (an LRU, not an optimal cache, so a reference
//    point rather than a strict bound; it never exceeds `infinite`).
// Both count as vLLM does: hits are whole blocks from block 0 up to the first miss, capped so
// that at least one prompt token is recomputed (hit <= num_tokens - 1); queries are prompt tokens.
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
  std::uint64_t capacity_blocks = 0;  // 0: unbounded (lru == infinite)
  double infinite_hit_rate() const;
  double lru_hit_rate() const;
};

class BoundsCalculator {
 public:
  // `capacity_blocks` 0: the pooled cache is unbounded.
  BoundsCalculator(std::uint32_t block_size, std::uint64_t capacity_blocks);

  // One request: its full-block chained hashes and its prompt length in tokens.
  void add(std::span<const std::uint64_t> block_hashes, std::uint64_t num_tokens);
  // Convenience: hashes the tokens itself (chained_block_hashes with seed 0).
  void add_tokens(std::span<const std::uint32_t> tokens);
  const BoundsResult& result() const { return r_; }

 private:
  std::uint32_t block_size_;
  BoundsResult r_;
  std::unordered_set<std::uint64_t> seen_;
  std::list<std::uint64_t> lru_;  // front: most recently used
  std::unordered_map<std::uint64_t, std::list<std::uint64_t>::iterator> pos_;
};

// p in [0, 100]; `sorted` ascending; 0 for an empty input.
double percentile_sorted(std::span<const double> sorted, double p);
// Sorts a copy.
double percentile(std::vector<double> values, double p);

}  // namespace kvroute::bench
