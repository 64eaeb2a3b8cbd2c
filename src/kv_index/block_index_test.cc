// Unit tests of KvBlockIndex (stores, removes, duplicates, clears, tiers, parent remapping across
// runs, tokenless tier updates, unknown removals, bounded memory, speculative entries, concurrent
// readers) and of the precise-prefix-cache-scorer's fallback rules. No network.
#include "kv_index/block_index.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "common/hash.h"
#include "kv_index/precise_scorer.h"
#include "testing/wait.h"

namespace kvroute::kv_index {
namespace {

using namespace std::chrono_literals;
using kv_events::AllBlocksCleared;
using kv_events::BlockRemoved;
using kv_events::BlockStored;
using kv_events::EventBatch;

constexpr std::string_view kModel = "test-model";

std::vector<std::uint32_t> tokens(std::uint32_t first, std::size_t n) {
  std::vector<std::uint32_t> t(n);
  for (std::size_t i = 0; i < n; ++i) t[i] = first + static_cast<std::uint32_t>(i) * 7;
  return t;
}

std::vector<std::uint64_t> ours(const std::vector<std::uint32_t>& t,
                                std::string_view seed = kModel) {
  return chained_block_hashes(t, 16, hash64(seed));
}

// A BlockStored for blocks [from, from + hashes.size()) of `t` at engine block size `ebs`.
BlockStored stored(const std::vector<std::uint32_t>& t, std::size_t from,
                   std::vector<std::uint64_t> hashes, std::optional<std::uint64_t> parent,
                   std::uint32_t ebs = 16, const char* medium = "GPU") {
  BlockStored s;
  s.token_ids.assign(t.begin() + static_cast<std::ptrdiff_t>(from * ebs),
                     t.begin() + static_cast<std::ptrdiff_t>((from + hashes.size()) * ebs));
  s.block_hashes = std::move(hashes);
  s.parent_block_hash = parent;
  s.block_size = ebs;
  s.medium = medium;
  return s;
}

EventBatch batch(kv_events::Event e) {
  EventBatch b;
  b.events.push_back(std::move(e));
  return b;
}

BlockRemoved removed(std::vector<std::uint64_t> hashes, const char* medium = "GPU") {
  BlockRemoved r;
  r.block_hashes = std::move(hashes);
  r.medium = medium;
  return r;
}

KvBlockIndex make_index(std::size_t engines = 2, std::size_t max_entries = 1 << 20) {
  IndexOptions o;
  o.num_engines = engines;
  o.max_entries = max_entries;
  return KvBlockIndex(o);
}

std::vector<std::uint32_t> runs(const KvBlockIndex& idx, std::span<const std::uint64_t> blocks) {
  std::vector<std::uint32_t> out;
  idx.match(blocks, out);
  return out;
}

class IndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (std::size_t e = 0; e < idx.num_engines(); ++e) idx.set_engine_model(e, kModel);
  }
  KvBlockIndex idx = make_index();
};

TEST_F(IndexTest, StoreIsKeyedByOurChainedHashesWhateverTheEngineHashes) {
  auto t = tokens(1, 64);
  idx.apply(0, batch(stored(t, 0, {0xdead, 0xbeef, 0xcafe, 0xf00d}, std::nullopt)));
  const auto q = ours(t);
  EXPECT_EQ(runs(idx, q), (std::vector<std::uint32_t>{4, 0}));
  // A prompt sharing 2 blocks, then diverging.
  auto t2 = t;
  t2[40] = 99999;
  EXPECT_EQ(runs(idx, ours(t2)), (std::vector<std::uint32_t>{2, 0}));
  // Another model's seed gives other hashes: no match.
  EXPECT_EQ(runs(idx, ours(t, "other-model")), (std::vector<std::uint32_t>{0, 0}));
  EXPECT_EQ(idx.stats().blocks_stored, 4u);
  EXPECT_EQ(idx.entries(), 4u);
}

TEST_F(IndexTest, ParentRemapChainsAcrossSeveralRuns) {
  auto t = tokens(5, 96);
  idx.apply(1, batch(stored(t, 0, {11, 12}, std::nullopt)));
  idx.apply(1, batch(stored(t, 2, {13}, 12)));
  idx.apply(1, batch(stored(t, 3, {14, 15, 16}, 13)));
  EXPECT_EQ(runs(idx, ours(t)), (std::vector<std::uint32_t>{0, 6}));
  // Records map engine hashes to our hashes.
  auto recs = idx.engine_records(1);
  std::sort(recs.begin(), recs.end(),
            [](auto& a, auto& b) { return a.engine_hash < b.engine_hash; });
  ASSERT_EQ(recs.size(), 6u);
  const auto q = ours(t);
  for (std::size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(recs[i].engine_hash, 11 + i);
    EXPECT_EQ(recs[i].our_hash, q[i]);
  }
  // A run whose parent we never saw is skipped and counted.
  idx.apply(0, batch(stored(t, 2, {13}, 12)));
  EXPECT_EQ(idx.stats().unknown_parents, 1u);
  EXPECT_EQ(idx.engine_entries(0), 0u);
}

TEST_F(IndexTest, LoraNameSeedsTheChain) {
  auto t = tokens(3, 32);
  auto s = stored(t, 0, {1, 2}, std::nullopt);
  s.lora_name = "my-adapter";
  idx.apply(0, batch(s));
  EXPECT_EQ(runs(idx, ours(t, "my-adapter"))[0], 2u);
  EXPECT_EQ(runs(idx, ours(t))[0], 0u);
}

TEST_F(IndexTest, RemovalBreaksTheRunAndDuplicatesAreRefCounted) {
  auto t = tokens(1, 64);
  idx.apply(0, batch(stored(t, 0, {1, 2, 3, 4}, std::nullopt)));
  idx.apply(0, batch(stored(t, 2, {3}, 2)));  // the engine caches block 2 a second time
  const auto q = ours(t);
  idx.apply(0, batch(removed({3})));
  EXPECT_EQ(runs(idx, q)[0], 4u) << "one copy of block 2 remains";
  idx.apply(0, batch(removed({3})));
  EXPECT_EQ(runs(idx, q)[0], 2u) << "block 2 gone: the run stops before it";
  idx.apply(0, batch(removed({3})));
  idx.apply(0, batch(removed({777})));
  EXPECT_EQ(idx.stats().unknown_removals, 2u);
  EXPECT_EQ(idx.stats().blocks_removed, 2u);
  EXPECT_EQ(idx.entries(), 3u);
}

TEST_F(IndexTest, AllBlocksClearedAndClearEngineTouchOnlyThatEngine) {
  auto t = tokens(1, 48);
  idx.apply(0, batch(stored(t, 0, {1, 2, 3}, std::nullopt)));
  idx.apply(1, batch(stored(t, 0, {7, 8, 9}, std::nullopt)));
  const auto q = ours(t);
  EXPECT_EQ(runs(idx, q), (std::vector<std::uint32_t>{3, 3}));
  idx.apply(0, batch(AllBlocksCleared{}));
  EXPECT_EQ(runs(idx, q), (std::vector<std::uint32_t>{0, 3}));
  EXPECT_EQ(idx.engine_entries(0), 0u);
  idx.clear_engine(1);
  EXPECT_EQ(runs(idx, q), (std::vector<std::uint32_t>{0, 0}));
  EXPECT_EQ(idx.entries(), 0u);
  EXPECT_EQ(idx.stats().clears, 2u);
  // Stores after the clear work again (fresh chain from a nil parent).
  idx.apply(1, batch(stored(t, 0, {7}, std::nullopt)));
  EXPECT_EQ(runs(idx, q)[1], 1u);
}

TEST_F(IndexTest, TiersTokenlessUpdatesAndWeights) {
  auto t = tokens(1, 48);
  idx.apply(0, batch(stored(t, 0, {1, 2, 3}, std::nullopt)));
  // An offloading connector copies blocks 0-1 to CPU without tokens (older connectors).
  BlockStored cpu;
  cpu.block_hashes = {1, 2, 555};
  cpu.block_size = 0;
  cpu.medium = "CPU";
  idx.apply(0, batch(cpu));
  EXPECT_EQ(idx.stats().tier_updates, 2u);
  EXPECT_EQ(idx.stats().unknown_tier_updates, 1u);
  const auto q = ours(t);
  std::vector<std::uint32_t> out;
  std::vector<double> w;
  idx.match(q, out, &w);
  EXPECT_EQ(out[0], 3u);
  EXPECT_DOUBLE_EQ(w[0], 3.0);  // best tier GPU
  idx.apply(0, batch(removed({1, 2, 3}, "GPU")));
  idx.match(q, out, &w);
  EXPECT_EQ(out[0], 2u) << "blocks 0-1 still on CPU";
  EXPECT_DOUBLE_EQ(w[0], 1.6);
  idx.apply(0, batch(removed({1, 2}, "CPU")));
  idx.match(q, out, &w);
  EXPECT_EQ(out[0], 0u);
  EXPECT_EQ(idx.entries(), 0u);
  EXPECT_EQ(tier_of(std::nullopt), Tier::kGpu);
  EXPECT_EQ(tier_of(std::string("cpu")), Tier::kCpu);
  EXPECT_EQ(tier_of(std::string("STORAGE")), Tier::kOther);
}

TEST_F(IndexTest, EngineBlocksLargerThanOursAreSplit) {
  auto t = tokens(1, 128);
  idx.apply(0, batch(stored(t, 0, {100, 200}, std::nullopt, 32)));  // 2 x 32 tokens = 4 of ours
  idx.apply(0, batch(stored(t, 2, {300}, 200, 32)));
  const auto q = ours(t);
  EXPECT_EQ(runs(idx, q)[0], 6u);
  idx.apply(0, batch(removed({200})));
  EXPECT_EQ(runs(idx, q)[0], 2u);
  EXPECT_EQ(idx.entries(), 2u);
  idx.clear_engine(0);
  EXPECT_EQ(runs(idx, q)[0], 0u);
}

TEST_F(IndexTest, RejectsEventsItCannotChunk) {
  auto t = tokens(1, 48);
  auto bad = stored(t, 0, {1, 2, 3}, std::nullopt);
  bad.token_ids.pop_back();  // 47 tokens for 3 blocks
  idx.apply(0, batch(bad));
  auto odd = stored(t, 0, {1, 2}, std::nullopt, 24);  // 24 is not a multiple of 16
  idx.apply(0, batch(odd));
  KvBlockIndex nomodel = make_index(1);
  nomodel.apply(0, batch(stored(t, 0, {1}, std::nullopt)));
  nomodel.apply(5, batch(stored(t, 0, {1}, std::nullopt)));  // unknown engine: ignored
  EXPECT_EQ(idx.stats().rejected_events, 2u);
  EXPECT_EQ(nomodel.stats().rejected_events, 1u);
  EXPECT_EQ(idx.entries() + nomodel.entries(), 0u);
}

TEST(IndexMemory, PerEngineCapEvictsLeastRecentlyStored) {
  KvBlockIndex idx = make_index(2, 16);  // 8 records per engine
  idx.set_engine_model(0, kModel);
  auto t = tokens(1, 16 * 20);
  for (std::uint64_t i = 0; i < 20; ++i) {
    idx.apply(0, batch(stored(t, i, {1000 + i},
                              i == 0 ? std::nullopt : std::optional<std::uint64_t>(999 + i))));
  }
  EXPECT_EQ(idx.engine_entries(0), 8u);
  EXPECT_EQ(idx.stats().evicted, 12u);
  auto recs = idx.engine_records(0);
  for (const auto& r : recs) EXPECT_GE(r.engine_hash, 1012u);
  // Block 0 was evicted: the index under-reports (never over-reports).
  EXPECT_EQ(runs(idx, ours(t))[0], 0u);
  // Re-storing refreshes recency: 1012 survives the next evictions.
  idx.apply(0, batch(stored(t, 12, {1012}, 1011 + 0)));  // parent 1011 was evicted -> skipped
  EXPECT_EQ(idx.stats().unknown_parents, 1u);
  EXPECT_GT(idx.memory_bytes(), 0u);
  // Churn far beyond the cap keeps the tables bounded.
  for (std::uint64_t round = 0; round < 2000; ++round) {
    idx.apply(0, batch(stored(t, 0, {50000 + round}, std::nullopt)));
  }
  EXPECT_EQ(idx.engine_entries(0), 8u);
  EXPECT_LT(idx.memory_bytes(), 64u << 10);
}

TEST_F(IndexTest, SpeculativeEntriesExpireAndAreReplacedByRealOnes) {
  auto t = tokens(1, 48);
  const auto q = ours(t);
  idx.add_speculative(1, q, 60ms);
  std::vector<std::uint32_t> out;
  std::vector<double> w;
  idx.match(q, out, &w);
  EXPECT_EQ(out, (std::vector<std::uint32_t>{0, 3}));
  EXPECT_DOUBLE_EQ(w[1], 3.0);
  // The real BlockStored for the first 2 blocks arrives: they stay after the TTL.
  idx.apply(1, batch(stored(t, 0, {1, 2}, std::nullopt)));
  std::this_thread::sleep_for(90ms);
  EXPECT_EQ(runs(idx, q), (std::vector<std::uint32_t>{0, 2}));
  idx.sweep_speculative();
  EXPECT_EQ(idx.stats().speculative_added, 3u);
  // Removing the real entries leaves nothing behind.
  idx.apply(1, batch(removed({1, 2})));
  EXPECT_EQ(runs(idx, q), (std::vector<std::uint32_t>{0, 0}));
  // Speculative marks are dropped by a clear, and bounded per engine.
  idx.add_speculative(0, q, 10s);
  idx.clear_engine(0);
  EXPECT_EQ(runs(idx, q)[0], 0u);
}

TEST(IndexStale, MarkAndExpire) {
  KvBlockIndex idx = make_index(2);
  EXPECT_FALSE(idx.is_stale(0));
  idx.mark_stale(0, std::chrono::steady_clock::now() + 40ms);
  EXPECT_TRUE(idx.is_stale(0));
  EXPECT_FALSE(idx.is_stale(1));
  std::this_thread::sleep_for(60ms);
  EXPECT_FALSE(idx.is_stale(0));
  idx.mark_stale(1, std::chrono::steady_clock::now() + 10s);
  idx.clear_stale(1);
  EXPECT_FALSE(idx.is_stale(1));
}

TEST(IndexConcurrency, ReadersRunWhileTheWriterChurns) {
  KvBlockIndex idx = make_index(4);
  for (std::size_t e = 0; e < 4; ++e) idx.set_engine_model(e, kModel);
  auto t = tokens(1, 16 * 32);
  const auto q = ours(t);
  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> bad{0}, reads{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&] {
      std::vector<std::uint32_t> out;
      while (!done.load()) {
        idx.match(q, out);
        for (auto v : out) bad += v > 32 ? 1 : 0;
        ++reads;
      }
    });
  }
  for (int round = 0; round < 200; ++round) {
    const std::size_t e = static_cast<std::size_t>(round) % 4;
    std::vector<std::uint64_t> hs(32);
    for (std::uint64_t i = 0; i < 32; ++i) hs[i] = static_cast<std::uint64_t>(round) * 100 + i + 1;
    idx.apply(e, batch(stored(t, 0, hs, std::nullopt)));
    idx.add_speculative((e + 1) % 4, q, 5ms);
    idx.apply(e, batch(removed(std::vector<std::uint64_t>(hs.begin() + 16, hs.end()))));
    if (round % 50 == 49) idx.apply(e, batch(AllBlocksCleared{}));
  }
  // On a loaded machine the readers may not have been scheduled yet: wait (bounded) for reads.
  EXPECT_TRUE(testing::wait_until([&] { return reads.load() > 0; }, 2000ms));
  done = true;
  for (auto& th : readers) th.join();
  EXPECT_EQ(bad.load(), 0u);
  EXPECT_GT(reads.load(), 0u);
}

// --- scorer
// ---------------------------------------------------------------------------------------

struct ScorerFixture {
  ScorerFixture() {
    for (int i = 0; i < 3; ++i) {
      owned.push_back(std::make_unique<routing::Backend>(
          i, "b" + std::to_string(i), "http://127.0.0.1:1", http::Endpoint{"127.0.0.1", 1}));
      ptrs.push_back(owned.back().get());
    }
    ctx = std::make_shared<routing::RoutingContext>(3);
    IndexerConfig cfg;
    cfg.num_backends = 3;
    // Backends 0 and 1 publish events (nothing listens there: ZMQ connects lazily); 2 does not.
    cfg.engines.push_back({0, "tcp://127.0.0.1:9", "", std::string(kModel), ""});
    cfg.engines.push_back({1, "tcp://127.0.0.1:9", "", std::string(kModel), "second"});
    auto r = PreciseIndexer::create(std::move(cfg));
    EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message);
    indexer = std::shared_ptr<PreciseIndexer>(std::move(*r));
  }
  std::vector<std::unique_ptr<routing::Backend>> owned;
  std::vector<routing::Backend*> ptrs;
  std::shared_ptr<routing::RoutingContext> ctx;
  std::shared_ptr<PreciseIndexer> indexer;
};

TEST(PreciseScorer, ScoresFromThePreciseIndexAndFallsBackForUntrackedAndStale) {
  ScorerFixture f;
  auto t = tokens(1, 64);
  routing::RouteRequest req;
  req.tokens = t;
  req.blocks = ours(t);
  req.tokens_per_block = 16;
  req.prompt_tokens = 64;
  f.indexer->index().apply(0, batch(stored(t, 0, {1, 2, 3}, std::nullopt)));
  f.indexer->index().apply(1, batch(stored(t, 0, {1}, std::nullopt)));
  // The approximate index believes backends 1 and 2 hold the whole prompt.
  f.ctx->prefix.insert(1, req.blocks);
  f.ctx->prefix.insert(2, req.blocks);

  config::PluginConfig pc{std::string(kPreciseScorerType), "precise", "{exportMatch: true}", 1};
  auto made = make_precise_scorer(pc, f.ctx, f.indexer);
  ASSERT_TRUE(made.has_value()) << made.error().message;
  auto& scorer = **made;
  EXPECT_EQ(scorer.type(), kPreciseScorerType);
  routing::CycleState st;
  st.req = &req;
  std::vector<double> out(3);
  scorer.score(st, f.ptrs, out);
  EXPECT_DOUBLE_EQ(out[0], 0.75);  // precise: 3 of 4
  EXPECT_DOUBLE_EQ(out[1], 0.25);  // precise beats the approximate belief
  EXPECT_DOUBLE_EQ(out[2], 1.0);   // no events: the approximate index
  EXPECT_EQ(st.matched_blocks, (std::vector<std::uint32_t>{3, 1, 4}));  // exported

  // Backend 0 goes stale: approximate (nothing routed there -> 0).
  f.indexer->index().mark_stale(0, std::chrono::steady_clock::now() + 10s);
  routing::CycleState st2;
  st2.req = &req;
  scorer.score(st2, f.ptrs, out);
  EXPECT_DOUBLE_EQ(out[0], 0.0);
  EXPECT_FALSE(f.indexer->has_precise(0));
  EXPECT_TRUE(f.indexer->has_precise(1));
  EXPECT_FALSE(f.indexer->has_precise(2));

  // Character blocks (no tokens): everything from the approximate index.
  routing::RouteRequest chars = req;
  chars.tokens.clear();
  routing::CycleState st3;
  st3.req = &chars;
  scorer.score(st3, f.ptrs, out);
  EXPECT_DOUBLE_EQ(out[1], 1.0);

  // The speculative hook marks the chosen backend.
  auto* ps = dynamic_cast<PrecisePrefixScorer*>(&scorer);
  ASSERT_NE(ps, nullptr);
  ps->on_routed(req, *f.ptrs[1]);
  std::vector<std::uint32_t> m;
  f.indexer->index().match(req.blocks, m);
  EXPECT_EQ(m[1], 4u);
  ps->on_routed(chars, *f.ptrs[1]);  // no-op for character blocks
}

TEST(PreciseScorer, FactoryIgnoresOtherTypesAndValidates) {
  auto ctx = std::make_shared<routing::RoutingContext>(1);
  config::PluginConfig other{"queue-scorer", "q", "{}", 1};
  auto r = make_precise_scorer(other, ctx, nullptr);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(*r, nullptr);
  config::PluginConfig mine{std::string(kPreciseScorerType), "p", "{}", 3};
  EXPECT_FALSE(make_precise_scorer(mine, ctx, nullptr).has_value());
  ScorerFixture f;
  config::PluginConfig bad{std::string(kPreciseScorerType), "p", "{exportMatch: [1}", 4};
  EXPECT_FALSE(make_precise_scorer(bad, f.ctx, f.indexer).has_value());
  config::PluginConfig list{std::string(kPreciseScorerType), "p", "[1, 2]", 5};
  EXPECT_FALSE(make_precise_scorer(list, f.ctx, f.indexer).has_value());
}

TEST(PreciseIndexerConfig, FromRouterConfigAndValidation) {
  config::Config cfg;
  cfg.block_size = 32;
  cfg.backends.push_back({"http://a:1", "a", {"m1"}, "tcp://a:5557", "tcp://a:5558", std::nullopt});
  cfg.backends.push_back({"http://b:1", "b", {}, "", "", std::nullopt});
  cfg.backends.push_back({"http://c:1", "c", {}, "tcp://c:5557", "", std::nullopt});
  auto ic = indexer_config_from(cfg);
  EXPECT_EQ(ic.num_backends, 3u);
  EXPECT_EQ(ic.index.block_size, 32u);
  ASSERT_EQ(ic.engines.size(), 2u);
  EXPECT_EQ(ic.engines[0].backend, 0u);
  EXPECT_EQ(ic.engines[0].model, "m1");
  EXPECT_EQ(ic.engines[0].replay_endpoint, "tcp://a:5558");
  EXPECT_EQ(ic.engines[1].backend, 2u);
  EXPECT_EQ(ic.subscriber.topic_filter, "");

  IndexerConfig bad;
  EXPECT_FALSE(PreciseIndexer::create(bad).has_value());  // no backends
  bad.num_backends = 1;
  bad.engines.push_back({3, "tcp://127.0.0.1:9", "", "", ""});
  EXPECT_FALSE(PreciseIndexer::create(bad).has_value());  // backend out of range
  bad.engines = {{0, "tcp://127.0.0.1:9", "", "", ""}, {0, "tcp://127.0.0.1:9", "", "", "x"}};
  EXPECT_FALSE(PreciseIndexer::create(bad).has_value());  // twice
  bad.engines = {{0, "not an endpoint", "", "", ""}};
  EXPECT_FALSE(PreciseIndexer::create(bad).has_value());
}

}  // namespace
}  // namespace kvroute::kv_index
