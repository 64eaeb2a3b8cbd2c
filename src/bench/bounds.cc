#include "bench/internal/bounds.h"

#include <algorithm>
#include <cmath>

#include "common/hash.h"

namespace kvroute::bench {

double BoundsResult::infinite_hit_rate() const {
  return query_tokens == 0
             ? 0
             : static_cast<double>(infinite_hit_tokens) / static_cast<double>(query_tokens);
}
double BoundsResult::lru_hit_rate() const {
  return query_tokens == 0
             ? 0
             : static_cast<double>(lru_hit_tokens) / static_cast<double>(query_tokens);
}

BoundsCalculator::BoundsCalculator(std::uint32_t block_size, std::uint64_t capacity_blocks)
    : block_size_(block_size == 0 ? 16 : block_size) {
  r_.capacity_blocks = capacity_blocks;
}

void BoundsCalculator::add_tokens(std::span<const std::uint32_t> tokens) {
  const auto hashes = chained_block_hashes(tokens, block_size_, 0);
  add(hashes, tokens.size());
}

void BoundsCalculator::add(std::span<const std::uint64_t> hashes, std::uint64_t num_tokens) {
  ++r_.requests;
  r_.query_tokens += num_tokens;
  const std::size_t max_blocks =
      num_tokens == 0 ? 0 : std::min<std::size_t>(hashes.size(), (num_tokens - 1) / block_size_);

  std::size_t inf = 0;
  while (inf < max_blocks && seen_.contains(hashes[inf])) ++inf;
  r_.infinite_hit_tokens += inf * block_size_;
  for (std::uint64_t h : hashes) seen_.insert(h);

  std::size_t lru = 0;
  while (lru < max_blocks && pos_.contains(hashes[lru])) ++lru;
  r_.lru_hit_tokens += lru * block_size_;
  // Insert tail first so that block 0 ends up most recently used.
  for (std::size_t i = hashes.size(); i-- > 0;) {
    const std::uint64_t h = hashes[i];
    auto it = pos_.find(h);
    if (it != pos_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
    } else {
      lru_.push_front(h);
      pos_.emplace(h, lru_.begin());
    }
  }
  if (r_.capacity_blocks > 0) {
    while (lru_.size() > r_.capacity_blocks) {
      pos_.erase(lru_.back());
      lru_.pop_back();
    }
  }
}

double percentile_sorted(std::span<const double> sorted, double p) {
  if (sorted.empty()) return 0;
  p = std::clamp(p, 0.0, 100.0);
  const double rank = p / 100.0 * static_cast<double>(sorted.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(rank));
  const std::size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double frac = rank - static_cast<double>(lo);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

double percentile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  return percentile_sorted(values, p);
}

}  // namespace kvroute::bench
