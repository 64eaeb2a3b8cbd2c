// End-to-end tests of PreciseIndexer over real ZMQ on 127.0.0.1 (OS-picked ports):
//   - against SimCluster engines driven over HTTP with a mixed workload that forces evictions:
//   after
//     quiescence each engine's indexed block multiset equals the engine's ground truth, and the
//     sim's engine hashes agree with the router's chained hashes;
//   - faults, with a mini engine (sim::BlockPool, so real eviction order) that hashes blocks with
//     its OWN algorithm and publishes through a ZmqEventPublisher: dropped messages recovered by
//     replay (not stale), dropped messages without replay (stale, cleared, fresh again after the
//     TTL or an AllBlocksCleared), publisher restart (reset), a slow consumer, and engines that
//     never publish or do not exist.
// Every wait is bounded.
#include "kv_index/precise_indexer.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <random>
#include <thread>

#include "common/hash.h"
#include "kv_events/publisher.h"
#include "sim/block_pool.h"
#include "sim/server.h"
#include "testing/raw_http.h"
#include "testing/wait.h"

namespace kvroute::kv_index {
namespace {

using namespace std::chrono_literals;

using testing::wait_until;

// The engine hashes the index holds for `e` in the GPU tier, one per copy, sorted.
std::vector<std::uint64_t> indexed(const KvBlockIndex& idx, std::size_t e) {
  std::vector<std::uint64_t> out;
  for (const auto& r : idx.engine_records(e)) {
    for (std::uint16_t k = 0; k < r.refs[0]; ++k) out.push_back(r.engine_hash);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::uint16_t port_of(const std::string& url) {
  return static_cast<std::uint16_t>(std::stoi(url.substr(url.rfind(':') + 1)));
}

// --- against the simulator ----------------------------------------------------------------------

std::string words(const std::string& prefix, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += fmt::format("{}{}{} ", prefix, i, i % 3 ? "" : "x");
  return s;
}

TEST(SimEndToEnd, IndexEqualsEachEngineGroundTruthAfterMixedWorkloadWithEvictions) {
  // 48 blocks, 768 tokens: the workload below evicts a lot.
  const sim::SimOptions o = sim::loopback_options(2, "sim-model", 48);
  sim::SimCluster cluster(o);
  ASSERT_TRUE(cluster.start().has_value());

  IndexerConfig cfg;
  cfg.num_backends = 2;
  for (std::size_t i = 0; i < 2; ++i) {
    cfg.engines.push_back(
        {i, cluster.endpoints()[i].kv_events, cluster.endpoints()[i].kv_replay, o.model, ""});
  }
  auto made = PreciseIndexer::create(std::move(cfg));
  ASSERT_TRUE(made.has_value()) << made.error().message;
  auto& indexer = **made;

  auto send = [&](std::size_t e, const std::string& prompt, int max_tokens) {
    const std::string body =
        fmt::format(R"({{"model":"sim-model","prompt":"{}","max_tokens":{}}})", prompt, max_tokens);
    return testing::post_json(port_of(cluster.endpoints()[e].url), "/v1/completions", body).status;
  };
  // Warm-up: until each engine's first batch arrived (PUB/SUB slow joiner; replay covers the rest).
  // Each attempt sends a new prompt: a repeated one would hit the cache and publish nothing.
  int attempt = 0;
  for (std::size_t e = 0; e < 2; ++e) {
    ASSERT_TRUE(wait_until([&] {
      EXPECT_EQ(send(e, words(fmt::format("warm{}a{}w", e, ++attempt), 20), 1), 200);
      return wait_until([&] { return indexer.index().engine_entries(e) > 0; }, 50ms);
    }));
  }

  std::mt19937 rng(7);
  const std::string system = words("sys", 40);
  for (int i = 0; i < 60; ++i) {
    const std::size_t e = rng() % 2;
    std::string prompt;
    switch (rng() % 4) {
      case 0:
        prompt = system + words(fmt::format("u{}w", i), 10 + static_cast<int>(rng() % 30));
        break;
      case 1:
        prompt = system + words("again", 20);
        break;  // repeated prompt
      case 2:
        prompt = words(fmt::format("long{}w", i), 200 + static_cast<int>(rng() % 200));
        break;  // evicts
      default:
        prompt = words(fmt::format("s{}w", i % 5), 33);
        break;
    }
    ASSERT_EQ(send(e, prompt, 1 + static_cast<int>(rng() % 20)), 200) << i;
  }

  for (int e = 0; e < 2; ++e) {
    std::vector<std::uint64_t> truth;
    const bool same = wait_until([&] {
      truth = cluster.cached_block_hashes(e);
      return indexed(indexer.index(), static_cast<std::size_t>(e)) == truth;
    });
    EXPECT_TRUE(same) << "engine " << e << ": truth " << truth.size() << " blocks, index "
                      << indexed(indexer.index(), static_cast<std::size_t>(e)).size();
    // The sim hashes exactly as the router does, so the remapped hashes equal the engine's.
    for (const auto& r : indexer.index().engine_records(static_cast<std::size_t>(e))) {
      EXPECT_EQ(r.our_hash, r.engine_hash);
    }
  }
  const auto st = indexer.stats(true);
  EXPECT_GT(st.index.blocks_removed, 0u) << "the workload must evict";
  EXPECT_EQ(st.index.unknown_removals, 0u);
  EXPECT_EQ(st.index.unknown_parents, 0u);
  EXPECT_EQ(st.index.rejected_events, 0u);
  EXPECT_EQ(st.stale_engines, 0u);
  EXPECT_GT(st.memory_bytes, 0u);

  // A routing lookup for a prompt cached on engine 1 only.
  const std::string fresh = words("lookup", 48);
  ASSERT_EQ(send(1, fresh, 1), 200);
  std::vector<std::uint32_t> ids;  // the word tokenizer's ids, via the engine's /tokenize
  auto tok = testing::post_json(port_of(cluster.endpoints()[1].url), "/tokenize",
                                fmt::format(R"({{"prompt":"{}"}})", fresh));
  ASSERT_EQ(tok.status, 200);
  {
    auto pos = tok.body.find("\"tokens\":[");
    ASSERT_NE(pos, std::string::npos);
    pos += 10;
    while (pos < tok.body.size() && tok.body[pos] != ']') {
      std::size_t end = tok.body.find_first_of(",]", pos);
      ids.push_back(static_cast<std::uint32_t>(std::stoul(tok.body.substr(pos, end - pos))));
      pos = tok.body[end] == ',' ? end + 1 : end;
    }
  }
  const auto blocks = chained_block_hashes(ids, 16, hash64(o.model));
  ASSERT_EQ(blocks.size(), 3u);
  std::vector<std::uint32_t> runs;
  EXPECT_TRUE(wait_until([&] {
    indexer.index().match(blocks, runs);
    return runs[1] == 3 && runs[0] == 0;
  })) << runs[0]
      << " " << runs[1];
  indexer.stop();
  cluster.stop();
}

// --- faults, with a mini engine ------------------------------------------------------------------

// One engine: a vLLM-like block pool (LRU eviction, events) hashing blocks with its own function
// (not kvroute's), publishing one batch per request through a ZmqEventPublisher.
struct MiniEngine {
  explicit MiniEngine(kv_events::PublisherConfig pc, std::uint32_t blocks = 64)
      : pool(blocks, true, true) {
    auto p = kv_events::ZmqEventPublisher::create(std::move(pc));
    EXPECT_TRUE(p.has_value()) << (p ? "" : p.error().message);
    if (p) pub = std::move(*p);
  }
  static kv_events::PublisherConfig config(bool replay) {
    kv_events::PublisherConfig pc;
    pc.endpoint = "tcp://127.0.0.1:*";
    if (replay) pc.replay_endpoint = "tcp://127.0.0.1:*";
    return pc;
  }
  // Runs one request of `tokens`: reuses its cached prefix, allocates the rest (evicting), caches
  // the full blocks, frees them, publishes the events. `drop`: the batch is lost on the wire.
  void run(const std::vector<std::uint32_t>& tokens, bool drop = false) {
    const std::size_t nb = tokens.size() / 16;
    std::vector<std::uint64_t> h(nb);
    std::uint64_t parent = 0x243f6a8885a308d3ull;  // the engine's own NONE_HASH
    for (std::size_t i = 0; i < nb; ++i) {
      parent = hash64(std::span<const std::uint32_t>(tokens).subspan(i * 16, 16),
                      parent ^ 0x9e3779b97f4a7c15ull);
      h[i] = parent;
    }
    std::vector<std::uint32_t> blocks;
    std::size_t hits = 0;
    while (hits < nb && pool.lookup(h[hits]) != sim::BlockPool::kNoBlock)
      blocks.push_back(pool.lookup(h[hits++]));
    pool.touch(blocks);
    if (nb - hits > pool.num_free()) {
      pool.free_reversed(blocks);
      return;
    }
    pool.allocate(static_cast<std::uint32_t>(nb - hits), blocks);
    if (nb > hits) {
      pool.cache_full_blocks(
          std::span<const std::uint32_t>(blocks).subspan(hits),
          std::span<const std::uint64_t>(h).subspan(hits),
          hits ? std::optional<std::uint64_t>(h[hits - 1]) : std::nullopt,
          std::span<const std::uint32_t>(tokens).subspan(hits * 16, (nb - hits) * 16), 16);
    }
    pool.free_reversed(blocks);
    publish(drop);
  }
  void reset_cache() {
    EXPECT_TRUE(pool.reset_prefix_cache());
    publish(false);
  }
  void publish(bool drop) {
    kv_events::EventBatch b;
    b.ts = 1.0;
    b.events = pool.take_events();
    if (b.events.empty()) return;
    if (drop)
      pub->drop_next_for_test();
    else
      ++sent;
    ++total;
    pub->publish(b);
  }
  std::vector<std::uint64_t> truth() const { return pool.cached_hashes(); }

  sim::BlockPool pool;
  std::uint64_t sent = 0;   // batches published and not dropped
  std::uint64_t total = 0;  // batches published
  std::unique_ptr<kv_events::ZmqEventPublisher> pub;
};

// Mixed prompts over a few shared prefixes, deterministic.
std::vector<std::uint32_t> prompt(std::mt19937& rng) {
  const std::uint32_t family = static_cast<std::uint32_t>(rng() % 6);
  const std::size_t shared = 16 * (1 + rng() % 4);
  const std::size_t own = 16 * (rng() % 4) + rng() % 16;
  std::vector<std::uint32_t> t;
  for (std::size_t i = 0; i < shared; ++i)
    t.push_back(family * 1000 + static_cast<std::uint32_t>(i));
  const std::uint32_t salt = static_cast<std::uint32_t>(rng());
  for (std::size_t i = 0; i < own; ++i) t.push_back(salt + static_cast<std::uint32_t>(i));
  return t;
}

// A prompt no earlier one shares a block with: its run always publishes a BlockStored.
std::vector<std::uint32_t> unique_prompt() {
  static std::uint32_t next = 1u << 30;
  std::vector<std::uint32_t> t(32);
  for (auto& x : t) x = next++;
  return t;
}

struct Harness {
  explicit Harness(std::vector<IndexedEngine> engines, std::size_t backends,
                   std::function<void(IndexerConfig&)> tweak = nullptr) {
    IndexerConfig cfg;
    cfg.num_backends = backends;
    cfg.engines = std::move(engines);
    for (auto& e : cfg.engines) e.model = "mini";
    cfg.subscriber.replay_timeout = 1000ms;
    if (tweak) tweak(cfg);
    auto made = PreciseIndexer::create(std::move(cfg));
    EXPECT_TRUE(made.has_value()) << (made ? "" : made.error().message);
    if (made) indexer = std::move(*made);
  }
  // Publishes warm-up runs until the subscriber has one batch of engine 0 (slow joiner).
  bool warm_up(MiniEngine& m, std::mt19937& rng) {
    return wait_until([&] {
      const auto before = indexer->stats().batches;
      m.run(prompt(rng));
      return wait_until([&] { return indexer->stats().batches > before; }, 30ms);
    });
  }
  bool converged(MiniEngine& m, std::size_t backend) {
    return wait_until([&] { return indexed(indexer->index(), backend) == m.truth(); });
  }
  std::unique_ptr<PreciseIndexer> indexer;
};

TEST(Faults, DroppedMessagesAreRecoveredByReplayAndNotStale) {
  MiniEngine m(MiniEngine::config(true));
  Harness h({{0, m.pub->endpoint(), m.pub->replay_endpoint(), "", ""}}, 1);
  std::mt19937 rng(1);
  ASSERT_TRUE(h.warm_up(m, rng));
  for (int i = 0; i < 200; ++i) {
    if (i % 17 != 5) {
      m.run(prompt(rng));
      continue;
    }
    // One gap at a time: the subscriber reports a second hole met while a replay runs as stale
    // (kv_events/subscriber.h), which is not what this test is about.
    ASSERT_TRUE(wait_until([&] { return h.indexer->stats().batches == m.total; }));
    m.run(unique_prompt(), /*drop=*/true);
    m.run(unique_prompt());  // reveals the gap
    ASSERT_TRUE(wait_until([&] { return h.indexer->stats().batches == m.total; }));
  }
  EXPECT_TRUE(h.converged(m, 0));
  const auto st = h.indexer->stats();
  EXPECT_GT(st.subscriber.replayed, 0u);
  EXPECT_EQ(st.stale_reports, 0u);
  EXPECT_TRUE(h.indexer->has_precise(0));
  EXPECT_GT(st.index.blocks_removed, 0u);
  EXPECT_EQ(st.index.unknown_removals, 0u);
  EXPECT_EQ(st.index.unknown_parents, 0u);
}

TEST(Faults, DroppedMessageWithoutReplayMakesTheEngineStaleThenFreshAgain) {
  MiniEngine m(MiniEngine::config(false));
  // The TTL leaves a slow (sanitized, loaded) run ample time to see the engine stale.
  Harness h({{0, m.pub->endpoint(), "", "", ""}}, 1, [](IndexerConfig& c) { c.stale_ttl = 1s; });
  std::mt19937 rng(2);
  ASSERT_TRUE(h.warm_up(m, rng));
  // Without replay the warm-up may be a late join (stale, cleared); an AllBlocksCleared makes the
  // engine known again, as a real engine's /reset_prefix_cache would.
  m.reset_cache();
  for (int i = 0; i < 30; ++i) m.run(prompt(rng));
  ASSERT_TRUE(h.converged(m, 0));
  ASSERT_TRUE(h.indexer->has_precise(0));
  const auto stale_before = h.indexer->stats().stale_reports;
  // The gap is reported before the batch that reveals it is applied: count batches from here.
  const auto batches_before = h.indexer->stats().batches;
  const auto sent_before = m.sent;
  m.run(unique_prompt(), /*drop=*/true);
  m.run(prompt(rng));
  ASSERT_TRUE(wait_until([&] { return h.indexer->stats().stale_reports > stale_before; }));
  EXPECT_FALSE(h.indexer->has_precise(0));
  // Cleared, then rebuilt from later events only: never a block the engine does not hold.
  for (int i = 0; i < 20; ++i) m.run(prompt(rng));
  ASSERT_TRUE(wait_until([&] {
    return h.indexer->stats().batches - batches_before == m.sent - sent_before;
  })) << "applied "
      << h.indexer->stats().batches - batches_before << " of " << m.sent - sent_before
      << " batches; subscriber received " << h.indexer->stats().subscriber.received << ", gaps "
      << h.indexer->stats().subscriber.gaps << ", stale reports "
      << h.indexer->stats().stale_reports - stale_before;
  auto truth = m.truth();
  for (auto hsh : indexed(h.indexer->index(), 0)) {
    EXPECT_TRUE(std::binary_search(truth.begin(), truth.end(), hsh)) << "phantom block " << hsh;
  }
  EXPECT_TRUE(wait_until([&] { return h.indexer->has_precise(0); }, 5s))
      << "fresh again after stale_ttl";
  // AllBlocksCleared makes a stale engine fresh at once (its cache is known empty).
  m.run(unique_prompt(), /*drop=*/true);
  m.run(prompt(rng));
  ASSERT_TRUE(wait_until([&] { return !h.indexer->has_precise(0); }));
  m.reset_cache();
  EXPECT_TRUE(wait_until([&] { return h.indexer->has_precise(0); }, 250ms));
  for (int i = 0; i < 10; ++i) m.run(prompt(rng));
  EXPECT_TRUE(h.converged(m, 0));
}

TEST(Faults, PublisherRestartResetsTheEngine) {
  auto m = std::make_unique<MiniEngine>(MiniEngine::config(true));
  const std::string ep = m->pub->endpoint(), rep = m->pub->replay_endpoint();
  Harness h({{0, ep, rep, "", ""}}, 1);
  std::mt19937 rng(3);
  ASSERT_TRUE(h.warm_up(*m, rng));
  for (int i = 0; i < 40; ++i) m->run(prompt(rng));
  ASSERT_TRUE(h.converged(*m, 0));
  ASSERT_GT(h.indexer->index().engine_entries(0), 0u);
  // The engine restarts: empty cache, a new publisher on the same ports, seq from 0.
  m.reset();
  kv_events::PublisherConfig pc;
  pc.endpoint = ep;
  pc.replay_endpoint = rep;
  pc.attach = kv_events::PublisherConfig::Attach::kBind;
  m = std::make_unique<MiniEngine>(pc);
  ASSERT_NE(m->pub, nullptr);
  ASSERT_TRUE(wait_until([&] {
    m->run(prompt(rng));
    return wait_until([&] { return h.indexer->stats().resets > 0; }, 30ms);
  }));
  for (int i = 0; i < 20; ++i) m->run(prompt(rng));
  EXPECT_TRUE(h.converged(*m, 0));
  EXPECT_TRUE(h.indexer->has_precise(0));
}

// An engine that restarts silently (no traffic since, so no event reveals the restart) must not
// keep attracting requests with blocks it lost: the router's health checks call forget_backend when
// the engine goes down. Only that engine's entries go; events after it rebuild them.
TEST(Faults, BackendSeenDownIsForgottenAndRebuiltFromLaterEvents) {
  MiniEngine a(MiniEngine::config(true));
  MiniEngine b(MiniEngine::config(true));
  Harness h({{0, a.pub->endpoint(), a.pub->replay_endpoint(), "", ""},
             {1, b.pub->endpoint(), b.pub->replay_endpoint(), "", ""}},
            2);
  std::mt19937 rng(5);
  ASSERT_TRUE(h.warm_up(a, rng));
  ASSERT_TRUE(h.warm_up(b, rng));
  for (int i = 0; i < 20; ++i) {
    a.run(prompt(rng));
    b.run(prompt(rng));
  }
  ASSERT_TRUE(h.converged(a, 0));
  ASSERT_TRUE(h.converged(b, 1));
  const auto b_entries = h.indexer->index().engine_entries(1);
  ASSERT_GT(h.indexer->index().engine_entries(0), 0u);
  h.indexer->forget_backend(0);
  EXPECT_EQ(h.indexer->index().engine_entries(0), 0u);
  EXPECT_EQ(h.indexer->index().engine_entries(1), b_entries);
  EXPECT_EQ(h.indexer->stats().backend_down_clears, 1u);
  EXPECT_TRUE(h.indexer->has_precise(0));  // fresh, holding nothing: no phantom blocks
  h.indexer->forget_backend(7);            // out of range: ignored
  // The engine restarted: its cache is empty too; what it stores next is indexed again.
  a.reset_cache();
  for (int i = 0; i < 10; ++i) a.run(prompt(rng));
  EXPECT_TRUE(h.converged(a, 0));
}

TEST(Faults, SlowConsumerStaysConsistent) {
  MiniEngine m(MiniEngine::config(true));
  Harness h({{0, m.pub->endpoint(), m.pub->replay_endpoint(), "", ""}}, 1, [](IndexerConfig& c) {
    c.before_apply_for_test = [] { std::this_thread::sleep_for(1ms); };
  });
  std::mt19937 rng(4);
  ASSERT_TRUE(h.warm_up(m, rng));
  for (int i = 0; i < 300; ++i) m.run(prompt(rng));  // published far faster than consumed
  EXPECT_TRUE(h.converged(m, 0));
  EXPECT_EQ(h.indexer->stats().stale_reports, 0u);
}

TEST(Faults, SilentAndAbsentEnginesDoNotBlockOthers) {
  MiniEngine live(MiniEngine::config(true));
  MiniEngine silent(MiniEngine::config(true));  // bound, never publishes
  // Nothing listens on a port we bound and released.
  std::string absent;
  {
    MiniEngine gone(MiniEngine::config(false));
    absent = gone.pub->endpoint();
  }
  Harness h({{0, live.pub->endpoint(), live.pub->replay_endpoint(), "", ""},
             {1, silent.pub->endpoint(), silent.pub->replay_endpoint(), "", ""},
             {2, absent, "", "", ""}},
            4);
  std::mt19937 rng(5);
  ASSERT_TRUE(h.warm_up(live, rng));
  for (int i = 0; i < 100; ++i) live.run(prompt(rng));
  EXPECT_TRUE(h.converged(live, 0));
  for (std::size_t b : {1u, 2u}) {
    EXPECT_TRUE(h.indexer->has_precise(b))
        << b;  // tracked and fresh: holds nothing, like an idle engine
    EXPECT_EQ(h.indexer->index().engine_entries(b), 0u);
  }
  EXPECT_FALSE(h.indexer->has_precise(3)) << "no endpoint: no precise info";
  EXPECT_EQ(h.indexer->stats().stale_engines, 0u);
}

}  // namespace
}  // namespace kvroute::kv_index
