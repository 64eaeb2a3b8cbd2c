#include <gtest/gtest.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>

#include "bench/bench_command.h"
#include "bench/internal/bounds.h"
#include "bench/internal/compare.h"
#include "bench/internal/loadgen.h"
#include "bench/internal/report.h"
#include "bench/internal/workload.h"
#include "bench/test_support.h"
#include "common/hash.h"
#include "sim/server.h"

namespace kvroute::bench {
namespace {

using test_support::fast_sim;
using test_support::one_user_on_two_engines;

using namespace std::chrono_literals;

// ---------------------------------------------------------------- workloads

TEST(Workload, SharedPrefixShapeAndDeterminism) {
  WorkloadOptions o;
  o.sp_groups = 3;
  o.sp_prompts_per_group = 4;
  o.sp_system_len = 40;
  o.sp_question_len = 7;
  o.output_len = 5;
  auto a = make_shared_prefix(o);
  auto b = make_shared_prefix(o);
  ASSERT_TRUE(a && b);
  ASSERT_EQ(a->sessions.size(), 12u);
  EXPECT_EQ(a->num_requests(), 12u);
  std::map<std::string, std::vector<std::uint32_t>> group_prefix;
  for (std::size_t i = 0; i < a->sessions.size(); ++i) {
    const Item& it = a->sessions[i].turns.at(0);
    EXPECT_EQ(request_body(it, "m"),
              request_body(b->sessions[i].turns[0], "m"));  // same seed, same bytes
    EXPECT_FALSE(it.chat);
    EXPECT_EQ(it.max_tokens, 5u);
    const auto t = predicted_tokens(it);
    ASSERT_EQ(t.size(), 47u);
    const std::string group = a->sessions[i].id.substr(0, a->sessions[i].id.rfind('-'));
    std::vector<std::uint32_t> prefix(t.begin(), t.begin() + 40);
    auto [pos, fresh] = group_prefix.emplace(group, prefix);
    if (!fresh) {
      EXPECT_EQ(pos->second, prefix) << group;
    }
  }
  ASSERT_EQ(group_prefix.size(), 3u);
  EXPECT_NE(group_prefix.begin()->second[0], std::next(group_prefix.begin())->second[0]);
  // Shuffled: not in generation order.
  bool in_order = true;
  for (std::size_t i = 0; i < 4; ++i) in_order = in_order && a->sessions[i].id.starts_with("sp-0-");
  EXPECT_FALSE(in_order);
  o.seed = 2;
  auto c = make_shared_prefix(o);
  ASSERT_TRUE(c);
  EXPECT_NE(request_body(c->sessions[0].turns[0], "m"), request_body(a->sessions[0].turns[0], "m"));
}

TEST(Workload, MultiTurnHistoryGrowsAndIsAPrefix) {
  WorkloadOptions o;
  o.mt_sessions = 3;
  o.mt_turns = 4;
  o.mt_turn_len = 10;
  o.mt_system_len = 6;
  o.output_len = 3;
  o.mt_think_s = 0.5;
  auto w = make_multi_turn(o);
  ASSERT_TRUE(w);
  ASSERT_EQ(w->sessions.size(), 3u);
  EXPECT_EQ(w->num_requests(), 12u);
  for (const auto& s : w->sessions) {
    ASSERT_EQ(s.turns.size(), 4u);
    EXPECT_EQ(s.turns[0].think_s, 0);
    std::vector<std::uint32_t> prev;
    for (std::size_t t = 0; t < 4; ++t) {
      const Item& it = s.turns[t];
      EXPECT_TRUE(it.chat);
      EXPECT_EQ(it.messages.size(), 2 + 2 * t);  // system + t (user, assistant) + user
      if (t > 0) {
        EXPECT_GT(it.think_s, 0);
      }
      const auto tok = predicted_tokens(it);
      // system: marker + 6; each user: marker + 10; each assistant: marker + 3; final marker.
      EXPECT_EQ(tok.size(), (1 + 6) + (t + 1) * 11 + t * 4 + 1);
      if (!prev.empty()) {
        ASSERT_GE(tok.size(), prev.size());
        EXPECT_TRUE(std::equal(prev.begin(), prev.end(), tok.begin()))
            << "turn " << t << " extends turn " << t - 1;
      }
      prev = tok;
    }
  }
  // The system prompt is shared by all sessions, the first user message is not.
  const auto a = predicted_tokens(w->sessions[0].turns[0]);
  const auto b = predicted_tokens(w->sessions[1].turns[0]);
  EXPECT_TRUE(std::equal(a.begin(), a.begin() + 8, b.begin()));
  EXPECT_NE(a[9], b[9]);
}

TEST(Workload, LongDocQaAndMix) {
  WorkloadOptions o;
  o.ld_docs = 2;
  o.ld_questions = 3;
  o.ld_doc_len = 100;
  o.ld_question_len = 5;
  auto w = make_long_doc_qa(o);
  ASSERT_TRUE(w);
  EXPECT_EQ(w->num_requests(), 6u);
  for (const auto& s : w->sessions) EXPECT_EQ(predicted_tokens(s.turns[0]).size(), 105u);
  o.sp_groups = 2;
  o.sp_prompts_per_group = 2;
  o.mt_sessions = 2;
  o.mt_turns = 3;
  auto m = make_mix(o);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->sessions.size(), 6u);
  EXPECT_EQ(m->num_requests(), 4u + 6u);
  EXPECT_FALSE(make_workload({.name = "nope"}));
}

TEST(Workload, MooncakeParsingAndContentPerHashId) {
  const std::string jsonl =
      R"({"timestamp": 0, "input_length": 1100, "output_length": 6, "hash_ids": [1, 2, 3]})"
      "\n"
      R"({"timestamp": 250, "input_length": 1500, "output_length": 4, "hash_ids": [1, 2, 9]})"
      "\n\n"
      R"({"timestamp": 900.0, "input_length": 300, "output_length": 0, "hash_ids": [2]})"
      "\n";
  auto recs = parse_mooncake(jsonl);
  ASSERT_TRUE(recs) << recs.error().message;
  ASSERT_EQ(recs->size(), 3u);
  EXPECT_EQ((*recs)[1].timestamp_ms, 250u);
  EXPECT_EQ((*recs)[1].hash_ids, (std::vector<std::uint64_t>{1, 2, 9}));
  EXPECT_EQ((*recs)[2].timestamp_ms, 900u);
  auto w = mooncake_workload(*recs, 512);
  EXPECT_TRUE(w.timestamps);
  ASSERT_EQ(w.sessions.size(), 3u);
  EXPECT_DOUBLE_EQ(w.sessions[1].at_s, 0.25);
  const auto t0 = predicted_tokens(w.sessions[0].turns[0]);
  const auto t1 = predicted_tokens(w.sessions[1].turns[0]);
  const auto t2 = predicted_tokens(w.sessions[2].turns[0]);
  ASSERT_EQ(t0.size(), 1100u);
  ASSERT_EQ(t1.size(), 1500u);
  ASSERT_EQ(t2.size(), 300u);
  EXPECT_TRUE(std::equal(t0.begin(), t0.begin() + 1024, t1.begin()));  // hash ids 1, 2 shared
  EXPECT_NE(std::vector<std::uint32_t>(t0.begin() + 1024, t0.end()),
            std::vector<std::uint32_t>(t1.begin() + 1024, t1.begin() + 1100));
  // Hash id 2 at position 0 gives the same words as hash id 2 at position 1.
  EXPECT_TRUE(std::equal(t2.begin(), t2.end(), t0.begin() + 512));
  EXPECT_EQ(w.sessions[2].turns[0].max_tokens, 1u);  // at least one token

  auto limited = parse_mooncake(jsonl, 2);
  ASSERT_TRUE(limited);
  EXPECT_EQ(limited->size(), 2u);
  auto bad = parse_mooncake(
      "{\"timestamp\": 1, \"input_length\": 5, \"output_length\": 1, \"hash_ids\": [0]}\n{oops}\n");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("line 2"), std::string::npos) << bad.error().message;
  EXPECT_FALSE(parse_mooncake(
      R"({"timestamp": 1, "input_length": 5, "output_length": 1, "hash_ids": [-1]})"));
  EXPECT_FALSE(parse_mooncake(R"({"timestamp": 1, "output_length": 1, "hash_ids": [1]})"));
}

TEST(Workload, MooncakeFileFixture) {
  const auto path = std::filesystem::temp_directory_path() / "kvroute_bench_trace_test.jsonl";
  {
    std::ofstream f(path);
    for (int i = 0; i < 5; ++i) {
      f << R"({"timestamp": )" << i * 100
        << R"(, "input_length": 700, "output_length": 3, "hash_ids": [42, )" << 100 + i << "]}\n";
    }
  }
  WorkloadOptions o;
  o.name = "mooncake";
  o.trace_path = path.string();
  auto w = make_workload(o);
  std::filesystem::remove(path);
  ASSERT_TRUE(w) << w.error().message;
  EXPECT_EQ(w->num_requests(), 5u);
  BoundsCalculator bc(16, 0);
  for (const auto& s : w->sessions) bc.add_tokens(predicted_tokens(s.turns[0]));
  // 512 shared tokens = 32 blocks, hit by the 4 later requests.
  EXPECT_EQ(bc.result().infinite_hit_tokens, 4u * 512u);
  EXPECT_EQ(bc.result().query_tokens, 5u * 700u);
  o.trace_path = "/nonexistent/trace.jsonl";
  EXPECT_FALSE(make_workload(o));
}

// ---------------------------------------------------------------- bounds and stats

TEST(Bounds, HandMadeSequencesExact) {
  BoundsCalculator bc(4, 3);
  const std::vector<std::uint64_t> abc{1, 2, 3}, de{4, 5};
  bc.add(abc, 13);  // cold
  bc.add(de, 9);    // cold; LRU (front first): 4 5 1 | 2 3 evicted
  bc.add(abc, 13);  // infinite: 3 blocks = 12 tokens; LRU: block 1 only = 4 tokens
  bc.add(abc, 12);  // cap: (12 - 1) / 4 = 2 blocks = 8 tokens; LRU now holds 1 2 3
  const auto& r = bc.result();
  EXPECT_EQ(r.requests, 4u);
  EXPECT_EQ(r.query_tokens, 13u + 9u + 13u + 12u);
  EXPECT_EQ(r.infinite_hit_tokens, 12u + 8u);
  EXPECT_EQ(r.lru_hit_tokens, 4u + 8u);
  EXPECT_DOUBLE_EQ(r.infinite_hit_rate(), 20.0 / 47.0);
  EXPECT_DOUBLE_EQ(r.lru_hit_rate(), 12.0 / 47.0);

  BoundsCalculator unbounded(4, 0);
  unbounded.add(abc, 13);
  unbounded.add(de, 9);
  unbounded.add(abc, 13);
  EXPECT_EQ(unbounded.result().lru_hit_tokens, 12u);
  // A divergent middle block stops the hit there, even if later blocks were seen.
  const std::vector<std::uint64_t> a_x_c{1, 99, 3};
  unbounded.add(a_x_c, 16);
  EXPECT_EQ(unbounded.result().infinite_hit_tokens, 12u + 4u);
  BoundsCalculator empty(16, 0);
  EXPECT_EQ(empty.result().lru_hit_rate(), 0);
}

TEST(Bounds, OutputsTakeBlocksAndEvictFirst) {
  // Block size 4, 4 blocks pooled. Request A: 3 prompt blocks (12 tokens) + 8 output tokens fill
  // the output blocks 12..19 and 20..: (12 + 8) / 4 - 12 / 4 = 2 blocks.
  BoundsCalculator bc(4, 4);
  const std::vector<std::uint64_t> a{1, 2, 3}, b{7};
  bc.add(a, 12, 8);  // cached: outputs (2, oldest) then 3 2 1: 5 blocks, one output evicted
  bc.add(a, 13, 0);  // 3 blocks hit in both (the outputs went first)
  bc.add(b, 5, 8);   // 1 prompt block; (5 + 8) / 4 - 5 / 4 = 2 output blocks
  bc.add(a, 13, 0);  // without outputs: 7 1 2 3 fit: 3 blocks; with outputs: 7, its 2 outputs
                     // and A's block 1 survive: 1 block
  const auto& r = bc.result();
  EXPECT_EQ(r.lru_hit_tokens, 12u + 12u);
  EXPECT_EQ(r.lru_output_hit_tokens, 12u + 4u);
  EXPECT_LE(r.lru_output_hit_tokens, r.lru_hit_tokens);
}

TEST(Bounds, LoadCappedOracleFollowsPrefixesWithinTheCap) {
  // Two engines of 8 blocks each (16 pooled), cap 1.5x the mean.
  BoundsCalculator bc(4, 16, 2, 1.5);
  const std::vector<std::uint64_t> x{1, 2, 3}, y{4, 5, 6};
  bc.add(x, 13);  // engine 0 (both empty, fewest requests: the first)
  bc.add(y, 13);  // engine 0 would exceed floor(1.5 * 2 / 2) = 1: engine 1
  bc.add(x, 13);  // engine 0 holds x: 3 blocks, within floor(1.5 * 3 / 2) = 2
  bc.add(x, 13);  // engine 0 has 2, limit floor(1.5 * 4 / 2) = 3: x again, 3 blocks
  bc.add(x, 13);  // engine 0 at 3, limit floor(1.5 * 5 / 2) = 3: forced to engine 1, no hit
  const auto& r = bc.result();
  EXPECT_EQ(r.oracle_hit_tokens, 12u + 12u);
  EXPECT_DOUBLE_EQ(r.oracle_imbalance, 3.0 * 2 / 5);
  EXPECT_EQ(r.engines, 2u);
  // The pooled cache holds both: every repeat of x hits.
  EXPECT_EQ(r.lru_hit_tokens, 3u * 12u);
  EXPECT_LE(r.oracle_hit_rate(), r.infinite_hit_rate());
}

TEST(Workload, MooncakeConversationsFromSharedHashIds) {
  // 0: a conversation's first turn (2 full blocks of 4 tokens + a partial one); 1: its next turn
  // (starts with 0's full blocks); 2: unrelated; 3: continues 1 (1 has 3 full blocks); 4 shares
  // only 0's first block: a shared system prompt, not a continuation.
  std::vector<TraceRecord> recs(5);
  recs[0] = {0, 10, 1, {1, 2, 3}};
  recs[1] = {1, 12, 1, {1, 2, 4}};
  recs[2] = {2, 8, 1, {9, 10}};
  recs[3] = {3, 20, 1, {1, 2, 4, 5, 6}};
  recs[4] = {4, 8, 1, {1, 11}};
  const auto root = mooncake_conversations(recs, 4);
  EXPECT_EQ(root, (std::vector<std::size_t>{0, 0, 2, 0, 4}));
  const Workload w = mooncake_workload(recs, 4);
  EXPECT_EQ(w.sessions[3].id, w.sessions[0].id);
  EXPECT_NE(w.sessions[4].id, w.sessions[0].id);
  EXPECT_EQ(w.sessions[1].turns[0].max_tokens, 1u);
  const Workload fixed = mooncake_workload(recs, 4, 7);  // --output-len replaces the trace's
  EXPECT_EQ(fixed.sessions[1].turns[0].max_tokens, 7u);
}

// One shared-prefix group: `prompts` prompts of a 64-token system prompt and a question.
Result<Workload> one_group_of(std::uint32_t prompts, std::uint32_t question_len = 16,
                              std::uint32_t output_len = WorkloadOptions{}.output_len) {
  WorkloadOptions wo;
  wo.name = "shared-prefix";
  wo.sp_groups = 1;
  wo.sp_prompts_per_group = prompts;
  wo.sp_system_len = 64;
  wo.sp_question_len = question_len;
  wo.output_len = output_len;
  return make_workload(wo);
}

TEST(Report, CapacityInTokensAndCountersExactAndDisagreementWarned) {
  auto wl = one_group_of(2);
  ASSERT_TRUE(wl);
  RunResult r;
  r.wall_s = 1;
  for (std::size_t i = 0; i < wl->sessions.size(); ++i) {
    RequestRecord rec;
    rec.session = i;
    rec.ttft_s = rec.e2e_s = 0.01;
    rec.usage = true;
    rec.prompt_tokens = 80;
    rec.cached_tokens = i == 0 ? 0 : 64;
    rec.backend = "engine-0";
    rec.predicted_tokens = i == 0 ? 0 : 80;
    r.records.push_back(rec);
  }
  // Two engines of 3200 blocks of 16 tokens; the queries were counted twice over.
  r.engines = {{"e0", true, "", 144794123, 64, 2, 3200, 16}, {"e1", true, "", 0, 0, 0, 3200, 16}};
  SummaryOptions so;
  so.block_size = 512;  // the bounds' blocks: the capacity is 102400 tokens = 200 blocks
  const Summary s = summarize("p", *wl, r, so);
  EXPECT_EQ(s.bounds.capacity_blocks, 200u);
  EXPECT_EQ(s.bounds.engines, 2u);
  const std::string j = summary_json(s);
  EXPECT_NE(j.find("\"engine_queries\":144794123"), std::string::npos) << j;
  ASSERT_EQ(s.warnings.size(), 1u);
  EXPECT_NE(s.warnings[0].find("disagree"), std::string::npos);
  // The second request was predicted to find 80 tokens and found 64.
  EXPECT_TRUE(s.loss.known);
  EXPECT_EQ(s.loss.overpredicted_tokens, 16u);
  const std::string csv = records_csv("p", r, true, &s);
  EXPECT_NE(csv.find("reason,predicted_tokens,best_engine,best_tokens,chosen_tokens"),
            std::string::npos);
}

TEST(Report, HitLossCountsRequestsRoutedPastALongerPrefix) {
  auto wl = one_group_of(3);
  ASSERT_TRUE(wl);
  RunResult r;
  r.wall_s = 1;
  // Same group prompt: the first on engine-a, the second on engine-a (hit), the third on engine-b
  // although engine-a held the 64-token system prompt.
  const char* backends[] = {"engine-a", "engine-a", "engine-b"};
  for (std::size_t i = 0; i < 3; ++i) {
    RequestRecord rec;
    rec.session = i;
    rec.ttft_s = rec.e2e_s = 0.01;
    rec.backend = backends[i];
    r.records.push_back(rec);
  }
  const Summary s = summarize("p", *wl, r);
  ASSERT_TRUE(s.loss.known);
  EXPECT_EQ(s.loss.spilled_requests, 1u);
  EXPECT_EQ(s.loss.spill_tokens, 64u);
  EXPECT_EQ(s.loss.best_engine[2], 0);  // engine-a: the first name in order
  EXPECT_EQ(s.loss.chosen_tokens[1], 64u);
  EXPECT_EQ(s.loss.chosen_tokens[2], 0u);
}

TEST(Report, PooledRunsSumCountersAndBoundsAndPoolLatencies) {
  auto wl = one_group_of(4);
  ASSERT_TRUE(wl);
  auto make_run = [&](double ttft_base, double hits) {
    RunResult r;
    r.wall_s = 2;
    for (std::size_t i = 0; i < wl->sessions.size(); ++i) {
      RequestRecord rec;
      rec.session = i;
      rec.start_s = 0.1 * static_cast<double>(i);
      rec.ttft_s = ttft_base + 0.001 * static_cast<double>(i);
      rec.e2e_s = rec.ttft_s + 0.01;
      r.records.push_back(rec);
    }
    r.engines = {{"e0", true, "", 100, hits, 3, 64, 16}, {"e1", true, "", 100, hits, 1, 64, 16}};
    return r;
  };
  const std::vector<RunResult> runs{make_run(0.010, 50), make_run(0.100, 30)};
  const Summary one = summarize("p", *wl, runs[0]);
  const Summary pooled = summarize_pooled("p", *wl, runs);
  EXPECT_EQ(pooled.repeats, 2);
  EXPECT_EQ(pooled.completed, 8u);
  EXPECT_DOUBLE_EQ(pooled.wall_s, 4);
  EXPECT_DOUBLE_EQ(pooled.hit_rate, 160.0 / 400.0);  // summed counters, not a mean of rates
  EXPECT_EQ(pooled.bounds.query_tokens, 2 * one.bounds.query_tokens);
  EXPECT_EQ(pooled.bounds.lru_hit_tokens, 2 * one.bounds.lru_hit_tokens);  // each run starts cold
  EXPECT_DOUBLE_EQ(pooled.bounds.lru_hit_rate(), one.bounds.lru_hit_rate());
  EXPECT_DOUBLE_EQ(pooled.imbalance, 1.5);  // 6 and 2 requests
  // Two runs: percentiles are the mean of the two runs' (the median of an even count).
  EXPECT_NEAR(pooled.ttft.p99, (one.ttft.p99 + summarize("p", *wl, runs[1]).ttft.p99) / 2, 1e-12);
  EXPECT_NEAR(pooled.ttft.p50, (one.ttft.p50 + summarize("p", *wl, runs[1]).ttft.p50) / 2, 1e-12);
  EXPECT_NEAR(pooled.ttft.mean, (0.0115 + 0.1015) / 2, 1e-9);  // the mean pools every request
  const RunResult merged = pool_runs(runs);
  ASSERT_EQ(merged.records.size(), 8u);
  EXPECT_DOUBLE_EQ(merged.records[4].start_s, 2.0);  // offset by the first run's wall
  EXPECT_NE(summary_json(pooled).find("\"repeats\":2"), std::string::npos);
}

TEST(Stats, Percentiles) {
  const std::vector<double> v{4, 1, 3, 2};
  EXPECT_DOUBLE_EQ(percentile(v, 50), 2.5);
  EXPECT_DOUBLE_EQ(percentile(v, 90), 3.7);
  EXPECT_DOUBLE_EQ(percentile(v, 99), 3.97);
  EXPECT_DOUBLE_EQ(percentile(v, 0), 1);
  EXPECT_DOUBLE_EQ(percentile(v, 100), 4);
  EXPECT_DOUBLE_EQ(percentile({7}, 99), 7);
  EXPECT_DOUBLE_EQ(percentile({}, 50), 0);
  const auto p = percentiles_of({1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
  EXPECT_DOUBLE_EQ(p.p50, 5.5);
  EXPECT_DOUBLE_EQ(p.p90, 9.1);
  EXPECT_DOUBLE_EQ(p.mean, 5.5);
  EXPECT_EQ(p.n, 10u);
}

TEST(Metrics, ParsesVllmCounters) {
  const std::string text =
      "# HELP vllm:prefix_cache_queries_total x\n# TYPE vllm:prefix_cache_queries_total counter\n"
      "vllm:prefix_cache_queries_total{engine=\"0\",model_name=\"m\"} 1200\n"
      "vllm:prefix_cache_hits_total{engine=\"0\",model_name=\"m\"} 300.0\n"
      "vllm:prefix_cache_hits_total_other 5\n"
      "vllm:request_success_total{engine=\"0\",finished_reason=\"length\"} 7\n"
      "vllm:request_success_total{engine=\"0\",finished_reason=\"stop\"} 2\n"
      "vllm:cache_config_info{block_size=\"16\",num_gpu_blocks=\"2048\"} 1\n";
  const auto c = parse_engine_metrics(text);
  EXPECT_TRUE(c.ok);
  EXPECT_EQ(c.prefix_cache_queries, 1200);
  EXPECT_EQ(c.prefix_cache_hits, 300);
  EXPECT_EQ(c.request_success, 9);
  EXPECT_EQ(c.num_gpu_blocks, 2048);
  EXPECT_EQ(c.block_size, 16);
  EXPECT_FALSE(parse_engine_metrics("garbage\n{}").ok);
}

// ---------------------------------------------------------------- load generator

WorkloadOptions small_shared_prefix() {
  WorkloadOptions o;
  o.sp_groups = 4;
  o.sp_prompts_per_group = 5;
  o.sp_system_len = 64;
  o.sp_question_len = 20;
  o.output_len = 6;
  return o;
}

TEST(LoadGen, DirectToEngineCountsTtftAndGroundTruth) {
  sim::SimCluster cluster(fast_sim(1));
  ASSERT_TRUE(cluster.start());
  const std::string url = cluster.endpoints()[0].url;
  auto wl = make_shared_prefix(small_shared_prefix());
  ASSERT_TRUE(wl);
  LoadOptions lo;
  lo.url = url;
  lo.concurrency = 1;  // sequential: the engine's (large) cache behaves like the infinite bound
  lo.max_requests = 15;
  lo.duration = 20s;
  lo.backend_metrics = {url};
  lo.progress = false;
  auto run = run_load(*wl, lo);
  ASSERT_TRUE(run) << run.error().message;
  EXPECT_FALSE(run->hit_deadline);
  EXPECT_EQ(run->model, "meta-llama/Llama-3.1-8B-Instruct");
  ASSERT_EQ(run->records.size(), 15u);
  for (const auto& r : run->records) {
    EXPECT_EQ(r.outcome, Outcome::kOk) << r.error;
    EXPECT_GE(r.ttft_s, 0);
    EXPECT_GE(r.e2e_s, r.ttft_s);
    EXPECT_EQ(r.output_tokens, 6u);
    EXPECT_EQ(r.itl_s.size(), 5u);
    EXPECT_EQ(r.prompt_tokens, 84u);
    EXPECT_TRUE(r.usage);
  }
  const Summary s = summarize(url, *wl, *run);
  EXPECT_EQ(s.completed, 15u);
  ASSERT_TRUE(s.engine_counters);
  // Ground truth: the engine's counters equal the sum of the usage fields.
  EXPECT_EQ(s.engine_queries, static_cast<double>(s.usage_prompt_tokens));
  EXPECT_EQ(s.engine_hits, static_cast<double>(s.usage_cached_tokens));
  EXPECT_DOUBLE_EQ(s.engine_hit_rate, s.usage_hit_rate);
  EXPECT_GT(s.hit_rate, 0.3);
  // Predicted tokens match the engine's: the achieved hits equal the infinite-cache bound.
  EXPECT_EQ(s.bounds.query_tokens, s.usage_prompt_tokens);
  EXPECT_EQ(s.bounds.infinite_hit_tokens, s.usage_cached_tokens);
  EXPECT_EQ(s.bounds.capacity_blocks, 8192u);
  EXPECT_NEAR(s.fraction_of_bound, 1.0, 1e-9);
  EXPECT_GT(s.ttft.n, 0u);
  EXPECT_GT(s.request_throughput, 0);
  cluster.stop();
}

TEST(LoadGen, MultiTurnThroughProxyWithSessionsAndBackends) {
  WorkloadOptions wo;
  wo.name = "multi-turn";
  wo.mt_sessions = 6;
  wo.mt_turns = 3;
  wo.mt_turn_len = 20;
  wo.mt_system_len = 16;
  wo.mt_think_s = 0.005;
  wo.output_len = 4;
  auto wl = make_workload(wo);
  ASSERT_TRUE(wl);
  CompareOptions co;
  co.policies = {"round-robin"};
  co.sim = fast_sim(2);
  co.load.concurrency = 3;
  co.load.max_requests = 14;
  co.load.duration = 20s;
  co.load.progress = false;
  auto runs = run_compare(*wl, co);
  ASSERT_TRUE(runs) << runs.error().message;
  ASSERT_EQ(runs->size(), 1u);
  const auto& r = (*runs)[0];
  ASSERT_TRUE(r.error.empty()) << r.error;
  EXPECT_EQ(r.run.records.size(), 14u);  // bounded by --requests
  EXPECT_EQ(r.summary.completed, 14u);
  std::map<std::string, int> by_backend;
  for (const auto& rec : r.run.records) {
    EXPECT_EQ(rec.outcome, Outcome::kOk) << rec.error;
    EXPECT_FALSE(rec.backend.empty());
    ++by_backend[rec.backend];
  }
  EXPECT_EQ(by_backend.size(), 2u);
  // Turns of a session were sent in order.
  std::map<std::size_t, std::size_t> next_turn;
  for (const auto& rec : r.run.records) EXPECT_EQ(rec.turn, next_turn[rec.session]++);
  ASSERT_TRUE(r.summary.engine_counters);
  EXPECT_EQ(r.summary.engine_hits, static_cast<double>(r.summary.usage_cached_tokens));
  EXPECT_EQ(r.summary.engine_queries, static_cast<double>(r.summary.usage_prompt_tokens));
  ASSERT_EQ(r.summary.backends.size(), 2u);
  EXPECT_EQ(r.summary.backends[0].name, "engine-0");
  EXPECT_EQ(r.summary.backends[0].requests + r.summary.backends[1].requests, 14u);
  EXPECT_NEAR(r.summary.imbalance, 1.0, 0.01);  // round robin: 7 and 7
  const std::string json = summaries_json({r.summary});
  EXPECT_NE(json.find("\"label\":\"round-robin\""), std::string::npos);
  EXPECT_NE(markdown_table({r.summary}).find("| round-robin |"), std::string::npos);
}

// A scheduler config that scores only the prefix match: one group's sequential requests all go to
// the engine that served the first (round-robin would alternate).
void write_prefix_only_config(const std::filesystem::path& file) {
  std::ofstream f(file);
  f << "plugins:\n  - type: prefix-cache-scorer\n  - type: max-score-picker\n"
       "schedulingProfiles:\n  - name: default\n    plugins:\n      - {pluginRef: "
       "prefix-cache-scorer}\n"
       "      - {pluginRef: max-score-picker}\n";
}

// In-process comparison on 2 fast engines, no KV events, one user (requests strictly in order).
// The engines a run's requests went to (every request must have succeeded).
std::size_t backends_used(const CompareRun& r) {
  std::set<std::string> s;
  for (const auto& rec : r.run.records) {
    EXPECT_EQ(rec.outcome, Outcome::kOk) << rec.error;
    s.insert(rec.backend);
  }
  return s.size();
}

TEST(Compare, PolicyFromAConfigFile) {
  // The prefix-only config keeps the group on one engine; the round-robin preset alternates.
  const auto dir = std::filesystem::temp_directory_path() / "kvroute_policy_config_test";
  std::filesystem::create_directories(dir);
  write_prefix_only_config(dir / "sticky.yaml");
  {
    std::ofstream g(dir / "empty.yaml");
    g << "backends: []\n";
  }
  auto wl = one_group_of(8, 8, 2);
  ASSERT_TRUE(wl);
  CompareOptions co = one_user_on_two_engines();
  co.policies = {"round-robin", "sticky", "empty", "missing"};
  co.policy_configs = {{"sticky", (dir / "sticky.yaml").string()},
                       {"empty", (dir / "empty.yaml").string()},
                       {"missing", (dir / "missing.yaml").string()}};
  auto runs = run_compare(*wl, co);
  ASSERT_TRUE(runs) << runs.error().message;
  ASSERT_EQ(runs->size(), 4u);
  ASSERT_TRUE((*runs)[0].error.empty()) << (*runs)[0].error;
  EXPECT_EQ(backends_used((*runs)[0]), 2u);
  ASSERT_TRUE((*runs)[1].error.empty()) << (*runs)[1].error;
  EXPECT_EQ((*runs)[1].run.records.size(), 8u);
  EXPECT_EQ(backends_used((*runs)[1]), 1u);
  EXPECT_NE((*runs)[2].error.find("no plugins"), std::string::npos) << (*runs)[2].error;
  EXPECT_NE((*runs)[3].error.find("missing.yaml"), std::string::npos) << (*runs)[3].error;
  std::filesystem::remove_all(dir);
}

TEST(Compare, SimultaneousPoliciesRunTogetherEachOnItsOwnEngines) {
  const auto dir = std::filesystem::temp_directory_path() / "kvroute_simultaneous_test";
  std::filesystem::create_directories(dir);
  write_prefix_only_config(dir / "sticky.yaml");
  auto wl = one_group_of(8, 8, 2);
  ASSERT_TRUE(wl);
  CompareOptions co = one_user_on_two_engines();
  co.policies = {"round-robin", "no-such-policy", "sticky"};
  co.policy_configs = {{"sticky", (dir / "sticky.yaml").string()}};
  co.simultaneous = true;
  std::vector<std::string> events;  // on_start/on_done in order
  co.on_start = [&](const std::string& p) { events.push_back("start " + p); };
  co.on_done = [&](const std::string& p, const Summary&, double) { events.push_back("done " + p); };
  auto runs = run_compare(*wl, co);
  ASSERT_TRUE(runs) << runs.error().message;
  ASSERT_EQ(runs->size(), 3u);
  // Every policy started before any finished: the loads ran at the same time.
  ASSERT_EQ(events.size(), 5u);
  EXPECT_EQ(events[0], "start round-robin");
  EXPECT_EQ(events[1], "start no-such-policy");
  EXPECT_EQ(events[2], "start sticky");
  EXPECT_EQ(events[3].substr(0, 5), "done ");
  EXPECT_NE((*runs)[1].error.find("unknown policy"), std::string::npos) << (*runs)[1].error;
  for (std::size_t i : {0u, 2u}) {
    const auto& r = (*runs)[i];
    ASSERT_TRUE(r.error.empty()) << r.error;
    EXPECT_EQ(r.run.records.size(), 8u);
    // Each policy's engines served exactly its own requests.
    ASSERT_TRUE(r.summary.engine_counters) << r.policy;
    EXPECT_EQ(r.summary.engine_queries, static_cast<double>(r.summary.usage_prompt_tokens))
        << r.policy;
    EXPECT_EQ(r.summary.backends[0].requests + r.summary.backends[1].requests, 8u) << r.policy;
    EXPECT_EQ(backends_used(r), i == 0 ? 2u : 1u) << r.policy;
  }
  // Targets share their engines: not combinable.
  co.targets = {{"a", "http://127.0.0.1:1"}};
  co.policies.clear();
  EXPECT_FALSE(run_compare(*wl, co));
  std::filesystem::remove_all(dir);
}

TEST(Compare, ParsesTargets) {
  auto named = parse_target("kvroute=http://127.0.0.1:8080");
  ASSERT_TRUE(named) << named.error().message;
  EXPECT_EQ(named->name, "kvroute");
  EXPECT_EQ(named->url, "http://127.0.0.1:8080");
  auto bare = parse_target("http://10.0.0.7:9000/");
  ASSERT_TRUE(bare) << bare.error().message;
  EXPECT_EQ(bare->name, "10.0.0.7:9000");
  EXPECT_FALSE(parse_target("gw=https://example:443"));  // https: a clear error, not a silent miss
  EXPECT_FALSE(parse_target("=http://127.0.0.1:1"));
  EXPECT_FALSE(parse_target("nonsense"));
}

// Routers given by URL: the same engine measured twice as two "targets". With the prefix caches
// reset before each target the second run sees exactly the first run's hits; without the reset it
// inherits the first run's cache and hits more. Per-target names, counters and load come back from
// the engines.
TEST(Compare, TargetsByUrlResetEngineCachesBetweenRuns) {
  sim::SimCluster cluster(fast_sim(1));
  ASSERT_TRUE(cluster.start());
  const std::string url = cluster.endpoints()[0].url;
  auto wl = make_shared_prefix(small_shared_prefix());
  ASSERT_TRUE(wl);
  CompareOptions co;
  co.targets = {{"first", url}, {"second", url}};
  co.engine_urls = {url};
  co.load.concurrency = 1;
  co.load.max_requests = 12;
  co.load.duration = 20s;
  co.load.progress = false;
  auto runs = run_compare(*wl, co);
  ASSERT_TRUE(runs) << runs.error().message;
  ASSERT_EQ(runs->size(), 2u);
  for (const auto& r : *runs) {
    ASSERT_TRUE(r.error.empty()) << r.error;
    EXPECT_TRUE(r.run.warnings.empty()) << r.run.warnings.front();
    EXPECT_EQ(r.summary.completed, 12u);
    ASSERT_TRUE(r.summary.engine_counters);
    ASSERT_EQ(r.summary.backends.size(), 1u);
    EXPECT_EQ(r.summary.backends[0].requests, 12u);
  }
  EXPECT_EQ((*runs)[0].summary.label, "first");
  EXPECT_EQ((*runs)[1].summary.label, "second");
  EXPECT_GT((*runs)[0].summary.engine_hits, 0);
  EXPECT_EQ((*runs)[1].summary.engine_hits, (*runs)[0].summary.engine_hits);

  co.reset_prefix_cache = false;
  co.targets = {{"warm", url}};
  auto warm = run_compare(*wl, co);
  ASSERT_TRUE(warm) << warm.error().message;
  ASSERT_EQ(warm->size(), 1u);
  EXPECT_GT((*warm)[0].summary.engine_hits, (*runs)[0].summary.engine_hits);

  co.policies = {"round-robin"};
  EXPECT_FALSE(run_compare(*wl, co));  // in-process policies and external targets do not mix
  cluster.stop();
}

TEST(LoadGen, OpenLoopAndHardDeadlineCancelsInFlight) {
  sim::SimOptions so = fast_sim(1);
  so.preset = "llama-3.1-8b-h100";  // real-time steps: 400 output tokens take seconds
  sim::SimCluster cluster(so);
  ASSERT_TRUE(cluster.start());
  WorkloadOptions wo = small_shared_prefix();
  wo.output_len = 400;
  auto wl = make_shared_prefix(wo);
  ASSERT_TRUE(wl);
  LoadOptions lo;
  lo.url = cluster.endpoints()[0].url;
  lo.rate = 20;
  lo.duration = 400ms;
  lo.progress = false;
  const auto t0 = std::chrono::steady_clock::now();
  auto run = run_load(*wl, lo);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(run) << run.error().message;
  EXPECT_TRUE(run->hit_deadline);
  EXPECT_LT(secs, 3.0);
  EXPECT_GT(run->records.size(), 2u);
  EXPECT_LT(run->records.size(), 20u);  // Poisson at 20/s over 0.4 s: about 8
  std::size_t cancelled = 0;
  for (const auto& r : run->records) cancelled += r.outcome == Outcome::kCancelled ? 1 : 0;
  EXPECT_EQ(cancelled, run->records.size());
  cluster.stop();
}

TEST(LoadGen, UnreachableUrlRecordsTransportErrors) {
  auto wl = make_shared_prefix(small_shared_prefix());
  LoadOptions lo;
  lo.url = "http://127.0.0.1:1";
  lo.model = "m";
  lo.max_requests = 3;
  lo.concurrency = 1;
  lo.duration = 5s;
  lo.progress = false;
  auto run = run_load(*wl, lo);
  ASSERT_TRUE(run);
  // A session stops at its first failure; the closed-loop user moves to the next session.
  ASSERT_EQ(run->records.size(), 3u);
  for (const auto& r : run->records) EXPECT_EQ(r.outcome, Outcome::kTransportError);
  EXPECT_FALSE(run_load(*wl, LoadOptions{.url = "https://x"}));
}

// ---------------------------------------------------------------- gate and CLI

int run_cli(std::vector<std::string> args) {
  CLI::App app;
  int rc = 0;
  add_bench_command(app, rc);
  add_demo_command(app, rc);
  std::reverse(args.begin(), args.end());
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return rc;
}

TEST(Check, ThresholdsAndExitCodes) {
  Summary s;
  s.completed = 10;
  s.sent = 10;
  s.hit_rate = 0.5;
  s.ttft.n = 10;
  s.ttft.p99 = 3.0;
  s.backends = {{"a", 10}, {"b", 5}};
  s.imbalance = 10.0 / 7.5;
  CheckOptions c{.min_hit_rate = 0.7, .max_ttft_p99_s = 2.0, .max_imbalance = 1.3};
  const auto f = check_thresholds(s, c);
  ASSERT_EQ(f.size(), 3u);
  EXPECT_NE(f[0].find("--min-hit-rate"), std::string::npos);
  EXPECT_NE(f[1].find("--max-ttft-p99"), std::string::npos);
  EXPECT_NE(f[2].find("--max-imbalance"), std::string::npos);
  EXPECT_TRUE(
      check_thresholds(s, {.min_hit_rate = 0.4, .max_ttft_p99_s = 5.0, .max_imbalance = 1.5})
          .empty());
  s.backends.clear();
  EXPECT_EQ(check_thresholds(s, {.max_imbalance = 5.0}).size(), 1u);

  sim::SimCluster cluster(fast_sim(1));
  ASSERT_TRUE(cluster.start());
  const std::string url = cluster.endpoints()[0].url;
  const std::vector<std::string> base{
      "bench", "--url",           url,  "--backend-metrics", url, "--requests", "12", "--sp-groups",
      "2",     "--sp-system-len", "64", "--output-len",      "3", "--quiet"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = base;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  ::testing::internal::CaptureStdout();
  ::testing::internal::CaptureStderr();
  const int pass = run_cli(
      with({"--check", "--min-hit-rate", "0.1", "--max-ttft-p99", "5s", "--max-imbalance", "1.0"}));
  const int failing = run_cli(with({"--check", "--min-hit-rate", "0.99"}));
  const int bad_url = run_cli({"bench", "--url", "ftp://x", "--quiet"});
  ::testing::internal::GetCapturedStdout();
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(pass, 0) << err;
  EXPECT_EQ(failing, 1) << err;
  EXPECT_EQ(bad_url, 2);
  EXPECT_NE(err.find("CHECK FAILED: hit rate"), std::string::npos) << err;

  // --json writes the plots beside the results unless --no-plots.
  const auto dir = std::filesystem::temp_directory_path() / "kvroute_bench_json_plots_test";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  ::testing::internal::CaptureStderr();
  const int with_plots = run_cli(with({"--json", (dir / "run.json").string()}));
  const int without = run_cli(with({"--json", (dir / "bare.json").string(), "--no-plots"}));
  const std::string plot_log = testing::internal::GetCapturedStderr();
  EXPECT_EQ(with_plots, 0) << plot_log;
  EXPECT_EQ(without, 0) << plot_log;
  EXPECT_TRUE(std::filesystem::exists(dir / "run.json"));
  EXPECT_TRUE(std::filesystem::exists(dir / "run-plots" / "ttft_cdf.png")) << plot_log;
  EXPECT_TRUE(std::filesystem::exists(dir / "run-plots" / "hit_rate.png")) << plot_log;
  EXPECT_TRUE(std::filesystem::exists(dir / "bare.json"));
  EXPECT_FALSE(std::filesystem::exists(dir / "bare-plots"));
  std::filesystem::remove_all(dir);
  cluster.stop();
}

TEST(Plots, GnuplotWritesPngs) {
  const auto dir = std::filesystem::temp_directory_path() / "kvroute_bench_plots_test";
  std::filesystem::remove_all(dir);
  RunResult run;
  run.wall_s = 2.0;
  for (int i = 0; i < 20; ++i) {
    RequestRecord r;
    r.start_s = 0.1 * i;
    r.ttft_s = 0.01 + 0.001 * i;
    r.e2e_s = 0.3;
    r.backend = i % 2 ? "engine-1" : "engine-0";
    run.records.push_back(r);
  }
  Summary s;
  s.label = "round-robin";
  s.hit_rate = 0.4;
  Summary s2 = s;
  s2.label = "kv'route";
  auto pngs = write_plots(dir.string(), {{s, &run}, {s2, &run}});
  ASSERT_TRUE(pngs) << pngs.error().message;
  ASSERT_EQ(pngs->size(), 4u);
  for (const auto& p : *pngs) {
    ASSERT_TRUE(std::filesystem::exists(p)) << p;
    EXPECT_GT(std::filesystem::file_size(p), 1000u) << p;
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kvroute::bench
