#include "bench/internal/bounds.h"

#include <algorithm>
#include <cmath>

#include "common/hash.h"

namespace kvroute::bench {

namespace {
double rate(std::uint64_t hits, std::uint64_t queries) {
  return queries == 0 ? 0 : static_cast<double>(hits) / static_cast<double>(queries);
}
// Generated blocks get ids no prompt block has (chained hashes are 64-bit; these count down from
// the top, so a collision needs ~2^63 outputs).
constexpr std::uint64_t kOutputIdBase = ~std::uint64_t{0};
}  // namespace

double BoundsResult::infinite_hit_rate() const { return rate(infinite_hit_tokens, query_tokens); }
double BoundsResult::lru_hit_rate() const { return rate(lru_hit_tokens, query_tokens); }
double BoundsResult::lru_output_hit_rate() const {
  return rate(lru_output_hit_tokens, query_tokens);
}
double BoundsResult::oracle_hit_rate() const { return rate(oracle_hit_tokens, query_tokens); }

std::size_t LruBlocks::prefix_hits(std::span<const std::uint64_t> hashes,
                                   std::size_t max_blocks) const {
  std::size_t n = 0;
  while (n < max_blocks && n < hashes.size() && pos_.contains(hashes[n])) ++n;
  return n;
}

void LruBlocks::touch(std::uint64_t h) {
  auto it = pos_.find(h);
  if (it != pos_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second);
    return;
  }
  lru_.push_front(h);
  pos_.emplace(h, lru_.begin());
  if (capacity_ > 0 && lru_.size() > capacity_) {
    pos_.erase(lru_.back());
    lru_.pop_back();
  }
}

void LruBlocks::admit(std::span<const std::uint64_t> hashes, std::uint64_t output_blocks) {
  for (std::uint64_t i = 0; i < output_blocks; ++i) touch(kOutputIdBase - next_output_id_++);
  for (std::size_t i = hashes.size(); i-- > 0;) touch(hashes[i]);
}

std::size_t max_hit_blocks(std::size_t num_hashes, std::uint64_t num_tokens,
                           std::uint32_t block_size) {
  return num_tokens == 0 ? 0 : std::min<std::size_t>(num_hashes, (num_tokens - 1) / block_size);
}

std::uint64_t output_blocks(std::uint64_t num_tokens, std::uint64_t output_tokens,
                            std::uint32_t block_size) {
  return (num_tokens + output_tokens) / block_size - num_tokens / block_size;
}

BoundsCalculator::BoundsCalculator(std::uint32_t block_size, std::uint64_t capacity_blocks,
                                   std::uint32_t engines, double load_cap)
    : block_size_(block_size == 0 ? 16 : block_size),
      pooled_(capacity_blocks),
      pooled_out_(capacity_blocks) {
  r_.capacity_blocks = capacity_blocks;
  r_.block_size = block_size_;
  r_.engines = engines;
  r_.load_cap = engines > 0 ? std::max(1.0, load_cap) : 0;
  const std::uint64_t per_engine = engines == 0 || capacity_blocks == 0
                                       ? 0
                                       : std::max<std::uint64_t>(1, capacity_blocks / engines);
  engines_.assign(engines, LruBlocks(per_engine));
  assigned_.assign(engines, 0);
}

void BoundsCalculator::add_tokens(std::span<const std::uint32_t> tokens,
                                  std::uint64_t output_tokens) {
  const auto hashes = chained_block_hashes(tokens, block_size_, 0);
  add(hashes, tokens.size(), output_tokens);
}

void BoundsCalculator::add(std::span<const std::uint64_t> hashes, std::uint64_t num_tokens,
                           std::uint64_t output_tokens) {
  ++r_.requests;
  r_.query_tokens += num_tokens;
  const std::size_t max_blocks = max_hit_blocks(hashes.size(), num_tokens, block_size_);
  const std::uint64_t out_blocks = output_blocks(num_tokens, output_tokens, block_size_);

  std::size_t inf = 0;
  while (inf < max_blocks && seen_.contains(hashes[inf])) ++inf;
  r_.infinite_hit_tokens += inf * block_size_;
  for (std::uint64_t h : hashes) seen_.insert(h);

  r_.lru_hit_tokens += pooled_.prefix_hits(hashes, max_blocks) * block_size_;
  pooled_.admit(hashes, 0);
  r_.lru_output_hit_tokens += pooled_out_.prefix_hits(hashes, max_blocks) * block_size_;
  pooled_out_.admit(hashes, out_blocks);

  if (!engines_.empty()) {
    // Engines that may take one more request within load_cap x the mean (after this one).
    std::uint64_t total = 0, most = 0;
    for (auto a : assigned_) total += a;
    const double limit = std::max(1.0, std::floor(r_.load_cap * static_cast<double>(total + 1) /
                                                  static_cast<double>(engines_.size())));
    std::size_t best = engines_.size(), best_hits = 0;
    for (std::size_t e = 0; e < engines_.size(); ++e) {
      if (static_cast<double>(assigned_[e] + 1) > limit) continue;
      const std::size_t h = engines_[e].prefix_hits(hashes, max_blocks);
      if (best == engines_.size() || h > best_hits ||
          (h == best_hits && assigned_[e] < assigned_[best])) {
        best = e;
        best_hits = h;
      }
    }
    if (best == engines_.size()) {  // every engine at the cap (a tiny total): the least loaded
      best = static_cast<std::size_t>(std::min_element(assigned_.begin(), assigned_.end()) -
                                      assigned_.begin());
      best_hits = engines_[best].prefix_hits(hashes, max_blocks);
    }
    r_.oracle_hit_tokens += best_hits * block_size_;
    engines_[best].admit(hashes, out_blocks);
    ++assigned_[best];
    total += 1;
    for (auto a : assigned_) most = std::max(most, a);
    r_.oracle_imbalance = static_cast<double>(most) * static_cast<double>(engines_.size()) /
                          static_cast<double>(total);
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
