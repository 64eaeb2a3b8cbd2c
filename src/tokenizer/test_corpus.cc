// File: tokenizer/test_corpus.cc
#include "tokenizer/internal/test_corpus.h"

#include <array>
#include <random>

#include "tokenizer/internal/unicode_tables.h"
#include "tokenizer/internal/util.h"

namespace kvroute::tokenizer::testing_corpus {
namespace {

// Fixed fragments: prose, code, contractions, special-token look-alikes, scripts, emoji, odd
// whitespace.
const char* const kFragments[] = {
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "don't",
    "DON'T",
    "I'M",
    "i'm",
    "we're",
    "WE'RE",
    "they've",
    "You'll",
    "YOU'LL",
    "he'd",
    "It's",
    "IT'S",
    "'s",
    "'S",
    "'t",
    "'re",
    "'Re",
    "'rE",
    "'ll",
    "'lL",
    "x'ſ",
    "'ſ",
    "''",
    "'",
    "' s",
    "rock'n'roll",
    "O'Neill's",
    "<|begin_of_text|>",
    "<|eot_id|>",
    "<|start_header_id|>user<|end_header_id|>\n\n",
    "<|end_of_text|>",
    "<|reserved_special_token_5|>",
    "<|eot_id",
    "<|<|eot_id|>|>",
    "<|begin_of_text|><|begin_of_text|>",
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<think>",
    "[LS]",
    "[RS]",
    "<tool_call>",
    "<|",
    "for (int i = 0; i < 10; ++i) {\n\tsum += a[i];\n}\n",
    "def f(x):\n    return x ** 2  # square\n",
    "{\"key\": [1, 2.5e10, null, true], \"s\": \"a\\\"b\"}",
    "#include <vector>\r\n",
    "x=>x*2;;;",
    "a->b::c",
    "Ünïcödé façade naïve café",
    "Привет, как дела?",
    "Γειά σου Κόσμε",
    "مرحبا بالعالم",
    "שלום עולם",
    "नमस्ते दुनिया",
    "สวัสดีชาวโลก",
    "你好，世界！这是一个测试。",
    "日本語のテキストです。",
    "한국어 텍스트입니다",
    "こんにちは、カタカナ・ひらがな",
    "👍",
    "👍🏽",
    "👨‍👩‍👧‍👦",
    "🏳️‍🌈",
    "🇺🇸🇫🇷",
    "❤️",
    "🤖🚀✨",
    "e\xCC\x81",
    "a\xCC\x8A\xCC\x81",
    "\xE2\x80\x8B",
    "\xEF\xBB\xBF",
    "\xC2\xA0",
    "\xE3\x80\x80",
    "\xE2\x80\xA8",
    "\xC2\x85",
    "\x0B\x0C",
    "\r\n",
    "\r",
    "\n\n\n",
    "\t\t",
    " \t \n",
    "１２３",
    "٣٤٥",
    "²³",
    "Ⅻ",
    "3.14159",
    "1,000,000",
    "0x1F",
    "2024-06-01T12:00:00Z",
    "!!!???...",
    "---",
    "```",
    "***\n\n",
    "(...)",
    "$$x^2$$",
};

// Code point ranges to draw random characters from (all assigned before Unicode 14).
struct Range {
  std::uint32_t lo;
  std::uint32_t hi;
};
const std::array<Range, 22> kRanges = {
    {{0x20, 0x7E},       {0xA0, 0x17F},     {0x300, 0x36F},   {0x391, 0x3C9},   {0x410, 0x44F},
     {0x5D0, 0x5EA},     {0x620, 0x64A},    {0x660, 0x669},   {0x905, 0x939},   {0x93E, 0x94D},
     {0xE01, 0xE3A},     {0x1100, 0x1112},  {0x1161, 0x1175}, {0x2000, 0x200D}, {0x2010, 0x2027},
     {0x2150, 0x2188},   {0x3041, 0x3096},  {0x4E00, 0x4FFF}, {0xAC00, 0xAD00}, {0xFF01, 0xFF5E},
     {0x1F300, 0x1F5FF}, {0x1F900, 0x1F9FF}}};

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
        const char* words[] = {"the",  "and",    "token", "cache", "prefix",
                               "vLLM", "router", "a",     "I",     "x"};
        const char* tails[] = {"'s", "'t",  "'re", "'ve", "'m",  "'ll", "'d", "'S",
                               "'T", "'RE", "'VE", "'M",  "'LL", "'D",  "",   ""};
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
        for (std::size_t i = 0; i < n; ++i)
          internal::append_utf8(out, 0x300 + static_cast<std::uint32_t>(next(0x70)));
        break;
      }
      case 10: {  // special tokens spelled in text, whole or broken
        const char* s[] = {"<|begin_of_text|>",
                           "<|eot_id|>",
                           "<|start_header_id|>",
                           "<|end_header_id|>",
                           "<|endoftext|>",
                           "<|im_start|>",
                           "<|im_end|>",
                           "<think>",
                           "[LS]",
                           "[RS]"};
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
    "A router that knows which replica holds which blocks can send a request where its prefix is "
    "warm. ",
    "The quick brown fox jumps over the lazy dog, and the dog doesn't mind at all. ",
    "In 2023 the team measured 1,234 requests per second at a p99 latency of 87 ms. ",
    "Tokenizers split text into pre-tokens with a regular expression, then merge bytes with BPE. ",
    "She said: \"We'll ship it on Friday; it's ready.\" He replied, \"I'm not so sure.\" ",
    "Les modèles de langage sont entraînés sur des données très variées. ",
    "大规模语言模型的推理服务需要高效的缓存管理。",
};

const std::array<const char*, 4> kCode = {
    "def handle(request):\n    if request.prefix in cache:\n        return cache[request.prefix]\n "
    "   return None\n",
    "for (std::size_t i = 0; i < blocks.size(); ++i) {\n  hash = mix(hash, blocks[i]);\n}\n",
    "{\n  \"model\": \"llama-3\",\n  \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}],\n  "
    "\"stream\": true\n}\n",
    "SELECT id, name FROM users WHERE created_at > '2024-01-01' ORDER BY id DESC LIMIT 10;\n",
};

// NFC material, all of Unicode 9.0 or earlier (checked against DerivedAge): HF's NFC uses
// Unicode 9.0 tables, so a mark assigned later has class 0 there and orders differently.
const Range kNfcMarks[] = {
    {0x300, 0x36F},     {0x483, 0x487},     {0x591, 0x5BD},     {0x5C1, 0x5C2},
    {0x610, 0x61A},     {0x64B, 0x65F},     {0x670, 0x670},     {0x6D6, 0x6DC},
    {0x711, 0x711},     {0x730, 0x74A},     {0x93C, 0x93C},     {0x94D, 0x94D},
    {0x951, 0x954},     {0x9BC, 0x9BC},     {0x9CD, 0x9CD},     {0xA3C, 0xA3C},
    {0xB3C, 0xB3C},     {0xBCD, 0xBCD},     {0xC55, 0xC56},     {0xCBC, 0xCBC},
    {0xD4D, 0xD4D},     {0xDCA, 0xDCA},     {0xE38, 0xE3A},     {0xE48, 0xE4B},
    {0xF71, 0xF84},     {0x1037, 0x1037},   {0x1039, 0x103A},   {0x17D2, 0x17D2},
    {0x1AB0, 0x1ABD},   {0x1B34, 0x1B34},   {0x1B44, 0x1B44},   {0x1DC0, 0x1DF5},
    {0x1DFB, 0x1DFF},   {0x20D0, 0x20DC},   {0x20E5, 0x20F0},   {0x2DE0, 0x2DFF},
    {0x302A, 0x302F},   {0x3099, 0x309A},   {0xA674, 0xA67D},   {0xFB1E, 0xFB1E},
    {0xFE20, 0xFE2F},   {0x110B9, 0x110BA}, {0x11133, 0x11134}, {0x1133C, 0x1133C},
    {0x1134D, 0x1134D}, {0x1D165, 0x1D169}, {0x1D16D, 0x1D172}, {0x1D17B, 0x1D182},
    {0x1D185, 0x1D18B}, {0x1E944, 0x1E94A},
};
// Letters, many precomposed (Latin, Greek, Cyrillic, Hebrew and Arabic presentation forms), kana,
// CJK compatibility ideographs, and the first halves of composing Indic and Balinese pairs.
const Range kNfcBases[] = {
    {0x41, 0x5A},       {0x61, 0x7A},       {0xC0, 0xFF},       {0x100, 0x17F},
    {0x1A0, 0x1B0},     {0x1CD, 0x1DC},     {0x1F8, 0x21B},     {0x386, 0x3CE},
    {0x400, 0x45F},     {0x4C1, 0x4C2},     {0x4D0, 0x4FF},     {0x5D0, 0x5EA},
    {0x622, 0x64A},     {0x6C0, 0x6D5},     {0x915, 0x939},     {0x995, 0x9B9},
    {0x9C7, 0x9CC},     {0xB15, 0xB39},     {0xB47, 0xB4C},     {0xB92, 0xB94},
    {0xBC6, 0xBCC},     {0xC46, 0xC48},     {0xCBF, 0xCCB},     {0xD46, 0xD4C},
    {0xDD9, 0xDDE},     {0xF40, 0xF69},     {0x1025, 0x1026},   {0x1B05, 0x1B12},
    {0x1B3A, 0x1B43},   {0x1E00, 0x1EFF},   {0x1F00, 0x1FFF},   {0x219A, 0x219B},
    {0x2204, 0x2209},   {0x2260, 0x2262},   {0x226D, 0x2271},   {0x22E0, 0x22ED},
    {0x3041, 0x3096},   {0x309D, 0x309E},   {0x30A1, 0x30FA},   {0xF900, 0xFA0D},
    {0xFB1D, 0xFB4E},   {0x1109A, 0x110AB}, {0x1112E, 0x1112F}, {0x1134B, 0x1134C},
    {0x114BB, 0x114BE}, {0x115BA, 0x115BB}, {0x2F800, 0x2F80F},
};
// Characters NFC never keeps or that compose as starters: singletons, composition exclusions,
// non-starter decompositions, the second halves of starter pairs (Bengali, Oriya, Tamil, Kannada,
// Malayalam, Sinhala, Myanmar, Balinese, Kaithi, Chakma, Grantha, Tirhuta, Siddham).
const std::uint32_t kNfcSpecials[] = {
    0x212B, 0x2126, 0x212A,  0x0340,  0x0341,  0x0343,  0x0344,  0x0374,  0x037E,  0x0387,
    0x1F71, 0x1FEE, 0x2000,  0x2001,  0x2329,  0x232A,  0x0958,  0x0959,  0x095F,  0x09DC,
    0x09DF, 0x0A33, 0x0A5E,  0x0B5C,  0x0F43,  0x0F73,  0x0F75,  0x0F81,  0x0F93,  0xFB1D,
    0xFB1F, 0xFB2C, 0x2ADC,  0x1D15E, 0x1D160, 0x1D1BB, 0x09BE,  0x09D7,  0x0B3E,  0x0B56,
    0x0B57, 0x0BBE, 0x0BD7,  0x0CC2,  0x0CD5,  0x0CD6,  0x0D3E,  0x0D57,  0x0DCF,  0x0DDF,
    0x102E, 0x1B35, 0x110BA, 0x11127, 0x1133E, 0x11357, 0x114B0, 0x114BA, 0x114BD, 0x115AF,
};

class NfcGen {
 public:
  NfcGen(std::uint64_t seed, bool all_marks) : rng_(seed) {
    if (!all_marks) return;
    for (std::uint32_t cp = 0; cp <= 0x10FFFF; ++cp) {
      if (unicode::combining_class(cp) != 0) all_marks_.push_back(cp);
      const bool surrogate = cp >= 0xD800 && cp <= 0xDFFF;
      if ((unicode::props(cp) & unicode::kNfcUnsafe) != 0 && !surrogate) all_unsafe_.push_back(cp);
    }
  }
  std::uint64_t next(std::uint64_t n) { return rng_() % n; }
  std::uint32_t from(const Range* ranges, std::size_t n) {
    const Range& r = ranges[next(n)];
    return r.lo + static_cast<std::uint32_t>(next(r.hi - r.lo + 1));
  }
  std::uint32_t mark() {
    if (!all_marks_.empty() && next(2) == 0) return all_marks_[next(all_marks_.size())];
    return from(kNfcMarks, std::size(kNfcMarks));
  }

  std::string item() {
    std::string s;
    const std::size_t n = 1 + next(8);
    for (std::size_t i = 0; i < n; ++i) {
      switch (next(10)) {
        case 0:
        case 1:
        case 2: {  // a letter, then marks in random order
          internal::append_utf8(s, from(kNfcBases, std::size(kNfcBases)));
          const std::size_t marks = next(5);
          for (std::size_t k = 0; k < marks; ++k) internal::append_utf8(s, mark());
          break;
        }
        case 3:  // marks on their own (at the start of an item: no starter)
          internal::append_utf8(s, mark());
          break;
        case 4: {  // Hangul: L V T runs, mostly of the composing jamo, sometimes just outside their
                   // ranges
          const Range l[] = {
              {0x1100, 0x1112}, {0x1100, 0x1112}, {0x1113, 0x1113}, {0x115F, 0x115F}};
          const Range v[] = {
              {0x1161, 0x1175}, {0x1161, 0x1175}, {0x1160, 0x1160}, {0x1176, 0x1176}};
          const Range t[] = {
              {0x11A8, 0x11C2}, {0x11A8, 0x11C2}, {0x11A7, 0x11A7}, {0x11C3, 0x11C3}};
          if (next(5)) internal::append_utf8(s, from(l, std::size(l)));
          if (next(5)) internal::append_utf8(s, from(v, std::size(v)));
          if (next(2)) internal::append_utf8(s, from(t, std::size(t)));
          if (next(4) == 0) internal::append_utf8(s, mark());
          break;
        }
        case 5: {  // a syllable (LV or LVT), maybe followed by a T
          internal::append_utf8(s, 0xAC00 + static_cast<std::uint32_t>(next(11172)));
          if (next(2)) internal::append_utf8(s, 0x11A7 + static_cast<std::uint32_t>(next(29)));
          break;
        }
        case 6:
        case 7:
          internal::append_utf8(s, kNfcSpecials[next(std::size(kNfcSpecials))]);
          break;
        case 8:
          if (!all_unsafe_.empty()) {
            internal::append_utf8(s, all_unsafe_[next(all_unsafe_.size())]);
            break;
          }
          [[fallthrough]];
        default: {  // plain text around it
          const char* t[] = {" ", "a", "\n", "x y", ".", "Z"};
          s += t[next(6)];
          break;
        }
      }
    }
    return s;
  }

 private:
  std::mt19937_64 rng_;
  std::vector<std::uint32_t> all_marks_;
  std::vector<std::uint32_t> all_unsafe_;
};

}  // namespace

std::vector<std::string> nfc_corpus(std::uint64_t seed, std::size_t count, bool all_marks) {
  NfcGen g(seed, all_marks);
  std::vector<std::string> items;
  items.reserve(count);
  for (std::size_t i = 0; i < count; ++i) items.push_back(g.item());
  return items;
}

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
    s += t % 2 == 0 ? "<|start_header_id|>user<|end_header_id|>\n\n"
                    : "<|start_header_id|>assistant<|end_header_id|>\n\n";
    s += mixed_text(300 + g.next(900), seed + 2 + t);
    s += "<|eot_id|>";
  }
  s += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return s;
}

}  // namespace kvroute::tokenizer::testing_corpus
