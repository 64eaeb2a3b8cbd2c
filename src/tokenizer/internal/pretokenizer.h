// File: tokenizer/internal/pretokenizer.h
//
// Hand-written scanners for the pre-tokenizer regexes of the byte-level BPE models kvroute
// supports. Each reproduces, match for match, what Oniguruma (HF tokenizers' regex engine:
// backtracking, leftmost-first alternation) finds with `find_iter` for one exact pattern string:
//   kLlama3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//   ?[^\s\p{L}\p{N}]+[\r\n]*|
//            \s*[\r\n]+|\s+(?!\S)|\s+
//   kQwen2:  as kLlama3 with \p{N} instead of \p{N}{1,3}
//   kGpt2:   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// (docs/adr/0101 derives each scanner from the backtracking semantics.)
//
// Thread-safety: pure functions over constant tables; safe from any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace kvroute::tokenizer {

enum class SplitPattern { kLlama3, kQwen2, kGpt2 };

// The scanner for a regex string exactly as written in tokenizer.json, or nullopt if none matches
// it.
std::optional<SplitPattern> recognize_split_pattern(std::string_view regex);

struct Span {
  std::uint32_t begin;
  std::uint32_t end;
};

// Appends the matches of the pattern over text (valid UTF-8), as byte offsets + base, to out. The
// patterns match every character, so the matches tile the text.
void split_pattern(SplitPattern pattern, std::string_view text, std::uint32_t base,
                   std::vector<Span>& out);

}  // namespace kvroute::tokenizer
