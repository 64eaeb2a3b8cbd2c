// Engine work per request and per step, time model off (docs/benchmarks/sim.md).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "sim/internal/engine.h"

namespace kvroute::sim {
namespace {

std::vector<std::uint32_t> prompt(std::uint32_t len, std::uint32_t variant, std::uint32_t shared) {
  std::vector<std::uint32_t> p(len);
  for (std::uint32_t i = 0; i < len; ++i) {
    p[i] = i < shared ? 1000 + i : (variant * 7919u + i * 31u) % 120000u;
  }
  return p;
}

// Short requests (128-token prompt, 64 of them a shared system prompt; max_tokens from arg 1),
// `concurrency` in flight: batches of requests added, engine stepped until idle.
void BM_ShortRequests(benchmark::State& state) {
  const auto concurrency = static_cast<std::uint32_t>(state.range(0));
  const auto max_tokens = static_cast<std::uint32_t>(state.range(1));
  auto engine = Engine::create({.model = "bench", .num_gpu_blocks = 16384});
  if (!engine) {
    state.SkipWithError("create failed");
    return;
  }
  std::uint32_t variant = 0;
  std::vector<std::vector<std::uint32_t>> prompts;
  for (std::uint32_t i = 0; i < 4096; ++i) prompts.push_back(prompt(128, i, 64));
  std::uint64_t requests = 0, tokens = 0;
  for (auto _ : state) {
    for (std::uint32_t i = 0; i < concurrency; ++i) {
      auto id = engine->add_request(
          {.prompt_token_ids = prompts[variant++ % prompts.size()], .max_tokens = max_tokens});
      benchmark::DoNotOptimize(id);
    }
    while (engine->has_work()) {
      StepResult r = engine->step();
      tokens += r.outputs.size();
      benchmark::DoNotOptimize(r);
    }
    benchmark::DoNotOptimize(engine->take_events());
    requests += concurrency;
  }
  state.counters["requests_per_s"] =
      benchmark::Counter(static_cast<double>(requests), benchmark::Counter::kIsRate);
  state.counters["tokens_per_s"] =
      benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ShortRequests)
    ->ArgNames({"concurrency", "max_tokens"})
    ->Args({1, 1})
    ->Args({64, 1})
    ->Args({64, 16})
    ->Args({256, 16})
    ->Unit(benchmark::kMicrosecond);

// Steady decode with 256 running sequences (512-token prompts); one iteration = one step.
void BM_DecodeStep256(benchmark::State& state) {
  constexpr std::uint32_t kSeqs = 256, kPrompt = 512, kMaxTokens = 2048;
  auto engine = Engine::create(
      {.model = "bench", .num_gpu_blocks = kSeqs * (kPrompt + kMaxTokens) / 16 + 64});
  if (!engine) {
    state.SkipWithError("create failed");
    return;
  }
  std::uint32_t variant = 0;
  auto refill = [&] {
    while (engine->stats().num_requests_running + engine->stats().num_requests_waiting < kSeqs) {
      auto id = engine->add_request(
          {.prompt_token_ids = prompt(kPrompt, variant++, 0), .max_tokens = kMaxTokens});
      benchmark::DoNotOptimize(id);
    }
  };
  refill();
  while (engine->stats().num_requests_running < kSeqs || engine->stats().num_requests_waiting > 0) {
    engine->step();  // prefill outside the timed loop
  }
  engine->take_events();
  std::uint64_t steps = 0;
  for (auto _ : state) {
    StepResult r = engine->step();
    benchmark::DoNotOptimize(r);
    ++steps;
    if (engine->stats().num_requests_running < kSeqs) refill();
    if ((steps & 255) == 0) benchmark::DoNotOptimize(engine->take_events());
  }
  state.counters["steps_per_s"] =
      benchmark::Counter(static_cast<double>(steps), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_DecodeStep256)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace kvroute::sim
