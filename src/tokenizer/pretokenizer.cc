// File: tokenizer/pretokenizer.cc
#include "tokenizer/internal/pretokenizer.h"

#include <cstddef>

#include "tokenizer/internal/unicode_tables.h"

namespace kvroute::tokenizer {
namespace {

constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

using unicode::kLetter;
using unicode::kNumber;
using unicode::kWhiteSpace;

// One decoded character: code point, byte length and property bits.
struct Ch {
  std::uint32_t cp;
  std::uint32_t len;
  std::uint8_t props;
};

// Character classes used by the scanners.
inline bool is_l(const Ch& c) { return (c.props & kLetter) != 0; }
inline bool is_n(const Ch& c) { return (c.props & kNumber) != 0; }
inline bool is_ws(const Ch& c) { return (c.props & kWhiteSpace) != 0; }
// [^\s\p{L}\p{N}]
inline bool is_other(const Ch& c) { return (c.props & (kLetter | kNumber | kWhiteSpace)) == 0; }
inline bool is_crlf(const Ch& c) { return c.cp == '\r' || c.cp == '\n'; }

struct AsciiTable {
  std::uint8_t props[128];
  constexpr AsciiTable() : props{} {
    for (int c = 0; c < 128; ++c) {
      std::uint8_t v = 0;
      if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) v = kLetter;
      if (c >= '0' && c <= '9') v = kNumber;
      if ((c >= 0x09 && c <= 0x0D) || c == ' ') v = kWhiteSpace;
      props[c] = v;
    }
  }
};
constexpr AsciiTable kAscii;

// Reads the character at byte offset i (i < s.size(); s is valid UTF-8).
inline Ch at(std::string_view s, std::size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return {b0, 1, kAscii.props[b0]};
  std::uint32_t cp;
  std::uint32_t len;
  if (b0 < 0xE0) {
    cp = ((b0 & 0x1Fu) << 6) | (static_cast<unsigned char>(s[i + 1]) & 0x3Fu);
    len = 2;
  } else if (b0 < 0xF0) {
    cp = ((b0 & 0x0Fu) << 12) | ((static_cast<unsigned char>(s[i + 1]) & 0x3Fu) << 6) |
         (static_cast<unsigned char>(s[i + 2]) & 0x3Fu);
    len = 3;
  } else {
    cp = ((b0 & 0x07u) << 18) | ((static_cast<unsigned char>(s[i + 1]) & 0x3Fu) << 12) |
         ((static_cast<unsigned char>(s[i + 2]) & 0x3Fu) << 6) |
         (static_cast<unsigned char>(s[i + 3]) & 0x3Fu);
    len = 4;
  }
  return {cp, len, unicode::props(cp)};
}

// End of the run of characters satisfying pred starting at i.
template <typename Pred>
inline std::size_t run_end(std::string_view s, std::size_t i, Pred pred) {
  while (i < s.size()) {
    const Ch c = at(s, i);
    if (!pred(c)) break;
    i += c.len;
  }
  return i;
}

// Length of a contraction at i (s[i] == '\''), 0 if none. case_insensitive follows Oniguruma's
// (?i): Unicode simple case folding, under which U+017F LATIN SMALL LETTER LONG S matches 's'.
inline std::size_t contraction(std::string_view s, std::size_t i, bool case_insensitive) {
  const std::size_t n = s.size();
  if (i + 1 >= n) return 0;
  auto lower = [&](std::size_t k) -> int {
    if (k >= n) return -1;
    const auto c = static_cast<unsigned char>(s[k]);
    if (!case_insensitive) return c;
    if (c >= 'A' && c <= 'Z') return c + 32;
    return c;
  };
  const int c1 = lower(i + 1);
  switch (c1) {
    case 's':
    case 't':
    case 'm':
    case 'd':
      return 2;
    case 'r':
    case 'v':
      return lower(i + 2) == 'e' ? 3 : 0;
    case 'l':
      return lower(i + 2) == 'l' ? 3 : 0;
    default:
      break;
  }
  // U+017F is C5 BF in UTF-8.
  if (case_insensitive && c1 == 0xC5 && i + 2 < n && static_cast<unsigned char>(s[i + 2]) == 0xBF)
    return 3;
  return 0;
}

// Shared tail for the whitespace alternatives: `\s+(?!\S)|\s+` given a whitespace run starting at
// i. Returns the match end.
inline std::size_t whitespace_tail(std::string_view s, std::size_t i) {
  std::size_t j = i;
  std::size_t last_start = i;
  while (j < s.size()) {
    const Ch c = at(s, j);
    if (!is_ws(c)) break;
    last_start = j;
    j += c.len;
  }
  if (j == s.size()) return j;            // \s+ to the end; (?!\S) holds at the end
  if (last_start > i) return last_start;  // give back the last space so (?!\S) sees a space
  return j;                               // \s+ : one whitespace character before a non-space
}

// Llama 3 (max_digits 3) and Qwen2 (max_digits 1).
void split_llama_like(std::string_view s, std::uint32_t base, std::size_t max_digits,
                      std::vector<Span>& out) {
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    const Ch c0 = at(s, i);
    std::size_t end = 0;
    // (?i:'s|'t|'re|'ve|'m|'ll|'d)
    if (c0.cp == '\'') {
      const std::size_t k = contraction(s, i, /*case_insensitive=*/true);
      if (k != 0) end = i + k;
    }
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (end == 0) {
      if (is_l(c0)) {
        end = run_end(s, i + c0.len, is_l);
      } else if (!is_n(c0) && !is_crlf(c0) && i + c0.len < n && is_l(at(s, i + c0.len))) {
        end = run_end(s, i + c0.len, is_l);
      }
    }
    // \p{N}{1,3}
    if (end == 0 && is_n(c0)) {
      std::size_t j = i;
      for (std::size_t k = 0; k < max_digits && j < n; ++k) {
        const Ch c = at(s, j);
        if (!is_n(c)) break;
        j += c.len;
      }
      end = j;
    }
    // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
    if (end == 0) {
      std::size_t p = i;
      if (c0.cp == ' ' && i + 1 < n) p = i + 1;
      if (p < n && is_other(at(s, p))) {
        std::size_t j = run_end(s, p, is_other);
        end = run_end(s, j, is_crlf);
      }
    }
    if (end == 0) {
      // c0 is whitespace here (every character is L, N, other or whitespace).
      // \s*[\r\n]+ : the whitespace run up to and including its last \r or \n.
      std::size_t j = i;
      std::size_t after_last_crlf = 0;
      while (j < n) {
        const Ch c = at(s, j);
        if (!is_ws(c)) break;
        j += c.len;
        if (is_crlf(c)) after_last_crlf = j;
      }
      end = after_last_crlf != 0 ? after_last_crlf : whitespace_tail(s, i);
    }
    out.push_back({base + static_cast<std::uint32_t>(i), base + static_cast<std::uint32_t>(end)});
    i = end;
  }
}

void split_gpt2(std::string_view s, std::uint32_t base, std::vector<Span>& out) {
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    const Ch c0 = at(s, i);
    std::size_t end = 0;
    if (c0.cp == '\'') {
      const std::size_t k = contraction(s, i, /*case_insensitive=*/false);
      if (k != 0) end = i + k;
    }
    if (end == 0) {
      // ' ?\p{L}+' | ' ?\p{N}+' | ' ?[^\s\p{L}\p{N}]+' : the class of the first non-prefix
      // character decides.
      std::size_t p = i;
      Ch c = c0;
      if (c0.cp == ' ' && i + 1 < n) {
        p = i + 1;
        c = at(s, p);
      }
      if (is_l(c)) {
        end = run_end(s, p, is_l);
      } else if (is_n(c)) {
        end = run_end(s, p, is_n);
      } else if (is_other(c)) {
        end = run_end(s, p, is_other);
      }
    }
    if (end == 0) end = whitespace_tail(s, i);  // \s+(?!\S)|\s+
    out.push_back({base + static_cast<std::uint32_t>(i), base + static_cast<std::uint32_t>(end)});
    i = end;
  }
}

}  // namespace

std::optional<SplitPattern> recognize_split_pattern(std::string_view regex) {
  if (regex == kLlama3Regex) return SplitPattern::kLlama3;
  if (regex == kQwen2Regex) return SplitPattern::kQwen2;
  if (regex == kGpt2Regex) return SplitPattern::kGpt2;
  return std::nullopt;
}

void split_pattern(SplitPattern pattern, std::string_view text, std::uint32_t base,
                   std::vector<Span>& out) {
  switch (pattern) {
    case SplitPattern::kLlama3:
      split_llama_like(text, base, 3, out);
      return;
    case SplitPattern::kQwen2:
      split_llama_like(text, base, 1, out);
      return;
    case SplitPattern::kGpt2:
      split_gpt2(text, base, out);
      return;
  }
}

}  // namespace kvroute::tokenizer
