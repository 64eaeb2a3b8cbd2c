// Decision latency of the kvroute policy (prefix match + scoring + pick), index insert rate and
// memory per (block, backend) entry. Tokenization is excluded: requests come with block hashes.
#include <benchmark/benchmark.h>

#include "common/hash.h"
#include "routing/policy.h"
#include "routing/scheduler.h"

namespace kvroute::routing {
namespace {

struct World {
  std::vector<std::unique_ptr<Backend>> owned;
  std::vector<Backend*> ptrs;
  std::shared_ptr<RoutingContext> ctx;
  std::unique_ptr<Policy> policy;
  std::vector<RouteRequest> reqs;

  World(int backends, int tokens) {
    for (int i = 0; i < backends; ++i) {
      owned.push_back(std::make_unique<Backend>(i, "b" + std::to_string(i), "http://127.0.0.1:1",
                                                http::Endpoint{"127.0.0.1", 1}));
      ptrs.push_back(owned.back().get());
    }
    ctx = std::make_shared<RoutingContext>(static_cast<std::size_t>(backends));
    config::Config c;
    c.policy = "kvroute";
    policy = std::move(*make_policy(c, ptrs, ctx));
    // 64 prompt families sharing a long prefix, each already routed somewhere.
    for (int g = 0; g < 64; ++g) {
      std::vector<std::uint32_t> toks(static_cast<std::size_t>(tokens));
      for (int i = 0; i < tokens; ++i)
        toks[static_cast<std::size_t>(i)] =
            static_cast<std::uint32_t>(i < tokens / 2 ? i : g * 1000003 + i);
      RouteRequest r;
      r.blocks = chained_block_hashes(toks, 16, 1);
      r.prompt_tokens = static_cast<std::uint32_t>(tokens);
      ctx->prefix.insert(static_cast<std::size_t>(g % backends), r.blocks);
      reqs.push_back(std::move(r));
    }
  }
};

void BM_Decision(benchmark::State& state) {
  World w(static_cast<int>(state.range(1)), static_cast<int>(state.range(0)));
  std::size_t i = 0;
  for (auto _ : state) {
    auto d = w.policy->pick(w.reqs[i++ % w.reqs.size()], w.ptrs);
    benchmark::DoNotOptimize(d.backend);
  }
  state.SetLabel(std::to_string(state.range(0)) + " tokens, " + std::to_string(state.range(1)) +
                 " backends");
}
BENCHMARK(BM_Decision)->ArgsProduct({{1024, 8192, 32768}, {8, 64, 256}});

// What a replica spends applying one peer's decision (issue 17, ADR 0280): index insert with the
// held check, the output blocks' clock advance and the scorers' on_routed. With N replicas each
// applies N-1 of these per request the others route (on its replication thread).
void BM_PeerRouted(benchmark::State& state) {
  World w(static_cast<int>(state.range(1)), static_cast<int>(state.range(0)));
  std::size_t i = 0;
  for (auto _ : state) {
    RouteRequest& r = w.reqs[i % w.reqs.size()];
    r.tokens_per_block = 16;
    r.expected_output_tokens = 256;
    w.policy->on_peer_routed(r, *w.ptrs[i % w.ptrs.size()]);
    ++i;
  }
  state.SetLabel(std::to_string(state.range(0)) + " tokens, " + std::to_string(state.range(1)) +
                 " backends");
}
BENCHMARK(BM_PeerRouted)->ArgsProduct({{1024, 8192}, {8, 64}});

void BM_IndexInsert(benchmark::State& state) {
  ApproxPrefixIndex idx(64);
  std::vector<std::uint32_t> toks(8192);
  std::uint64_t g = 0;
  for (auto _ : state) {
    for (auto& t : toks) t = static_cast<std::uint32_t>(g++);
    auto blocks = chained_block_hashes(toks, 16, 1);
    idx.insert(g % 64, blocks);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * 512);  // blocks inserted
  state.counters["bytes_per_entry"] = static_cast<double>(idx.memory_bytes()) /
                                      static_cast<double>(std::max<std::size_t>(1, idx.entries()));
}
BENCHMARK(BM_IndexInsert);

}  // namespace
}  // namespace kvroute::routing
