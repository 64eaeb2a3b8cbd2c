// kv_index benchmarks (docs/benchmarks/kv_index.md):
//   - ingest: decode + apply of realistic vLLM batches in blocks per second on one core: store only
//     (4 BlockStored runs of N blocks x 16 tokens per batch), and steady state (one run stored and
//     an older run removed per batch, so every block costs a store and a removal); decode alone as
//     the baseline;
//   - lookup: match() of an 8k-token prompt (512 blocks) over 8 / 64 engines, against the
//     approximate index's match() (routing::ApproxPrefixIndex) on the same prompt;
//   - memory: bytes per (block, engine) record.
#include <benchmark/benchmark.h>

#include <random>

#include "common/hash.h"
#include "kv_events/codec.h"
#include "kv_index/block_index.h"
#include "routing/prefix_index.h"

namespace kvroute::kv_index {
namespace {

using kv_events::BlockRemoved;
using kv_events::BlockStored;
using kv_events::EventBatch;

constexpr std::size_t kRuns = 512;  // distinct runs per engine stream (the cycle)
constexpr std::size_t kEngines = 8;

// Encoded batches: batch b stores run b (parent: last block of run b-1) and removes run b -
// kRuns/2.
struct Stream {
  std::vector<std::string> encoded;
  std::size_t blocks_per_batch = 0;
};

Stream make_stream(std::size_t n, std::uint64_t salt) {
  std::mt19937_64 rng(salt);
  std::vector<std::vector<std::uint64_t>> hashes(kRuns);
  for (auto& h : hashes) {
    h.resize(n);
    for (auto& x : h) x = rng();
  }
  Stream s;
  s.blocks_per_batch = n;
  for (std::size_t b = 0; b < kRuns; ++b) {
    EventBatch batch;
    batch.ts = 1757500000.25 + static_cast<double>(b);
    batch.data_parallel_rank = 0;
    BlockStored st;
    st.block_hashes = hashes[b];
    if (b > 0) st.parent_block_hash = hashes[b - 1].back();
    st.token_ids.resize(n * 16);
    for (auto& t : st.token_ids) t = static_cast<std::uint32_t>(rng() % 128256);
    st.block_size = 16;
    st.medium = "GPU";
    batch.events.emplace_back(std::move(st));
    BlockRemoved rm;
    rm.block_hashes = hashes[(b + kRuns / 2) % kRuns];
    rm.medium = "GPU";
    batch.events.emplace_back(std::move(rm));
    s.encoded.push_back(kv_events::encode_batch(batch, kv_events::Encoding::kArray));
  }
  return s;
}

void BM_IngestStoreRemove(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  std::vector<Stream> streams;
  for (std::size_t e = 0; e < kEngines; ++e) streams.push_back(make_stream(n, e + 1));
  IndexOptions o;
  o.num_engines = kEngines;
  KvBlockIndex idx(o);
  for (std::size_t e = 0; e < kEngines; ++e) idx.set_engine_model(e, "bench-model");
  kv_events::DecodedBatch d;
  std::size_t i = 0;
  std::uint64_t blocks = 0;
  for (auto _ : state) {
    const std::size_t e = i % kEngines;
    const std::string& bytes = streams[e].encoded[(i / kEngines) % kRuns];
    if (kv_events::decode_batch_into(bytes, d) != nullptr) state.SkipWithError("decode");
    idx.apply(e, d.batch);
    blocks += n;
    ++i;
  }
  state.counters["blocks/s"] =
      benchmark::Counter(static_cast<double>(blocks), benchmark::Counter::kIsRate);
  state.counters["entries"] = static_cast<double>(idx.entries());
  state.counters["bytes/entry"] =
      idx.entries() ? static_cast<double>(idx.memory_bytes()) / static_cast<double>(idx.entries())
                    : 0;
}
BENCHMARK(BM_IngestStoreRemove)->Arg(1)->Arg(4)->Arg(16)->Arg(32);

// Store only: batches [4 x BlockStored of N blocks] (the kv_events bench's shape), each run chained
// to the previous one, 4 engines interleaved, 16k fresh blocks per engine; when an engine's stream
// is used up it is cleared (untimed) and replayed.
void BM_IngestStored(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  constexpr std::size_t kStoreEngines = 4, kBlocksPerEngine = 16384;
  const std::size_t batches = kBlocksPerEngine / (4 * n);
  std::vector<std::vector<std::string>> streams(kStoreEngines);
  std::mt19937_64 rng(11);
  for (auto& st : streams) {
    std::uint64_t parent = 0;
    for (std::size_t b = 0; b < batches; ++b) {
      EventBatch batch;
      batch.ts = 1757500000.25;
      batch.data_parallel_rank = 0;
      for (int k = 0; k < 4; ++k) {
        BlockStored s;
        for (std::size_t j = 0; j < n; ++j) s.block_hashes.push_back(rng());
        if (b + static_cast<std::size_t>(k) > 0) s.parent_block_hash = parent;
        parent = s.block_hashes.back();
        s.token_ids.resize(n * 16);
        for (auto& t : s.token_ids) t = static_cast<std::uint32_t>(rng() % 128256);
        s.medium = "GPU";
        batch.events.emplace_back(std::move(s));
      }
      st.push_back(kv_events::encode_batch(batch, kv_events::Encoding::kArray));
    }
  }
  IndexOptions o;
  o.num_engines = kStoreEngines;
  KvBlockIndex idx(o);
  for (std::size_t e = 0; e < kStoreEngines; ++e) idx.set_engine_model(e, "bench-model");
  kv_events::DecodedBatch d;
  std::size_t i = 0;
  std::uint64_t blocks = 0;
  double bytes_per_entry = 0;
  for (auto _ : state) {
    const std::size_t e = i % kStoreEngines;
    const std::size_t b = (i / kStoreEngines) % batches;
    if (b == 0 && i >= kStoreEngines) {
      state.PauseTiming();
      if (e == 0)
        bytes_per_entry =
            static_cast<double>(idx.memory_bytes()) / static_cast<double>(idx.entries());
      idx.clear_engine(e);
      state.ResumeTiming();
    }
    if (kv_events::decode_batch_into(streams[e][b], d) != nullptr) state.SkipWithError("decode");
    idx.apply(e, d.batch);
    blocks += 4 * n;
    ++i;
  }
  state.counters["blocks/s"] =
      benchmark::Counter(static_cast<double>(blocks), benchmark::Counter::kIsRate);
  state.counters["bytes/entry"] = bytes_per_entry;
}
BENCHMARK(BM_IngestStored)->Arg(1)->Arg(4)->Arg(16)->Arg(32);

// Baseline: decode alone, same bytes.
void BM_DecodeOnly(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  Stream s = make_stream(n, 1);
  kv_events::DecodedBatch d;
  std::size_t i = 0;
  std::uint64_t blocks = 0;
  for (auto _ : state) {
    if (kv_events::decode_batch_into(s.encoded[i++ % kRuns], d) != nullptr)
      state.SkipWithError("decode");
    benchmark::DoNotOptimize(d.batch.events.data());
    blocks += n;
  }
  state.counters["blocks/s"] =
      benchmark::Counter(static_cast<double>(blocks), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_DecodeOnly)->Arg(1)->Arg(16)->Arg(32);

// An 8k-token prompt (512 blocks). Engine e holds the first (e * 37) % 513 blocks (mode 0) or all
// of them (mode 1, the worst case: every block has every engine as holder); each engine also holds
// 20k unrelated blocks.
struct LookupFixture {
  LookupFixture(std::size_t engines, bool all) : idx(make_options(engines)), approx(engines) {
    std::mt19937 rng(9);
    std::vector<std::uint32_t> prompt(512 * 16);
    for (auto& t : prompt) t = static_cast<std::uint32_t>(rng() % 128256);
    blocks = chained_block_hashes(prompt, 16, hash64("bench-model"));
    for (std::size_t e = 0; e < engines; ++e) {
      idx.set_engine_model(e, "bench-model");
      const std::size_t held = all ? 512 : (e * 37) % 513;
      if (held > 0) {
        EventBatch b;
        BlockStored st;
        for (std::size_t k = 0; k < held; ++k) st.block_hashes.push_back(1000000 * (e + 1) + k);
        st.token_ids.assign(prompt.begin(),
                            prompt.begin() + static_cast<std::ptrdiff_t>(held * 16));
        b.events.emplace_back(std::move(st));
        idx.apply(e, b);
        approx.insert(e, std::span<const std::uint64_t>(blocks).first(held));
      }
      // Background: 20k blocks in runs of 32.
      for (std::size_t r = 0; r < 625; ++r) {
        EventBatch b;
        BlockStored st;
        for (std::size_t k = 0; k < 32; ++k)
          st.block_hashes.push_back(rng() | (std::uint64_t{1} << 63));
        st.token_ids.resize(32 * 16);
        for (auto& t : st.token_ids) t = static_cast<std::uint32_t>(rng());
        b.events.emplace_back(std::move(st));
        idx.apply(e, b);
      }
    }
  }
  static IndexOptions make_options(std::size_t engines) {
    IndexOptions o;
    o.num_engines = engines;
    return o;
  }
  KvBlockIndex idx;
  routing::ApproxPrefixIndex approx;
  std::vector<std::uint64_t> blocks;
};

void BM_Lookup512(benchmark::State& state) {
  LookupFixture f(static_cast<std::size_t>(state.range(0)), state.range(1) != 0);
  std::vector<std::uint32_t> out;
  std::vector<double> w;
  for (auto _ : state) {
    f.idx.match(f.blocks, out, &w);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["entries"] = static_cast<double>(f.idx.entries());
  state.counters["bytes/entry"] =
      static_cast<double>(f.idx.memory_bytes()) / static_cast<double>(f.idx.entries());
}
BENCHMARK(BM_Lookup512)
    ->Args({8, 0})
    ->Args({64, 0})
    ->Args({8, 1})
    ->Args({64, 1})
    ->Unit(benchmark::kMicrosecond);

// Peer: the approximate index's lookup of the same prompt (same holders, no background blocks).
void BM_ApproxLookup512(benchmark::State& state) {
  LookupFixture f(static_cast<std::size_t>(state.range(0)), state.range(1) != 0);
  std::vector<std::uint32_t> out;
  for (auto _ : state) {
    f.approx.match(f.blocks, out);
    benchmark::DoNotOptimize(out.data());
  }
}
BENCHMARK(BM_ApproxLookup512)
    ->Args({8, 0})
    ->Args({64, 0})
    ->Args({8, 1})
    ->Args({64, 1})
    ->Unit(benchmark::kMicrosecond);

// Memory: one engine holding 1M distinct blocks; 8 engines holding the same 128k blocks.
void BM_MemoryPerBlock(benchmark::State& state) {
  const auto engines = static_cast<std::size_t>(state.range(0));
  const std::size_t per_engine = engines == 1 ? (1u << 20) : (1u << 17);
  IndexOptions o;
  o.num_engines = engines;
  o.max_entries = 1u << 24;
  KvBlockIndex idx(o);
  std::mt19937 rng(3);
  std::vector<std::uint32_t> tokens(per_engine * 16);
  for (auto& t : tokens) t = static_cast<std::uint32_t>(rng());
  for (auto _ : state) {
    for (std::size_t e = 0; e < engines; ++e) {
      idx.set_engine_model(e, "bench-model");
      for (std::size_t r = 0; r < per_engine / 32; ++r) {
        EventBatch b;
        BlockStored st;
        for (std::size_t k = 0; k < 32; ++k) st.block_hashes.push_back((e << 40) + r * 32 + k);
        st.token_ids.assign(tokens.begin() + static_cast<std::ptrdiff_t>(r * 512),
                            tokens.begin() + static_cast<std::ptrdiff_t>((r + 1) * 512));
        if (r > 0) st.parent_block_hash = (e << 40) + r * 32 - 1;
        b.events.emplace_back(std::move(st));
        idx.apply(e, b);
      }
    }
  }
  state.counters["entries"] = static_cast<double>(idx.entries());
  state.counters["bytes/entry"] =
      static_cast<double>(idx.memory_bytes()) / static_cast<double>(idx.entries());
}
BENCHMARK(BM_MemoryPerBlock)->Arg(1)->Arg(8)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace kvroute::kv_index
