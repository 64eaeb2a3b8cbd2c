// File: tokenizer/test_corpus.cc
#include "tokenizer/test_corpus.h"

#include <array>
#include <random>

#include "tokenizer/internal.h"

namespace kvroute::tokenizer::testing_corpus {
namespace {

// Fixed fragments: prose, code, contractions, special-token look-alikes, scripts, emoji, odd whitespace.
const char* const kFragments[] = {
    "Hello world", "The quick brown fox jumps over the lazy dog.", "don't", "DON'T", "I'M", "i'm", "we're",
    "WE'RE", "they've", "You'll", "YOU'LL", "he'd", "It's", "IT'S", "'s", "'S", "'t", "'re", "'Re", "'rE", "'ll",
    "'lL", "x'ſ", "'ſ", "''", "'", "' s", "rock'n'roll", "O'Neill's", "<|begin_of_text|>", "<|eot_id|>",
    "<|start_header_id|>user<|end_header_id|>\n\n", "<|end_of_text|>", "<|reserved_special_token_5|>",
    "<|eot_id", "<|<|eot_id|>|>", "<|begin_of_text|><|begin_of_text|>", "<|endoftext|>", "<|im_start|>",
    "<|im_end|>", "<think>", "[LS]", "[RS]", "<tool_call>", "<|",
    "for (int i = 0; i < 10; ++i) {\n\tsum += a[i];\n}\n", "def f(x):\n    return x ** 2  # square\n",
    "{\"key\": [1, 2.5e10, null, true], \"s\": \"a\\\"b\"}", "#include <vector>\r\n", "x=>x*2;;;", "a->b::c",
    "Ünïcödé façade naïve café", "Привет, как дела?", "Γειά σου Κόσμε", "مرحبا بالعالم", "שלום עולם",
    "नमस्ते दुनिया", "สวัสดีชาวโลก", "你好，世界！这是一个测试。", "日本語のテキストです。", "한국어 텍스트입니다",
    "こんにちは、カタカナ・ひらがな", "👍", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇺🇸🇫🇷", "❤️", "🤖🚀✨",
    "e\xCC\x81", "a\xCC\x8A\xCC\x81", "\xE2\x80\x8B", "\xEF\xBB\xBF", "\xC2\xA0", "\xE3\x80\x80", "\xE2\x80\xA8",
    "\xC2\x85", "\x0B\x0C", "\r\n", "\r", "\n\n\n", "\t\t", " \t \n", "１２３", "٣٤٥", "²³", "Ⅻ", "3.14159",
    "1,000,000", "0x1F", "2024-06-01T12:00:00Z", "!!!???...", "---", "```", "***\n\n", "(...)", "$$x^2$$",
};

// Code point ranges to draw random characters from (all assigned before Unicode 14).
struct Range {
  std::uint32_t lo;
  std::uint32_t hi;
};
const std::array<Range, 22> kRanges = {{{0x20, 0x7E},
                                        {0xA0, 0x17F},
                                        {0x300, 0x36F},
                                        {0x391, 0x3C9},
                                        {0x410, 0x44F},
                                        {0x5D0, 0x5EA},
                                        {0x620, 0x64A},
                                        {0x660, 0x669},
                                        {0x905, 0x939},
                                        {0x93E, 0x94D},
                                        {0xE01, 0xE3A},
                                        {0x1100, 0x1112},
                                        {0x1161, 0x1175},
                                        {0x2000, 0x200D},
                                        {0x2010, 0x2027},
                                        {0x2150, 0x2188},
                                        {0x3041, 0x3096},
                                        {0x4E00, 0x4FFF},
                                        {0xAC00, 0xAD00},
                                        {0xFF01, 0xFF5E},
                                        {0x1F300, 0x1F5FF},
                                        {0x1F900, 0x1F9FF}}};

class Gen {
 public:
  explicit Gen(std::uint64_t seed) : rng_(seed) {}
  std::uint64_t next(std::uint64_t n) { return rng_() % n; }

  void fragment(std::string& out) {
    switch (next(12)) {
      case 0:
      case 1:
      case 2:
        out += kFragments[next(std::size(kFragments))];
        break;
      case 3: {  // whitespace runs
        const char* ws[] = {" ", "\n", "\t", "\r\n", "\xC2\xA0", "\xE3\x80\x80", "\r", "\x0B"};
        const std::size_t n = 1 + next(next(4) == 0 ? 200 : 8);
        const std::size_t kinds = 1 + next(8);
        for (std::size_t i = 0; i < n; ++i) out += ws[next(kinds)];
        break;
      }
      case 4: {  // digit runs
        const std::size_t n = 1 + next(40);
        for (std::size_t i = 0; i < n; ++i) out.push_back(static_cast<char>('0' + next(10)));
        break;
      }
      case 5: {  // random characters from the ranges
        const std::size_t n = 1 + next(12);
        for (std::size_t i = 0; i < n; ++i) {
          const Range& r = kRanges[next(kRanges.size())];
          internal::append_utf8(out, r.lo + static_cast<std::uint32_t>(next(r.hi - r.lo + 1)));
        }
        break;
      }
      case 6: {  // words with random case and contractions
        const char* words[] = {"the", "and", "token", "cache", "prefix", "vLLM", "router", "a", "I", "x"};
        const char* tails[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'VE", "'M", "'LL",
                               "'D", "", ""};
        std::string w = words[next(10)];
        for (char& c : w) {
          if (next(3) == 0 && c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
        }
        out += w;
        out += tails[next(16)];
        break;
      }
      case 7: {  // punctuation runs followed by newlines
        const char* p = "!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~";
        const std::size_t n = 1 + next(6);
        for (std::size_t i = 0; i < n; ++i) out.push_back(p[next(32)]);
        if (next(2)) out += next(2) ? "\n" : "\r\n\r\n";
        break;
      }
      case 8: {  // emoji ZWJ sequences and modifiers
        const std::uint32_t base[] = {0x1F468, 0x1F469, 0x1F9D1, 0x1F466, 0x2764, 0x1F3F3};
        internal::append_utf8(out, base[next(6)]);
        if (next(2)) internal::append_utf8(out, 0x1F3FB + static_cast<std::uint32_t>(next(5)));
        if (next(2)) {
          internal::append_utf8(out, 0x200D);
          internal::append_utf8(out, base[next(6)]);
        }
        if (next(3) == 0) internal::append_utf8(out, 0xFE0F);
        break;
      }
      case 9: {  // combining marks stacked on letters
        out.push_back(static_cast<char>('a' + next(26)));
        const std::size_t n = next(4);
        for (std::size_t i = 0; i < n; ++i) internal::append_utf8(out, 0x300 + static_cast<std::uint32_t>(next(0x70)));
        break;
      }
      case 10: {  // special tokens spelled in text, whole or broken
        const char* s[] = {"<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
                           "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "[LS]", "[RS]"};
        std::string t = s[next(10)];
        if (next(4) == 0) t = t.substr(0, next(t.size()));
        out += t;
        break;
      }
      default: {  // spaces before words/punct
        const std::size_t n = next(5);
        out.append(n, ' ');
        out += kFragments[next(std::size(kFragments))];
        break;
      }
    }
  }

  std::string item(std::size_t max_fragments) {
    std::string s;
    const std::size_t n = 1 + next(max_fragments);
    const char* seps[] = {"", " ", "  ", "\n", " \n", "\t", ""};
    for (std::size_t i = 0; i < n; ++i) {
      if (i) s += seps[next(7)];
      fragment(s);
    }
    return s;
  }

 private:
  std::mt19937_64 rng_;
};

const std::array<const char*, 8> kProse = {
    "Prefix caching lets the engine reuse the key-value cache of a shared prompt prefix. ",
    "A router that knows which replica holds which blocks can send a request where its prefix is warm. ",
    "The quick brown fox jumps over the lazy dog, and the dog doesn't mind at all. ",
    "In 2023 the team measured 1,234 requests per second at a p99 latency of 87 ms. ",
    "Tokenizers split text into pre-tokens with a regular expression, then merge bytes with BPE. ",
    "She said: \"We'll ship it on Friday; it's ready.\" He replied, \"I'm not so sure.\" ",
    "Les modèles de langage sont entraînés sur des données très variées. ",
    "大规模语言模型的推理服务需要高效的缓存管理。",
};

const std::array<const char*, 4> kCode = {
    "def handle(request):\n    if request.prefix in cache:\n        return cache[request.prefix]\n    return None\n",
    "for (std::size_t i = 0; i < blocks.size(); ++i) {\n  hash = mix(hash, blocks[i]);\n}\n",
    "{\n  \"model\": \"llama-3\",\n  \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}],\n  \"stream\": true\n}\n",
    "SELECT id, name FROM users WHERE created_at > '2024-01-01' ORDER BY id DESC LIMIT 10;\n",
};

}  // namespace

std::vector<std::string> hostile_corpus(std::uint64_t seed, std::size_t count) {
  Gen g(seed);
  std::vector<std::string> items;
  items.reserve(count);
  for (std::size_t i = 0; i < count; ++i) items.push_back(g.item(12));
  return items;
}

std::vector<std::string> long_items(std::uint64_t seed, std::size_t count) {
  Gen g(seed);
  std::vector<std::string> items;
  for (std::size_t i = 0; i < count; ++i) {
    std::string s;
    const std::size_t target = 2000 + g.next(30000);
    while (s.size() < target) s += g.item(20);
    // A very long run of one character and of whitespace exercise the long-word BPE path.
    if (i % 3 == 0) s += std::string(3000 + g.next(3000), i % 2 ? ' ' : 'a');
    if (i % 3 == 1) s += std::string(2000, '\n') + "x" + std::string(500, '7');
    items.push_back(std::move(s));
  }
  return items;
}

std::string mixed_text(std::size_t bytes, std::uint64_t seed) {
  Gen g(seed);
  std::string s;
  s.reserve(bytes + 1024);
  while (s.size() < bytes) {
    const std::uint64_t k = g.next(20);
    if (k < 12) {
      s += kProse[g.next(kProse.size())];
    } else if (k < 16) {
      s += kCode[g.next(kCode.size())];
    } else if (k < 17) {
      s += "\n\n";
    } else {
      s += g.item(6);
      s += ' ';
    }
  }
  return s;
}

std::string llama3_chat(std::size_t turns, std::size_t system_bytes, std::uint64_t seed) {
  std::string s = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n";
  s += mixed_text(system_bytes, seed);
  s += "<|eot_id|>";
  Gen g(seed + 1);
  for (std::size_t t = 0; t < turns; ++t) {
    s += t % 2 == 0 ? "<|start_header_id|>user<|end_header_id|>\n\n" : "<|start_header_id|>assistant<|end_header_id|>\n\n";
    s += mixed_text(300 + g.next(900), seed + 2 + t);
    s += "<|eot_id|>";
  }
  s += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return s;
}

}  // namespace kvroute::tokenizer::testing_corpus
