// File: tokenizer/internal/test_corpus.h
//
// Deterministic text generators for the tokenizer's tests, benchmark and fuzz seeds (same seed,
// same text, on every platform: std::mt19937_64 raw output only).
//
// Thread-safety: pure functions (each call seeds its own generator); safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kvroute::tokenizer::testing_corpus {

// Short hostile items: scripts, CJK, emoji/ZWJ, combining marks, code, whitespace/digit runs,
// contractions in both cases, text spelling special tokens (whole and broken).
std::vector<std::string> hostile_corpus(std::uint64_t seed, std::size_t count);
// Items of 2-32 KB, some ending in runs of thousands of one character.
std::vector<std::string> long_items(std::uint64_t seed, std::size_t count);
// About `bytes` bytes of mixed text: prose (mostly English), code, JSON, some hostile items.
std::string mixed_text(std::size_t bytes, std::uint64_t seed);
// Items that NFC changes in every way: base and precomposed letters followed by combining marks in
// random order, Hangul jamo runs and syllables, singletons (U+212B, U+2126, ...), composition
// exclusions (U+0958,
// ...), non-starter decompositions (U+0344, U+0F73), and starters that compose (Indic vowel signs).
// With `all_marks`, marks also come from every code point with a non-zero combining class or
// kNfcUnsafe in unicode_tables.cc (its Unicode version); without, every character is of Unicode 9.0
// or earlier (the version of HF's NFC tables, see docs/adr/0100).
std::vector<std::string> nfc_corpus(std::uint64_t seed, std::size_t count, bool all_marks);
// A Llama 3 chat prompt as the chat template renders it: system prompt of about system_bytes,
// `turns` turns, then the generation prompt.
std::string llama3_chat(std::size_t turns, std::size_t system_bytes, std::uint64_t seed);

}  // namespace kvroute::tokenizer::testing_corpus
