#include "sim/internal/engine.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <numeric>
#include <random>

#include "common/hash.h"

namespace kvroute::sim {
namespace {

using kv_events::AllBlocksCleared;
using kv_events::BlockRemoved;
using kv_events::BlockStored;
using kv_events::Event;

constexpr char kModel[] = "test-model";

std::vector<std::uint32_t> tokens(std::size_t n, std::uint32_t first = 1) {
  std::vector<std::uint32_t> t(n);
  std::iota(t.begin(), t.end(), first);
  return t;
}

std::vector<std::uint32_t> concat(std::vector<std::uint32_t> a,
                                  const std::vector<std::uint32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

Engine make(EngineConfig c) {
  if (c.model.empty()) c.model = kModel;
  auto e = Engine::create(std::move(c));
  EXPECT_TRUE(e.has_value()) << e.error().message;
  return std::move(*e);
}

std::uint64_t add(Engine& e, std::vector<std::uint32_t> prompt, std::uint32_t max_tokens) {
  auto id = e.add_request({.prompt_token_ids = std::move(prompt), .max_tokens = max_tokens});
  EXPECT_TRUE(id.has_value()) << id.error().message;
  return id.value_or(0);
}

// Runs steps until idle (bounded); returns all outputs.
std::vector<RequestOutput> run_all(Engine& e, int max_steps = 10000) {
  std::vector<RequestOutput> outs;
  for (int i = 0; i < max_steps && e.has_work(); ++i) {
    auto r = e.step();
    outs.insert(outs.end(), r.outputs.begin(), r.outputs.end());
    EXPECT_TRUE(e.check_invariants_for_test());
  }
  EXPECT_FALSE(e.has_work());
  return outs;
}

std::vector<std::uint64_t> hashes_of(const std::vector<std::uint32_t>& t, std::uint32_t bs) {
  return chained_block_hashes(t, bs, hash64(kModel));
}

const RequestOutput* find_output(const std::vector<RequestOutput>& outs, std::uint64_t id,
                                 bool first) {
  for (const auto& o : outs) {
    if (o.request_id == id && o.first_token == first) return &o;
  }
  return nullptr;
}

TEST(Engine, FirstRequestMissesIdenticalSecondHitsAllButLastBlock) {
  Engine e = make({.num_gpu_blocks = 64});
  const auto prompt = tokens(32);
  const auto h = hashes_of(prompt, 16);
  ASSERT_EQ(h.size(), 2u);

  const std::uint64_t a = add(e, prompt, 1);
  auto outs = run_all(e);
  ASSERT_EQ(outs.size(), 1u);
  EXPECT_EQ(outs[0].request_id, a);
  EXPECT_TRUE(outs[0].first_token);
  EXPECT_TRUE(outs[0].finished);
  EXPECT_EQ(outs[0].finish_reason, FinishReason::kLength);
  EXPECT_EQ(outs[0].cached_tokens, 0u);
  EXPECT_EQ(outs[0].prompt_tokens, 32u);
  EXPECT_EQ(e.stats().prefix_cache_queries_total, 32u);
  EXPECT_EQ(e.stats().prefix_cache_hits_total, 0u);

  auto ev = e.take_events();
  ASSERT_EQ(ev.size(), 1u);
  const auto& stored = std::get<BlockStored>(ev[0]);
  EXPECT_EQ(stored.block_hashes, h);
  EXPECT_EQ(stored.parent_block_hash, std::nullopt);
  EXPECT_EQ(stored.token_ids, prompt);
  EXPECT_EQ(stored.block_size, 16u);
  EXPECT_EQ(stored.medium, "GPU");
  EXPECT_EQ(e.cached_block_hashes_for_test(),
            (std::vector<std::uint64_t>{std::min(h[0], h[1]), std::max(h[0], h[1])}));

  // Same 32-token prompt: both blocks cached, but the last token must be recomputed: 16 hits.
  const std::uint64_t b = add(e, prompt, 1);
  outs = run_all(e);
  ASSERT_EQ(outs.size(), 1u);
  EXPECT_EQ(outs[0].request_id, b);
  EXPECT_EQ(outs[0].cached_tokens, 16u);
  EXPECT_EQ(e.stats().prefix_cache_queries_total, 64u);
  EXPECT_EQ(e.stats().prefix_cache_hits_total, 16u);
  // Block 1 was recomputed into a new block: a duplicate hash is stored (vLLM does the same).
  ev = e.take_events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(std::get<BlockStored>(ev[0]).block_hashes, (std::vector<std::uint64_t>{h[1]}));
  EXPECT_EQ(std::get<BlockStored>(ev[0]).parent_block_hash, h[0]);

  // One more token: 33 tokens, both blocks hit.
  add(e, concat(prompt, {99}), 1);
  outs = run_all(e);
  EXPECT_EQ(outs[0].cached_tokens, 32u);
  EXPECT_EQ(e.stats().prefix_cache_queries_total, 97u);
  EXPECT_EQ(e.stats().prefix_cache_hits_total, 48u);
  EXPECT_EQ(e.stats().prompt_tokens_total, 97u);
  EXPECT_EQ(e.stats().prompt_tokens_cached_total, 48u);
  EXPECT_TRUE(e.take_events().empty());  // reuse emits nothing; no new full block
}

TEST(Engine, PartialPrefixHits) {
  Engine e = make({.num_gpu_blocks = 64});
  const auto base = tokens(48);
  add(e, base, 1);
  run_all(e);
  e.take_events();
  const auto hb = hashes_of(base, 16);

  // Shares blocks 0-1, diverges in block 2.
  auto p = concat(tokens(32), tokens(20, 1000));
  add(e, p, 1);
  auto outs = run_all(e);
  EXPECT_EQ(outs[0].cached_tokens, 32u);
  auto ev = e.take_events();
  ASSERT_EQ(ev.size(), 1u);
  const auto& st = std::get<BlockStored>(ev[0]);
  EXPECT_EQ(st.parent_block_hash, hb[1]);
  EXPECT_EQ(st.block_hashes, (std::vector<std::uint64_t>{hashes_of(p, 16)[2]}));
  EXPECT_EQ(st.token_ids, std::vector<std::uint32_t>(p.begin() + 32, p.begin() + 48));

  // Diverges inside block 1: only block 0 hits.
  add(e, concat(tokens(20), tokens(30, 5000)), 1);
  outs = run_all(e);
  EXPECT_EQ(outs[0].cached_tokens, 16u);
  // A different first token: nothing.
  add(e, tokens(40, 2), 1);
  outs = run_all(e);
  EXPECT_EQ(outs[0].cached_tokens, 0u);
  EXPECT_EQ(e.stats().prefix_cache_hits_total, 48u);
  EXPECT_EQ(e.stats().prefix_cache_queries_total, 48u + 52u + 50u + 40u);
}

TEST(Engine, RequestAdmittedLaterInTheSameStepHitsBlocksJustScheduled) {
  // vLLM caches blocks when it schedules them, so an identical request admitted right after in the
  // same step already hits them (the KV is written before attention reads it in the same pass).
  Engine e = make({.num_gpu_blocks = 64});
  const auto p = tokens(48);
  const std::uint64_t a = add(e, p, 1);
  const std::uint64_t b = add(e, p, 1);
  auto r = e.step();
  ASSERT_EQ(r.outputs.size(), 2u);
  EXPECT_EQ(r.outputs[0].request_id, a);
  EXPECT_EQ(r.outputs[0].cached_tokens, 0u);
  EXPECT_EQ(r.outputs[1].request_id, b);
  EXPECT_EQ(r.outputs[1].cached_tokens, 32u);
  ASSERT_EQ(r.shape.prefills.size(), 2u);
  EXPECT_EQ(r.shape.prefills[1].new_tokens, 16u);
  EXPECT_EQ(r.shape.prefills[1].context_tokens, 32u);
  EXPECT_EQ(r.num_scheduled_tokens, 64u);
  auto ev = e.take_events();
  ASSERT_EQ(ev.size(), 2u);  // a: blocks 0-2; b: its own copy of block 2 (a duplicate)
  EXPECT_EQ(std::get<BlockStored>(ev[1]).block_hashes,
            (std::vector<std::uint64_t>{hashes_of(p, 16)[2]}));
}

TEST(Engine, LruEvictsLeastRecentlyFreedTailBlocksFirst) {
  Engine e =
      make({.num_gpu_blocks = 8, .block_size = 4, .max_num_seqs = 4, .max_num_batched_tokens = 64});
  const auto pa = tokens(16, 100), pb = tokens(16, 200), pc = tokens(12, 300);
  const auto ha = hashes_of(pa, 4), hb = hashes_of(pb, 4), hc = hashes_of(pc, 4);
  add(e, pa, 1);  // blocks 0-3
  run_all(e);
  add(e, pb, 1);  // blocks 4-7 (free queue after A: 4 5 6 7 3 2 1 0)
  run_all(e);
  EXPECT_EQ(e.block_pool_for_test().free_queue_for_test(),
            (std::vector<std::uint32_t>{3, 2, 1, 0, 7, 6, 5, 4}));
  e.take_events();

  add(e, pc, 1);  // needs 3 blocks: 3, 2, 1 -> A's blocks 3, 2, 1 are evicted in that order
  run_all(e);
  auto ev = e.take_events();
  ASSERT_EQ(ev.size(), 4u);
  EXPECT_EQ(std::get<BlockRemoved>(ev[0]).block_hashes, (std::vector<std::uint64_t>{ha[3]}));
  EXPECT_EQ(std::get<BlockRemoved>(ev[1]).block_hashes, (std::vector<std::uint64_t>{ha[2]}));
  EXPECT_EQ(std::get<BlockRemoved>(ev[2]).block_hashes, (std::vector<std::uint64_t>{ha[1]}));
  EXPECT_EQ(std::get<BlockStored>(ev[3]).block_hashes, hc);
  std::vector<std::uint64_t> expect{ha[0], hb[0], hb[1], hb[2], hb[3], hc[0], hc[1], hc[2]};
  std::sort(expect.begin(), expect.end());
  EXPECT_EQ(e.cached_block_hashes_for_test(), expect);
  EXPECT_EQ(e.block_pool_for_test().free_queue_for_test(),
            (std::vector<std::uint32_t>{0, 7, 6, 5, 4, 1, 2, 3}));
}

TEST(Engine, TouchOnHitProtectsBlockFromEviction) {
  Engine e =
      make({.num_gpu_blocks = 8, .block_size = 4, .max_num_seqs = 4, .max_num_batched_tokens = 64});
  const auto pa = tokens(16, 100), pb = tokens(16, 200);
  const auto ha = hashes_of(pa, 4), hb = hashes_of(pb, 4);
  add(e, pa, 1);
  run_all(e);
  add(e, pb, 1);
  run_all(e);
  e.take_events();  // free queue: 3 2 1 0 7 6 5 4 (A's blocks at the head)

  // A's 16 tokens + 4 more: hits A's 4 blocks (touched out of the queue) and needs one new
  // block, which must come from B (block 7), not from A's block 3 at the head.
  const std::uint64_t d = add(e, concat(pa, tokens(4, 900)), 1);
  auto outs = run_all(e);
  ASSERT_NE(find_output(outs, d, true), nullptr);
  EXPECT_EQ(find_output(outs, d, true)->cached_tokens, 16u);
  auto ev = e.take_events();
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(std::get<BlockRemoved>(ev[0]).block_hashes, (std::vector<std::uint64_t>{hb[3]}));
  EXPECT_EQ(std::get<BlockStored>(ev[1]).parent_block_hash, ha[3]);
  for (auto h : ha) {
    EXPECT_NE(e.block_pool_for_test().lookup(h), BlockPool::kNoBlock);
  }
}

TEST(Engine, PreemptsMostRecentRequestWhenBlocksRunOut) {
  // 8 blocks of 4 tokens; two requests of 8 prompt tokens each decode up to 20 tokens.
  EngineConfig cfg{
      .num_gpu_blocks = 8, .block_size = 4, .max_num_seqs = 4, .max_num_batched_tokens = 64};
  Engine e = make(cfg);
  const std::uint64_t a = add(e, tokens(8, 10), 20);
  const std::uint64_t b = add(e, tokens(8, 50), 20);
  std::map<std::uint64_t, std::vector<std::uint32_t>> generated;
  int preempt_step = -1;
  for (int s = 1; s <= 200 && e.has_work(); ++s) {
    auto r = e.step();
    for (const auto& o : r.outputs) generated[o.request_id].push_back(o.token_id);
    ASSERT_TRUE(e.check_invariants_for_test());
    if (r.num_preempted > 0 && preempt_step < 0) {
      preempt_step = s;
      EXPECT_EQ(r.num_preempted, 1u);
      EXPECT_EQ(e.stats().num_requests_running, 1u);
      EXPECT_EQ(e.stats().num_requests_waiting, 1u);
      EXPECT_EQ(r.outputs.size(), 1u);
      EXPECT_EQ(r.outputs[0].request_id, a);  // b, admitted last, was preempted
    }
  }
  // KV of both holds 7 + s tokens after step s; 8 blocks hold 2 x 16: step 10 runs out.
  EXPECT_EQ(preempt_step, 10);
  EXPECT_FALSE(e.has_work());
  const auto st = e.stats();
  EXPECT_EQ(st.num_preemptions_total, 1u);
  EXPECT_EQ(st.prefix_cache_queries_total, 16u);  // first lookups only
  EXPECT_GT(st.preempted_prefix_cache_queries_total, 0u);
  EXPECT_EQ(st.request_success_length_total, 2u);
  EXPECT_EQ(st.generation_tokens_total, 40u);
  EXPECT_EQ(st.prompt_tokens_total, 16u);
  EXPECT_EQ(generated[a].size(), 20u);
  EXPECT_EQ(generated[b].size(), 20u);

  // Recompute does not change the tokens: b alone gives the same sequence.
  Engine alone = make(cfg);
  const std::uint64_t b2 = add(alone, tokens(8, 50), 20);
  std::vector<std::uint32_t> g;
  for (const auto& o : run_all(alone)) {
    if (o.request_id == b2) g.push_back(o.token_id);
  }
  EXPECT_EQ(g, generated[b]);
}

TEST(Engine, ChunkedPrefillSplitsLongPromptUnderBudget) {
  Engine e = make({.num_gpu_blocks = 64, .max_num_seqs = 8, .max_num_batched_tokens = 64});
  const auto p = tokens(150);
  const auto h = hashes_of(p, 16);
  const std::uint64_t id = add(e, p, 2);

  auto r1 = e.step();
  EXPECT_TRUE(r1.outputs.empty());
  ASSERT_EQ(r1.shape.prefills.size(), 1u);
  EXPECT_EQ(r1.shape.prefills[0].new_tokens, 64u);
  EXPECT_EQ(r1.shape.prefills[0].context_tokens, 0u);
  auto ev = e.take_events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(std::get<BlockStored>(ev[0]).block_hashes,
            std::vector<std::uint64_t>(h.begin(), h.begin() + 4));
  EXPECT_EQ(std::get<BlockStored>(ev[0]).parent_block_hash, std::nullopt);

  auto r2 = e.step();
  EXPECT_TRUE(r2.outputs.empty());
  EXPECT_EQ(r2.shape.prefills[0].new_tokens, 64u);
  EXPECT_EQ(r2.shape.prefills[0].context_tokens, 64u);
  ev = e.take_events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(std::get<BlockStored>(ev[0]).parent_block_hash, h[3]);
  EXPECT_EQ(std::get<BlockStored>(ev[0]).block_hashes.size(), 4u);

  auto r3 = e.step();
  EXPECT_EQ(r3.shape.prefills[0].new_tokens, 22u);
  EXPECT_EQ(r3.num_scheduled_tokens, 22u);
  ASSERT_EQ(r3.outputs.size(), 1u);
  EXPECT_EQ(r3.outputs[0].request_id, id);
  EXPECT_TRUE(r3.outputs[0].first_token);
  ev = e.take_events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(std::get<BlockStored>(ev[0]).block_hashes, (std::vector<std::uint64_t>{h[8]}));

  auto r4 = e.step();  // decode
  EXPECT_EQ(r4.shape.decode_seqs, 1u);
  EXPECT_EQ(r4.shape.decode_context_tokens, 150u);
  ASSERT_EQ(r4.outputs.size(), 1u);
  EXPECT_TRUE(r4.outputs[0].finished);
  EXPECT_FALSE(e.has_work());
}

TEST(Engine, WithoutChunkedPrefillAPromptWaitsForAWholeBudget) {
  EngineConfig cfg{.num_gpu_blocks = 64,
                   .max_num_seqs = 8,
                   .max_num_batched_tokens = 64,
                   .enable_chunked_prefill = false};
  Engine e = make(cfg);
  EXPECT_EQ(e.max_model_len(), 64u);
  const std::uint64_t a = add(e, tokens(60), 3);
  const std::uint64_t b = add(e, tokens(10, 500), 1);
  auto r1 = e.step();
  ASSERT_EQ(r1.shape.prefills.size(), 1u);  // b (10) does not fit in the 4 left
  EXPECT_EQ(r1.outputs.size(), 1u);
  EXPECT_EQ(e.stats().num_requests_waiting, 1u);
  auto r2 = e.step();
  EXPECT_EQ(r2.shape.decode_seqs, 1u);
  ASSERT_EQ(r2.shape.prefills.size(), 1u);
  EXPECT_EQ(r2.shape.prefills[0].new_tokens, 10u);
  EXPECT_EQ(r2.outputs.size(), 2u);
  run_all(e);
  (void)a;
  (void)b;
  // A prompt longer than the budget cannot be configured without chunked prefill.
  cfg.max_model_len = 128;
  auto bad = Engine::create(cfg);
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(
      bad.error().message.find("max_num_batched_tokens (64) is smaller than max_model_len (128)"),
      std::string::npos);
}

TEST(Engine, DecodeTokensFillAndCacheBlocks) {
  Engine e = make(
      {.num_gpu_blocks = 16, .block_size = 4, .max_num_seqs = 4, .max_num_batched_tokens = 64});
  const std::uint64_t id = add(e, tokens(6), 4);
  std::vector<std::uint32_t> all = tokens(6);
  std::vector<std::vector<Event>> per_step;
  while (e.has_work()) {
    auto r = e.step();
    for (const auto& o : r.outputs) {
      if (o.request_id == id) all.push_back(o.token_id);
    }
    per_step.push_back(e.take_events());
  }
  ASSERT_EQ(all.size(), 10u);  // KV holds 9 (the last token is never computed)
  ASSERT_EQ(per_step.size(), 4u);
  // Step 1 computes tokens 0-5: block 0. Step 2 computes token 6, step 3 token 7: block 1 full.
  const auto h = hashes_of(all, 4);
  ASSERT_EQ(per_step[0].size(), 1u);
  EXPECT_EQ(std::get<BlockStored>(per_step[0][0]).block_hashes, (std::vector<std::uint64_t>{h[0]}));
  EXPECT_TRUE(per_step[1].empty());
  ASSERT_EQ(per_step[2].size(), 1u);
  const auto& st = std::get<BlockStored>(per_step[2][0]);
  EXPECT_EQ(st.block_hashes, (std::vector<std::uint64_t>{h[1]}));
  EXPECT_EQ(st.parent_block_hash, h[0]);
  EXPECT_EQ(st.token_ids, std::vector<std::uint32_t>(all.begin() + 4, all.begin() + 8));
  EXPECT_TRUE(per_step[3].empty());
}

TEST(Engine, OutputTokensAreDeterministic) {
  EngineConfig cfg{.num_gpu_blocks = 256, .seed = 7};
  std::vector<std::vector<std::uint32_t>> prompts{tokens(20), tokens(37, 9), tokens(5, 40)};
  auto run = [&](EngineConfig c) {
    Engine e = make(std::move(c));
    for (const auto& p : prompts) add(e, p, 12);
    std::vector<std::pair<std::uint64_t, std::uint32_t>> out;
    for (const auto& o : run_all(e)) out.emplace_back(o.request_id, o.token_id);
    return out;
  };
  const auto x = run(cfg);
  EXPECT_EQ(x.size(), 36u);
  EXPECT_EQ(x, run(cfg));
  for (const auto& [id, t] : x) EXPECT_LT(t, 128000u);
  cfg.seed = 8;
  EXPECT_NE(x, run(cfg));
  // The per-request seed changes the stream too.
  Engine e = make({.num_gpu_blocks = 256, .seed = 7});
  ASSERT_TRUE(e.add_request({.prompt_token_ids = prompts[0], .max_tokens = 12, .seed = 3}));
  auto o = run_all(e);
  std::vector<std::uint32_t> seeded, plain;
  for (const auto& r : o) seeded.push_back(r.token_id);
  for (const auto& [id, t] : x) {
    if (id == 1) plain.push_back(t);
  }
  EXPECT_NE(seeded, plain);
}

TEST(Engine, StopTokenAndMinTokens) {
  Engine probe = make({.num_gpu_blocks = 64});
  add(probe, tokens(10), 8);
  const auto outs = run_all(probe);
  ASSERT_EQ(outs.size(), 8u);
  const std::uint32_t third = outs[2].token_id;

  Engine e = make({.num_gpu_blocks = 64});
  ASSERT_TRUE(
      e.add_request({.prompt_token_ids = tokens(10), .max_tokens = 8, .stop_token_ids = {third}}));
  auto o = run_all(e);
  ASSERT_EQ(o.size(), 3u);
  EXPECT_EQ(o.back().finish_reason, FinishReason::kStop);
  EXPECT_STREQ(finish_reason_name(o.back().finish_reason), "stop");
  EXPECT_EQ(e.stats().request_success_stop_total, 1u);

  Engine m = make({.num_gpu_blocks = 64});
  ASSERT_TRUE(m.add_request({.prompt_token_ids = tokens(10),
                             .max_tokens = 8,
                             .min_tokens = 4,
                             .stop_token_ids = {third}}));
  o = run_all(m);
  EXPECT_GE(o.size(), 4u);
  EXPECT_NE(o[2].finished, true);
}

TEST(Engine, AbortFreesBlocksAndSilencesRequest) {
  Engine e = make(
      {.num_gpu_blocks = 32, .block_size = 4, .max_num_seqs = 4, .max_num_batched_tokens = 64});
  const std::uint64_t a = add(e, tokens(10), 50);
  const std::uint64_t b = add(e, tokens(10, 100), 50);
  e.step();
  EXPECT_EQ(e.stats().num_used_blocks, 6u);
  EXPECT_TRUE(e.abort(a));
  EXPECT_FALSE(e.abort(a));
  EXPECT_FALSE(e.abort(12345));
  EXPECT_EQ(e.stats().num_used_blocks, 3u);
  EXPECT_EQ(e.stats().num_requests_running, 1u);
  auto r = e.step();
  ASSERT_EQ(r.outputs.size(), 1u);
  EXPECT_EQ(r.outputs[0].request_id, b);
  // Aborting a waiting request.
  const std::uint64_t c = add(e, tokens(10, 200), 5);
  EXPECT_EQ(e.stats().num_requests_waiting, 1u);
  EXPECT_TRUE(e.abort(c));
  EXPECT_EQ(e.stats().num_requests_waiting, 0u);
  EXPECT_TRUE(e.abort(b));
  EXPECT_FALSE(e.has_work());
  EXPECT_EQ(e.stats().num_used_blocks, 0u);
  EXPECT_EQ(e.stats().kv_cache_usage_perc, 0.0);
  EXPECT_EQ(e.stats().num_aborted_total, 3u);
  EXPECT_TRUE(e.check_invariants_for_test());
  // Full blocks computed before the abort stay cached.
  EXPECT_EQ(e.cached_block_hashes_for_test().size(), 4u);
}

TEST(Engine, ResetPrefixCacheOnlyWhenIdle) {
  Engine e = make({.num_gpu_blocks = 64});
  add(e, tokens(40), 3);
  e.step();
  EXPECT_FALSE(e.reset_prefix_cache());
  run_all(e);
  e.take_events();
  EXPECT_TRUE(e.reset_prefix_cache());
  auto ev = e.take_events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_TRUE(std::holds_alternative<AllBlocksCleared>(ev[0]));
  EXPECT_TRUE(e.cached_block_hashes_for_test().empty());
  add(e, tokens(40), 1);
  EXPECT_EQ(run_all(e)[0].cached_tokens, 0u);
}

TEST(Engine, ValidationErrorsUseVllmMessages) {
  Engine e = make({.num_gpu_blocks = 8, .max_num_seqs = 8, .max_num_batched_tokens = 64});
  EXPECT_EQ(e.max_model_len(), 128u);
  auto err = [&](SimRequest r) {
    auto x = e.add_request(std::move(r));
    EXPECT_FALSE(x.has_value());
    return x.has_value() ? std::string() : x.error().message;
  };
  EXPECT_EQ(err({}), "The decoder prompt cannot be empty");
  EXPECT_EQ(err({.prompt_token_ids = tokens(130)}),
            "This model's maximum context length is 128 tokens. However, your request has 130 "
            "input tokens. Please reduce the length of the input messages.");
  EXPECT_EQ(err({.prompt_token_ids = tokens(100), .max_tokens = 50}),
            "'max_tokens' or 'max_completion_tokens' is too large: 50. This model's maximum "
            "context length is 128 tokens and your request has 100 input tokens (50 > 128 - "
            "100).");
  EXPECT_EQ(err({.prompt_token_ids = {1, 200000}}), "Token id 200000 is out of vocabulary");
  EXPECT_EQ(err({.prompt_token_ids = tokens(4), .max_tokens = 0}),
            "max_tokens must be at least 1, got 0.");
  EXPECT_EQ(err({.prompt_token_ids = tokens(4), .max_tokens = 3, .min_tokens = 5}),
            "min_tokens must be less than or equal to max_tokens=3, got 5.");
  EXPECT_FALSE(e.has_work());
  // Without max_tokens the request may run to max_model_len.
  ASSERT_TRUE(e.add_request({.prompt_token_ids = tokens(120)}));
  EXPECT_EQ(run_all(e).size(), 8u);

  EXPECT_FALSE(Engine::create({.num_gpu_blocks = 0}).has_value());
  EXPECT_FALSE(Engine::create({.num_gpu_blocks = 4, .max_model_len = 65}).has_value());
  EXPECT_FALSE(Engine::create({.max_num_seqs = 300, .max_num_batched_tokens = 256}).has_value());
}

TEST(Engine, MaxNumSeqsLimitsAdmission) {
  Engine e = make({.num_gpu_blocks = 256, .max_num_seqs = 2, .max_num_batched_tokens = 64});
  for (int i = 0; i < 5; ++i) add(e, tokens(8, 100 * (i + 1)), 3);
  e.step();
  EXPECT_EQ(e.stats().num_requests_running, 2u);
  EXPECT_EQ(e.stats().num_requests_waiting, 3u);
  EXPECT_EQ(run_all(e).size(), 15u - 2u);  // 2 came out of the first step
}

TEST(Engine, CostModelGivesStepDuration) {
  const CostCoefficients c{.base_s = 0.001, .per_prefill_token_s = 1e-5};
  Engine timed = make({.num_gpu_blocks = 64, .cost = CostModel(c)});
  add(timed, tokens(100), 2);
  auto r = timed.step(5.0);
  EXPECT_EQ(r.start_s, 5.0);
  EXPECT_DOUBLE_EQ(r.duration_s, CostModel(c).step_seconds(r.shape));
  EXPECT_GT(r.duration_s, 0.001);
  Engine untimed = make({.num_gpu_blocks = 64});
  add(untimed, tokens(100), 2);
  EXPECT_EQ(untimed.step().duration_s, 0.0);
  EXPECT_EQ(timed.step().shape.decode_seqs, 1u);
  EXPECT_EQ(timed.step().duration_s, 0.0);  // nothing to do

  // A calibrated preset gives a plausible prefill time (between 1 ms and 1 s for 2k tokens).
  auto preset = CostModel::preset("llama-3.1-8b-h100");
  ASSERT_TRUE(preset.has_value());
  Engine h100 = make({.num_gpu_blocks = 1024, .cost = preset});
  add(h100, tokens(2048), 4);
  const double d = h100.step().duration_s;
  EXPECT_GT(d, 1e-3);
  EXPECT_LT(d, 1.0);
}

// Replays the event stream into a multiset of hashes; it must equal the engine's cached blocks
// after every step of a random mixed workload with shared prefixes, evictions, preemptions,
// aborts and resets. Also checks that each BlockStored's hashes are the chain of its token ids.
TEST(Engine, EventReplayReconstructsCacheUnderRandomWorkload) {
  constexpr std::uint32_t kBlocks = 20;
  for (bool chunked : {true, false}) {
    EngineConfig cfg{.num_gpu_blocks = kBlocks,
                     .block_size = 4,
                     .max_num_seqs = 6,
                     .max_num_batched_tokens = 48,
                     .enable_chunked_prefill = chunked,
                     .seed = 1};
    if (!chunked) cfg.max_model_len = 48;
    Engine e = make(cfg);
    std::mt19937_64 rng(12345);
    auto uni = [&](std::uint64_t n) { return rng() % n; };
    std::vector<std::vector<std::uint32_t>> prefixes;
    for (int i = 0; i < 4; ++i) prefixes.push_back(tokens(4 + uni(20), 1000 * (i + 1)));
    std::map<std::uint64_t, int> replay;  // hash -> number of cached blocks holding it
    std::vector<std::uint64_t> live;
    std::uint64_t stored = 0, removed = 0, clears = 0, requests = 0, preemptions = 0;
    const std::uint64_t seed = hash64(kModel);
    for (int step = 0; step < 3000; ++step) {
      const auto roll = uni(100);
      const bool drain = step % 300 >= 220;  // let the engine go idle now and then
      if (roll < 30 && !drain) {
        auto p = prefixes[uni(prefixes.size())];
        const std::size_t extra = uni(16);
        for (std::size_t k = 0; k < extra; ++k) p.push_back(static_cast<std::uint32_t>(uni(50)));
        const std::uint32_t max_tokens =
            static_cast<std::uint32_t>(std::min<std::size_t>(1 + uni(30), 48 - p.size()));
        auto id = e.add_request({.prompt_token_ids = p, .max_tokens = max_tokens});
        ASSERT_TRUE(id.has_value()) << id.error().message;
        live.push_back(*id);
        ++requests;
      } else if (roll < 33 && !live.empty()) {
        const std::uint64_t victim = live[uni(live.size())];
        ASSERT_TRUE(e.abort(victim));
        std::erase(live, victim);
      } else if (roll < 40) {
        const bool idle = e.stats().num_requests_running == 0;
        ASSERT_EQ(e.reset_prefix_cache(), idle);
      }
      auto r = e.step();
      preemptions += r.num_preempted;
      for (const auto& o : r.outputs) {
        if (o.finished) std::erase(live, o.request_id);
      }
      for (const Event& ev : e.take_events()) {
        if (const auto* s = std::get_if<BlockStored>(&ev)) {
          ASSERT_EQ(s->token_ids.size(), s->block_hashes.size() * 4);
          std::uint64_t parent = s->parent_block_hash.value_or(seed);
          for (std::size_t k = 0; k < s->block_hashes.size(); ++k) {
            parent = hash64(std::span<const std::uint32_t>(s->token_ids.data() + 4 * k, 4), parent);
            ASSERT_EQ(parent, s->block_hashes[k]);
            ++replay[s->block_hashes[k]];
            ++stored;
          }
        } else if (const auto* rm = std::get_if<BlockRemoved>(&ev)) {
          for (auto h : rm->block_hashes) {
            auto it = replay.find(h);
            ASSERT_NE(it, replay.end()) << "removed a hash never stored";
            if (--it->second == 0) replay.erase(it);
            ++removed;
          }
        } else {
          replay.clear();
          ++clears;
        }
      }
      std::vector<std::uint64_t> rebuilt;
      for (const auto& [h, n] : replay) rebuilt.insert(rebuilt.end(), n, h);
      ASSERT_EQ(rebuilt, e.cached_block_hashes_for_test()) << "step " << step;
      ASSERT_TRUE(e.check_invariants_for_test()) << "step " << step;
      const auto st = e.stats();
      ASSERT_EQ(st.num_cached_blocks, rebuilt.size());
      std::uint32_t used = 0;
      for (std::uint32_t b = 0; b < kBlocks; ++b) used += e.block_pool_for_test().ref_count(b) > 0;
      ASSERT_EQ(st.num_used_blocks, used);
      ASSERT_DOUBLE_EQ(st.kv_cache_usage_perc, used / static_cast<double>(kBlocks));
      ASSERT_EQ(st.num_requests_running + st.num_requests_waiting, live.size());
    }
    // The workload exercised what it is meant to.
    EXPECT_GT(requests, 500u);
    EXPECT_GT(removed, 100u) << "chunked=" << chunked;
    EXPECT_GT(stored, removed);
    EXPECT_GT(clears, 0u);
    EXPECT_GT(preemptions, 0u) << "chunked=" << chunked;
    EXPECT_GT(e.stats().prefix_cache_hits_total, 0u);
    EXPECT_EQ(e.stats().num_preemptions_total, preemptions);
    std::printf("chunked=%d requests=%llu stored=%llu removed=%llu clears=%llu preemptions=%llu\n",
                chunked, static_cast<unsigned long long>(requests),
                static_cast<unsigned long long>(stored), static_cast<unsigned long long>(removed),
                static_cast<unsigned long long>(clears),
                static_cast<unsigned long long>(preemptions));
  }
}

}  // namespace
}  // namespace kvroute::sim
