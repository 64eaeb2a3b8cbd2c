// File: tokenizer/internal/util.h
//
// Internals of the tokenizer library shared by its .cc files and tests: flat open-addressing hash
// maps keyed by byte strings or 64-bit integers (built once, then read-only: concurrent reads are
// safe), UTF-8 helpers and the NFC normalizer. Not a public API.
//
// Thread-safety: a map is built on one thread, then only read: any number of threads may read it.
// The UTF-8 helpers are pure. nfc_normalize() is safe from any thread: its scratch is thread-local
// and its output goes to the caller's buffer.
#pragma once

#include <xxhash.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace kvroute::tokenizer::internal {

// Byte string -> uint32, open addressing with linear probing; keys live in one arena.
class StringIdMap {
 public:
  void reserve(std::size_t n) {
    std::size_t cap = 16;
    while (cap < n * 2) cap <<= 1;
    if (cap > slots_.size()) rehash(cap);
  }
  void insert(std::string_view key, std::uint32_t value) {
    if ((count_ + 1) * 2 > slots_.size()) rehash(slots_.empty() ? 16 : slots_.size() * 2);
    const std::uint64_t h = XXH3_64bits(key.data(), key.size());
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t i = h & mask;; i = (i + 1) & mask) {
      Slot& s = slots_[i];
      if (s.len == kEmpty) {
        s = {h, static_cast<std::uint32_t>(arena_.size()), static_cast<std::uint32_t>(key.size()),
             value};
        arena_.append(key);
        ++count_;
        return;
      }
      if (s.hash == h && matches(s, key)) {
        s.value = value;
        return;
      }
    }
  }
  const std::uint32_t* find(std::string_view key) const {
    if (slots_.empty()) return nullptr;
    const std::uint64_t h = XXH3_64bits(key.data(), key.size());
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t i = h & mask;; i = (i + 1) & mask) {
      const Slot& s = slots_[i];
      if (s.len == kEmpty) return nullptr;
      if (s.hash == h && matches(s, key)) return &s.value;
    }
  }
  std::size_t size() const { return count_; }

 private:
  static constexpr std::uint32_t kEmpty = std::numeric_limits<std::uint32_t>::max();
  struct Slot {
    std::uint64_t hash = 0;
    std::uint32_t off = 0;
    std::uint32_t len = kEmpty;
    std::uint32_t value = 0;
  };
  bool matches(const Slot& s, std::string_view key) const {
    return s.len == key.size() && std::memcmp(arena_.data() + s.off, key.data(), key.size()) == 0;
  }
  void rehash(std::size_t cap) {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(cap, Slot{});
    const std::size_t mask = cap - 1;
    for (const Slot& s : old) {
      if (s.len == kEmpty) continue;
      std::size_t i = s.hash & mask;
      while (slots_[i].len != kEmpty) i = (i + 1) & mask;
      slots_[i] = s;
    }
  }
  std::vector<Slot> slots_;
  std::string arena_;
  std::size_t count_ = 0;
};

// uint64 -> uint64, open addressing; the key ~0 is reserved.
class U64Map {
 public:
  void reserve(std::size_t n) {
    std::size_t cap = 16;
    while (cap < n * 2) cap <<= 1;
    if (cap > slots_.size()) rehash(cap);
  }
  void insert(std::uint64_t key, std::uint64_t value) {
    if ((count_ + 1) * 2 > slots_.size()) rehash(slots_.empty() ? 16 : slots_.size() * 2);
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t i = mix(key) & mask;; i = (i + 1) & mask) {
      if (slots_[i].key == kEmpty) {
        slots_[i] = {key, value};
        ++count_;
        return;
      }
      if (slots_[i].key == key) {
        slots_[i].value = value;
        return;
      }
    }
  }
  const std::uint64_t* find(std::uint64_t key) const {
    if (slots_.empty()) return nullptr;
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t i = mix(key) & mask;; i = (i + 1) & mask) {
      if (slots_[i].key == key) return &slots_[i].value;
      if (slots_[i].key == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr std::uint64_t kEmpty = std::numeric_limits<std::uint64_t>::max();
  struct Slot {
    std::uint64_t key = kEmpty;
    std::uint64_t value = 0;
  };
  static std::size_t mix(std::uint64_t k) {
    k ^= k >> 31;
    k *= 0x9E3779B97F4A7C15ull;
    return static_cast<std::size_t>(k ^ (k >> 29));
  }
  void rehash(std::size_t cap) {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(cap, Slot{});
    const std::size_t mask = cap - 1;
    for (const Slot& s : old) {
      if (s.key == kEmpty) continue;
      std::size_t i = mix(s.key) & mask;
      while (slots_[i].key != kEmpty) i = (i + 1) & mask;
      slots_[i] = s;
    }
  }
  std::vector<Slot> slots_;
  std::size_t count_ = 0;
};

// Byte offset of the first invalid UTF-8 sequence (overlong forms, surrogates and code points above
// U+10FFFF are invalid), or npos.
std::size_t find_invalid_utf8(std::string_view s);
// Appends the UTF-8 encoding of code point `cp`.
void append_utf8(std::string& out, std::uint32_t cp);
// Length of the UTF-8 sequence starting at i of a valid string.
inline std::size_t utf8_sequence_length(std::string_view s, std::size_t i) {
  const auto b = static_cast<unsigned char>(s[i]);
  return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
}
// The code point of the valid sequence s[i, i + len).
inline std::uint32_t decode_utf8_at(std::string_view s, std::size_t i, std::size_t len) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data() + i);
  switch (len) {
    case 1:
      return p[0];
    case 2:
      return ((p[0] & 0x1Fu) << 6) | (p[1] & 0x3Fu);
    case 3:
      return ((p[0] & 0x0Fu) << 12) | ((p[1] & 0x3Fu) << 6) | (p[2] & 0x3Fu);
    default:
      return ((p[0] & 0x07u) << 18) | ((p[1] & 0x3Fu) << 12) | ((p[2] & 0x3Fu) << 6) |
             (p[3] & 0x3Fu);
  }
}
// Rust's String::from_utf8_lossy: each maximal invalid subpart becomes U+FFFD.
std::string utf8_lossy(std::string_view bytes);
// Unicode NFC (UAX #15, at the Unicode version of unicode_tables.cc) of valid UTF-8 text. Text
// without a code point flagged kNfcUnsafe is already NFC and is returned as is, without a copy
// (most text); otherwise the normalized text is built in `buf` and a view of `buf` is returned.
std::string_view nfc_normalize(std::string_view text, std::string& buf);

}  // namespace kvroute::tokenizer::internal
