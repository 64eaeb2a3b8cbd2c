#include "sim/block_pool.h"

#include <gtest/gtest.h>

#include <numeric>

namespace kvroute::sim {
namespace {

std::vector<std::uint32_t> tokens(std::size_t n, std::uint32_t first = 1) {
  std::vector<std::uint32_t> t(n);
  std::iota(t.begin(), t.end(), first);
  return t;
}

TEST(BlockPool, AllocatesInIdOrderAndFreesTailFirst) {
  BlockPool pool(6, true, true);
  std::vector<std::uint32_t> a;
  pool.allocate(3, a);
  EXPECT_EQ(a, (std::vector<std::uint32_t>{0, 1, 2}));
  EXPECT_EQ(pool.num_free(), 3u);
  pool.free_reversed(a);
  EXPECT_EQ(pool.free_queue_for_test(), (std::vector<std::uint32_t>{3, 4, 5, 2, 1, 0}));
  EXPECT_TRUE(pool.check_invariants());
}

TEST(BlockPool, EvictionEmitsBlockRemovedPerBlock) {
  BlockPool pool(2, true, true);
  std::vector<std::uint32_t> a;
  pool.allocate(2, a);
  const std::vector<std::uint64_t> hashes{11, 22};
  pool.cache_full_blocks(a, hashes, std::nullopt, tokens(8), 4);
  auto ev = pool.take_events();
  ASSERT_EQ(ev.size(), 1u);
  const auto& stored = std::get<kv_events::BlockStored>(ev[0]);
  EXPECT_EQ(stored.block_hashes, hashes);
  EXPECT_EQ(stored.parent_block_hash, std::nullopt);
  EXPECT_EQ(stored.token_ids, tokens(8));
  EXPECT_EQ(stored.block_size, 4u);
  EXPECT_EQ(stored.medium, "GPU");
  EXPECT_EQ(stored.lora_id, std::nullopt);
  EXPECT_EQ(stored.lora_name, std::nullopt);

  pool.free_reversed(a);  // queue: 1, 0
  EXPECT_EQ(pool.lookup(22), 1u);
  std::vector<std::uint32_t> b;
  pool.allocate(2, b);
  EXPECT_EQ(b, (std::vector<std::uint32_t>{1, 0}));
  ev = pool.take_events();
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(std::get<kv_events::BlockRemoved>(ev[0]).block_hashes,
            (std::vector<std::uint64_t>{22}));
  EXPECT_EQ(std::get<kv_events::BlockRemoved>(ev[1]).block_hashes,
            (std::vector<std::uint64_t>{11}));
  EXPECT_EQ(std::get<kv_events::BlockRemoved>(ev[1]).medium, "GPU");
  EXPECT_EQ(pool.lookup(11), BlockPool::kNoBlock);
  EXPECT_TRUE(pool.cached_hashes().empty());
  EXPECT_TRUE(pool.check_invariants());
}

TEST(BlockPool, TouchTakesFreeBlockOutOfQueue) {
  BlockPool pool(3, true, false);
  std::vector<std::uint32_t> a;
  pool.allocate(3, a);
  pool.free_reversed(a);  // queue 2, 1, 0
  const std::uint32_t hit[] = {2};
  pool.touch(hit);
  EXPECT_EQ(pool.ref_count(2), 1u);
  EXPECT_EQ(pool.free_queue_for_test(), (std::vector<std::uint32_t>{1, 0}));
  pool.touch(hit);  // a second holder: count only
  EXPECT_EQ(pool.ref_count(2), 2u);
  pool.free_reversed(hit);
  EXPECT_EQ(pool.num_free(), 2u);
  pool.free_reversed(hit);
  EXPECT_EQ(pool.free_queue_for_test(), (std::vector<std::uint32_t>{1, 0, 2}));
  EXPECT_TRUE(pool.take_events().empty());  // events off
  EXPECT_TRUE(pool.check_invariants());
}

TEST(BlockPool, DuplicateHashesAreCachedPerBlock) {
  // Two requests can compute the same block concurrently; vLLM caches both and emits both.
  BlockPool pool(3, true, true);
  std::vector<std::uint32_t> a, b;
  pool.allocate(1, a);
  pool.allocate(1, b);
  const std::vector<std::uint64_t> h{77};
  pool.cache_full_blocks(a, h, std::nullopt, tokens(4), 4);
  pool.cache_full_blocks(b, h, std::nullopt, tokens(4), 4);
  EXPECT_EQ(pool.cached_hashes(), (std::vector<std::uint64_t>{77, 77}));
  EXPECT_EQ(pool.lookup(77), a[0]);  // the first cached one
  EXPECT_EQ(pool.num_cached(), 2u);
  pool.free_reversed(a);  // queue: 2, a
  std::vector<std::uint32_t> c;
  pool.allocate(2, c);  // takes 2 then a: evicts a's copy
  EXPECT_EQ(pool.lookup(77), b[0]);
  EXPECT_EQ(pool.cached_hashes(), (std::vector<std::uint64_t>{77}));
  EXPECT_EQ(pool.take_events().size(), 3u);  // 2 stored + 1 removed
  EXPECT_TRUE(pool.check_invariants());
}

TEST(BlockPool, ResetOnlyWhenNothingIsReferenced) {
  BlockPool pool(2, true, true);
  std::vector<std::uint32_t> a;
  pool.allocate(1, a);
  const std::vector<std::uint64_t> h{5};
  pool.cache_full_blocks(a, h, std::nullopt, tokens(4), 4);
  pool.take_events();
  EXPECT_FALSE(pool.reset_prefix_cache());
  EXPECT_TRUE(pool.take_events().empty());
  pool.free_reversed(a);
  EXPECT_TRUE(pool.reset_prefix_cache());
  auto ev = pool.take_events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_TRUE(std::holds_alternative<kv_events::AllBlocksCleared>(ev[0]));
  EXPECT_EQ(pool.lookup(5), BlockPool::kNoBlock);
  EXPECT_EQ(pool.num_cached(), 0u);
  EXPECT_TRUE(pool.check_invariants());
}

}  // namespace
}  // namespace kvroute::sim
