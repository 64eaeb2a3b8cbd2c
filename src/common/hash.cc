#include "common/hash.h"

#include <xxhash.h>

namespace kvroute {

std::uint64_t hash64(std::string_view bytes, std::uint64_t seed) {
  return XXH3_64bits_withSeed(bytes.data(), bytes.size(), seed);
}

std::uint64_t hash64(std::span<const std::uint32_t> tokens, std::uint64_t seed) {
  return XXH3_64bits_withSeed(tokens.data(), tokens.size_bytes(), seed);
}

std::vector<std::uint64_t> chained_block_hashes(std::span<const std::uint32_t> tokens,
                                                std::size_t block_size, std::uint64_t seed) {
  std::vector<std::uint64_t> out;
  if (block_size == 0) return out;
  out.reserve(tokens.size() / block_size);
  std::uint64_t parent = seed;
  for (std::size_t off = 0; off + block_size <= tokens.size(); off += block_size) {
    parent = hash64(tokens.subspan(off, block_size), parent);
    out.push_back(parent);
  }
  return out;
}

}  // namespace kvroute
