#include "sim/block_pool.h"

#include <algorithm>
#include <utility>

namespace kvroute::sim {

namespace {
const std::string kMediumGpu = "GPU";
}  // namespace

BlockPool::BlockPool(std::uint32_t num_blocks, bool enable_caching, bool emit_events)
    : blocks_(static_cast<std::size_t>(num_blocks) + 1),
      sentinel_(num_blocks),
      enable_caching_(enable_caching),
      emit_events_(emit_events && enable_caching) {
  blocks_[sentinel_].prev = sentinel_;
  blocks_[sentinel_].next = sentinel_;
  for (std::uint32_t b = 0; b < num_blocks; ++b) queue_push_back(b);
}

std::uint32_t BlockPool::lookup(std::uint64_t hash) const {
  auto it = index_.find(hash);
  return it == index_.end() ? kNoBlock : it->second;
}

void BlockPool::queue_remove(std::uint32_t b) {
  Block& blk = blocks_[b];
  blocks_[blk.prev].next = blk.next;
  blocks_[blk.next].prev = blk.prev;
  blk.prev = blk.next = kNoBlock;
  blk.in_free = false;
  --num_free_;
}

void BlockPool::queue_push_back(std::uint32_t b) {
  Block& blk = blocks_[b];
  const std::uint32_t last = blocks_[sentinel_].prev;
  blk.prev = last;
  blk.next = sentinel_;
  blocks_[last].next = b;
  blocks_[sentinel_].prev = b;
  blk.in_free = true;
  ++num_free_;
}

void BlockPool::touch(std::span<const std::uint32_t> blocks) {
  for (std::uint32_t b : blocks) {
    if (blocks_[b].ref == 0 && blocks_[b].in_free) queue_remove(b);
    ++blocks_[b].ref;
  }
}

void BlockPool::evict(std::uint32_t b) {
  Block& blk = blocks_[b];
  if (!blk.cached) return;
  auto it = index_.find(blk.hash);
  if (it != index_.end()) {
    if (it->second == b) {
      if (blk.dup_next == kNoBlock) {
        index_.erase(it);
      } else {
        it->second = blk.dup_next;
      }
    } else {
      std::uint32_t cur = it->second;
      while (cur != kNoBlock && blocks_[cur].dup_next != b) cur = blocks_[cur].dup_next;
      if (cur != kNoBlock) blocks_[cur].dup_next = blk.dup_next;
    }
  }
  blk.dup_next = kNoBlock;
  blk.cached = false;
  --num_cached_;
  if (emit_events_) {
    events_.emplace_back(kv_events::BlockRemoved{.block_hashes = {blk.hash}, .medium = kMediumGpu});
  }
  blk.hash = 0;
}

void BlockPool::allocate(std::uint32_t n, std::vector<std::uint32_t>& out) {
  for (std::uint32_t i = 0; i < n && num_free_ > 0; ++i) {
    const std::uint32_t b = blocks_[sentinel_].next;
    queue_remove(b);
    evict(b);
    blocks_[b].ref = 1;
    out.push_back(b);
  }
}

void BlockPool::free_reversed(std::span<const std::uint32_t> blocks) {
  for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) {
    Block& blk = blocks_[*it];
    if (blk.ref == 0) continue;  // defensive: never double-free
    if (--blk.ref == 0) queue_push_back(*it);
  }
}

void BlockPool::cache_full_blocks(std::span<const std::uint32_t> blocks,
                                  std::span<const std::uint64_t> hashes,
                                  std::optional<std::uint64_t> parent_hash,
                                  std::span<const std::uint32_t> tokens, std::uint32_t block_size) {
  if (!enable_caching_ || blocks.empty()) return;
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    Block& blk = blocks_[blocks[i]];
    if (blk.cached) continue;  // cannot happen for a fresh run; keep the index consistent anyway
    blk.cached = true;
    ++num_cached_;
    blk.hash = hashes[i];
    blk.dup_next = kNoBlock;
    auto [it, inserted] = index_.try_emplace(hashes[i], blocks[i]);
    if (!inserted) {  // another block already holds this hash: keep it first, append this one
      std::uint32_t cur = it->second;
      while (blocks_[cur].dup_next != kNoBlock) cur = blocks_[cur].dup_next;
      blocks_[cur].dup_next = blocks[i];
    }
  }
  if (emit_events_) {
    kv_events::BlockStored ev;
    ev.block_hashes.assign(hashes.begin(), hashes.end());
    ev.parent_block_hash = parent_hash;
    ev.token_ids.assign(tokens.begin(), tokens.end());
    ev.block_size = block_size;
    ev.medium = kMediumGpu;
    events_.emplace_back(std::move(ev));
  }
}

bool BlockPool::reset_prefix_cache() {
  if (num_free_ != num_blocks()) return false;
  index_.clear();
  num_cached_ = 0;
  for (std::uint32_t b = 0; b < sentinel_; ++b) {
    blocks_[b].cached = false;
    blocks_[b].hash = 0;
    blocks_[b].dup_next = kNoBlock;
  }
  if (emit_events_) events_.emplace_back(kv_events::AllBlocksCleared{});
  return true;
}

std::vector<kv_events::Event> BlockPool::take_events() {
  std::vector<kv_events::Event> out;
  out.swap(events_);
  return out;
}

std::vector<std::uint64_t> BlockPool::cached_hashes() const {
  std::vector<std::uint64_t> out;
  for (std::uint32_t b = 0; b < sentinel_; ++b) {
    if (blocks_[b].cached) out.push_back(blocks_[b].hash);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::uint32_t> BlockPool::free_queue_for_test() const {
  std::vector<std::uint32_t> out;
  for (std::uint32_t b = blocks_[sentinel_].next; b != sentinel_; b = blocks_[b].next) {
    out.push_back(b);
  }
  return out;
}

bool BlockPool::check_invariants() const {
  // Queue: walk forward, every member free with ref 0, back links consistent, count matches.
  std::uint32_t count = 0;
  std::uint32_t prev = sentinel_;
  for (std::uint32_t b = blocks_[sentinel_].next; b != sentinel_; b = blocks_[b].next) {
    if (b >= sentinel_ || !blocks_[b].in_free || blocks_[b].ref != 0 || blocks_[b].prev != prev) {
      return false;
    }
    prev = b;
    if (++count > sentinel_) return false;
  }
  if (count != num_free_) return false;
  std::uint32_t zero_ref = 0;
  std::size_t cached = 0;
  for (std::uint32_t b = 0; b < sentinel_; ++b) {
    if (blocks_[b].ref == 0) ++zero_ref;
    if (blocks_[b].ref == 0 && !blocks_[b].in_free) return false;
    if (blocks_[b].cached) ++cached;
  }
  if (zero_ref != num_free_) return false;
  // Index: each chain holds cached blocks of its hash; the chains cover every cached block.
  std::size_t chained = 0;
  for (const auto& [hash, first] : index_) {
    for (std::uint32_t b = first; b != kNoBlock; b = blocks_[b].dup_next) {
      if (!blocks_[b].cached || blocks_[b].hash != hash) return false;
      if (++chained > cached) return false;
    }
  }
  return chained == cached && cached == num_cached_;
}

}  // namespace kvroute::sim
