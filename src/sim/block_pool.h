// File: sim/block_pool.h
//
// BlockPool: the paged KV cache of one simulated engine, after vLLM V1's BlockPool
// (vllm/v1/core/block_pool.py). Blocks are ref-counted by the requests that hold them; a block
// whose count drops to 0 keeps its cached hash and joins the tail of the free queue; allocation
// takes from the head (least recently freed first) and evicts the block's hash there
// (BlockRemoved). A cache hit on a free block takes it out of the queue (touch). The pool records
// the KV events of these operations in the order they happen.
//
//   BlockPool pool(1024, /*enable_caching=*/true, /*emit_events=*/true);
//   std::vector<std::uint32_t> blocks;
//   pool.allocate(2, blocks);                       // blocks {0, 1}
//   pool.cache_full_blocks(blocks, hashes, std::nullopt, tokens, 16);
//   pool.free_reversed(blocks);                     // 1 then 0 go to the free-queue tail
//
// Thread-safety: not synchronized: owned by one Engine and used only on that engine's thread (the
// io_context thread of its SimCluster server, sim/server.h).
#pragma once

#include <boost/unordered/unordered_flat_map.hpp>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "kv_events/event.h"

namespace kvroute::sim {

class BlockPool {
 public:
  static constexpr std::uint32_t kNoBlock = 0xffffffffu;

  BlockPool(std::uint32_t num_blocks, bool enable_caching, bool emit_events);

  std::uint32_t num_blocks() const { return sentinel_; }
  // Blocks in the free queue (ref count 0), cached or not.
  std::uint32_t num_free() const { return num_free_; }
  // Blocks holding a cached hash (referenced or free).
  std::uint32_t num_cached() const { return num_cached_; }
  std::uint32_t ref_count(std::uint32_t block) const { return blocks_[block].ref; }
  bool caching_enabled() const { return enable_caching_; }

  // A cached block holding `hash` (the earliest cached one when several do), or kNoBlock.
  std::uint32_t lookup(std::uint64_t hash) const;

  // Takes a reference on each block; a block with count 0 leaves the free queue.
  void touch(std::span<const std::uint32_t> blocks);

  // Pops n blocks from the head of the free queue into `out` (appended), evicting any cached hash
  // (one BlockRemoved event per evicted block). REQUIRES: n <= num_free().
  void allocate(std::uint32_t n, std::vector<std::uint32_t>& out);

  // Drops one reference on each block, walking `blocks` from the back (vLLM frees a request's
  // blocks in reverse, so its tail blocks are evicted first); blocks reaching 0 join the queue
  // tail.
  void free_reversed(std::span<const std::uint32_t> blocks);

  // Registers hashes[i] for blocks[i] (which must not be cached yet) and records one BlockStored
  // covering the run. `tokens` holds blocks.size() * block_size token ids.
  void cache_full_blocks(std::span<const std::uint32_t> blocks,
                         std::span<const std::uint64_t> hashes,
                         std::optional<std::uint64_t> parent_hash,
                         std::span<const std::uint32_t> tokens, std::uint32_t block_size);

  // Drops every cached hash and records AllBlocksCleared. Fails (returns false, changes nothing)
  // while any block is referenced, as vLLM does.
  bool reset_prefix_cache();

  // Events recorded since the last call, oldest first.
  std::vector<kv_events::Event> take_events();

  // Ground truth: the hash of every cached block (one entry per block, so a hash cached in two
  // blocks appears twice), sorted.
  std::vector<std::uint64_t> cached_hashes() const;
  // Free-queue order, head first (tests).
  std::vector<std::uint32_t> free_queue_for_test() const;
  // Checks the queue links, counts and the hash index against each other; false on corruption.
  bool check_invariants() const;

 private:
  struct Block {
    std::uint64_t hash = 0;
    std::uint32_t ref = 0;
    std::uint32_t prev = kNoBlock;  // free-queue links (the sentinel is index num_blocks)
    std::uint32_t next = kNoBlock;
    std::uint32_t dup_next = kNoBlock;  // next block cached under the same hash
    bool cached = false;
    bool in_free = false;
  };

  void queue_remove(std::uint32_t b);
  void queue_push_back(std::uint32_t b);
  void evict(std::uint32_t b);

  std::vector<Block> blocks_;  // plus one sentinel at the end
  std::uint32_t sentinel_;
  std::uint32_t num_free_ = 0;
  std::uint32_t num_cached_ = 0;
  bool enable_caching_;
  bool emit_events_;
  boost::unordered_flat_map<std::uint64_t, std::uint32_t> index_;  // hash -> first block
  std::vector<kv_events::Event> events_;
};

}  // namespace kvroute::sim
