// File: common/hash.h
//
// Fast 64-bit hashing (XXH3) and the chained block hash kvroute uses for prefix blocks:
// h(block i) = XXH3_64(tokens of block i, seed = h(block i-1)), h(-1) = seed of the model.
//
// Thread-safety: pure functions; safe from any thread.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace kvroute {

std::uint64_t hash64(std::string_view bytes, std::uint64_t seed = 0);
std::uint64_t hash64(std::span<const std::uint32_t> tokens, std::uint64_t seed);

// A 64-bit finalizer (splitmix64's): mixes a combination of hashes into a uniform one.
constexpr std::uint64_t mix64(std::uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Chained hashes of the full blocks of `tokens` (a trailing partial block is not hashed).
std::vector<std::uint64_t> chained_block_hashes(std::span<const std::uint32_t> tokens,
                                                std::size_t block_size, std::uint64_t seed);

}  // namespace kvroute
