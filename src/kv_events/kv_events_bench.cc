// Benchmarks for the KV event codec: decode (+ ingest: walk every block hash and token) and encode
// rates for realistic batches (4 BlockStored events of 1..32 blocks of 16 tokens, random 64-bit
// hashes, Llama-3-range token ids), array and map modes. Peer in the same run: msgpuck's mp_check,
// a validating walk over the same bytes that builds nothing (a floor for any msgpack decoder).
#include <benchmark/benchmark.h>
#include <msgpuck.h>

#include <random>

#include "kv_events/codec.h"

namespace kvroute::kv_events {
namespace {

constexpr int kEventsPerBatch = 4;

std::string make_payload(int blocks_per_event, Encoding enc) {
  std::mt19937_64 rng(7);
  EventBatch b;
  b.ts = 1757500000.25;
  b.data_parallel_rank = 0;
  for (int e = 0; e < kEventsPerBatch; ++e) {
    BlockStored s;
    s.parent_block_hash = rng();
    for (int i = 0; i < blocks_per_event; ++i) s.block_hashes.push_back(rng());
    for (int i = 0; i < blocks_per_event * 16; ++i)
      s.token_ids.push_back(static_cast<std::uint32_t>(rng() % 128256));
    s.medium = "GPU";
    b.events.emplace_back(std::move(s));
  }
  return encode_batch(b, enc);
}

void BM_Decode(benchmark::State& state, Encoding enc) {
  const int bpe = static_cast<int>(state.range(0));
  const std::string payload = make_payload(bpe, enc);
  DecodedBatch d;
  std::uint64_t sink = 0;
  for (auto _ : state) {
    if (decode_batch_into(payload, d) != nullptr) state.SkipWithError("decode failed");
    for (const auto& ev : d.batch.events) {  // ingest: touch every hash and token
      const auto& s = std::get<BlockStored>(ev);
      for (auto h : s.block_hashes) sink ^= h;
      for (auto t : s.token_ids) sink += t;
    }
  }
  benchmark::DoNotOptimize(sink);
  const double blocks = static_cast<double>(state.iterations()) * kEventsPerBatch * bpe;
  state.counters["blocks/s"] = benchmark::Counter(blocks, benchmark::Counter::kIsRate);
  state.counters["bytes/block"] = static_cast<double>(payload.size()) / (kEventsPerBatch * bpe);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * payload.size()));
}

void BM_PeerMsgpuckCheck(benchmark::State& state, Encoding enc) {
  const int bpe = static_cast<int>(state.range(0));
  const std::string payload = make_payload(bpe, enc);
  for (auto _ : state) {
    const char* p = payload.data();
    if (mp_check(&p, payload.data() + payload.size()) != 0) state.SkipWithError("mp_check failed");
    benchmark::DoNotOptimize(p);
  }
  const double blocks = static_cast<double>(state.iterations()) * kEventsPerBatch * bpe;
  state.counters["blocks/s"] = benchmark::Counter(blocks, benchmark::Counter::kIsRate);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * payload.size()));
}

void BM_Encode(benchmark::State& state, Encoding enc) {
  const int bpe = static_cast<int>(state.range(0));
  auto d = decode_batch(make_payload(bpe, enc));
  std::string out;
  for (auto _ : state) {
    out.clear();
    encode_batch(d->batch, enc, out);
    benchmark::DoNotOptimize(out.data());
  }
  const double blocks = static_cast<double>(state.iterations()) * kEventsPerBatch * bpe;
  state.counters["blocks/s"] = benchmark::Counter(blocks, benchmark::Counter::kIsRate);
}

BENCHMARK_CAPTURE(BM_Decode, array, Encoding::kArray)->Arg(1)->Arg(4)->Arg(16)->Arg(32);
BENCHMARK_CAPTURE(BM_Decode, map, Encoding::kMap)->Arg(1)->Arg(4)->Arg(16)->Arg(32);
BENCHMARK_CAPTURE(BM_PeerMsgpuckCheck, array, Encoding::kArray)->Arg(1)->Arg(4)->Arg(16)->Arg(32);
BENCHMARK_CAPTURE(BM_PeerMsgpuckCheck, map, Encoding::kMap)->Arg(1)->Arg(4)->Arg(16)->Arg(32);
BENCHMARK_CAPTURE(BM_Encode, array, Encoding::kArray)->Arg(1)->Arg(16);
BENCHMARK_CAPTURE(BM_Encode, map, Encoding::kMap)->Arg(1)->Arg(16);

}  // namespace
}  // namespace kvroute::kv_events
