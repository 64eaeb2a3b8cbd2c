#include "routing/prefix_index.h"

#include <algorithm>
#include <bit>

namespace kvroute::routing {

namespace {
constexpr std::size_t kShards = 64;
constexpr std::size_t kSweepEvery = 16;  // minimum inserted blocks between incremental sweeps
std::size_t shard_of(std::uint64_t h) { return (h >> 58) & (kShards - 1); }
}  // namespace

void ApproxPrefixIndex::Entry::push(Holder h) {
  if (first.backend == kEmpty) {
    first = h;
    return;
  }
  if (!more) more = std::make_unique<std::vector<Holder>>();
  more->push_back(h);
}

void ApproxPrefixIndex::Entry::erase(std::uint32_t i) {
  const std::uint32_t n = size();
  at(i) = at(n - 1);
  if (n > 1) {
    more->pop_back();
    if (more->empty()) more.reset();
  } else {
    first.backend = kEmpty;
  }
}

ApproxPrefixIndex::ApproxPrefixIndex(std::size_t num_backends, std::uint64_t default_capacity)
    : clock_(num_backends), capacity_(num_backends), shards_(new Shard[kShards]) {
  for (std::size_t b = 0; b < num_backends; ++b) {
    clock_[b].store(0);
    capacity_[b].store(std::min<std::uint64_t>(default_capacity, 1u << 30));
  }
}

void ApproxPrefixIndex::set_capacity(std::size_t b, std::uint64_t blocks) {
  capacity_.at(b).store(std::min<std::uint64_t>(std::max<std::uint64_t>(blocks, 1), 1u << 30));
}

bool ApproxPrefixIndex::alive(const Holder& h) const {
  const auto now = static_cast<std::uint32_t>(clock_[h.backend].load(std::memory_order_relaxed));
  return static_cast<std::uint32_t>(now - h.stamp_lo) <
         capacity_[h.backend].load(std::memory_order_relaxed);
}

void ApproxPrefixIndex::insert(std::size_t b, std::span<const std::uint64_t> blocks,
                               std::size_t held) {
  if (blocks.empty() || b >= clock_.size()) return;
  held = std::min(held, blocks.size());
  // vLLM frees a request's blocks tail first, so its LRU evicts the tail before the head: block 0
  // gets the newest stamp, which keeps "holds block i => holds blocks < i" true as entries expire.
  // The held prefix is touched (the newest stamp), the rest allocated one clock tick each.
  const std::uint64_t first = clock_[b].fetch_add(blocks.size() - held, std::memory_order_relaxed);
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    const Holder h{static_cast<std::uint16_t>(b),
                   static_cast<std::uint32_t>(first + blocks.size() - std::max(i, held))};
    Shard& s = shards_[shard_of(blocks[i])];
    MutexLock lock(s.mu);
    Entry& e = s.map[blocks[i]];
    bool found = false;
    for (std::uint32_t k = 0; k < e.size();) {
      Holder& x = e.at(k);
      if (x.backend == h.backend) {
        x.stamp_lo = h.stamp_lo;
        found = true;
        ++k;
      } else if (!alive(x)) {
        e.erase(k);
        --s.holders;
      } else {
        ++k;
      }
    }
    if (!found) {
      e.push(h);
      ++s.holders;
    }
  }
  // Sweep one shard per (total capacity / shards) inserted blocks: a full pass per capacity's
  // worth of inserts keeps the table within about twice the live set, at O(1) amortized cost.
  std::uint64_t total_cap = 0;
  for (const auto& c : capacity_) total_cap += c.load(std::memory_order_relaxed);
  const std::uint64_t every = std::max<std::uint64_t>(kSweepEvery, total_cap / kShards);
  if (since_sweep_.fetch_add(blocks.size(), std::memory_order_relaxed) + blocks.size() >= every) {
    since_sweep_.store(0, std::memory_order_relaxed);
    sweep_some();
  }
}

void ApproxPrefixIndex::advance(std::size_t b, std::uint64_t n) {
  if (b < clock_.size()) clock_[b].fetch_add(n, std::memory_order_relaxed);
}

void ApproxPrefixIndex::clear_backend(std::size_t b) {
  if (b < clock_.size()) clock_[b].fetch_add(capacity_[b].load() + 1, std::memory_order_relaxed);
}

void ApproxPrefixIndex::sweep_some() {
  // One shard per sweep, round robin: dead entries never accumulate past a bounded backlog.
  Shard& s = shards_[sweep_cursor_.fetch_add(1, std::memory_order_relaxed) % kShards];
  MutexLock lock(s.mu);
  std::size_t removed = 0;
  boost::unordered::erase_if(s.map, [&](auto& kv) {
    Entry& e = kv.second;
    for (std::uint32_t k = 0; k < e.size();) {
      if (!alive(e.at(k))) {
        e.erase(k);
        ++removed;
      } else {
        ++k;
      }
    }
    return e.size() == 0;
  });
  s.holders -= removed;
}

void ApproxPrefixIndex::holders_of(std::uint64_t block, std::vector<std::uint64_t>& mask) const {
  std::fill(mask.begin(), mask.end(), 0);
  const Shard& s = shards_[shard_of(block)];
  MutexLock lock(s.mu);
  auto it = s.map.find(block);
  if (it == s.map.end()) return;
  const Entry& e = it->second;
  for (std::uint32_t k = 0; k < e.size(); ++k) {
    const Holder& h = e.at(k);
    if (alive(h)) mask[h.backend / 64] |= std::uint64_t{1} << (h.backend % 64);
  }
}

std::uint32_t ApproxPrefixIndex::held(std::size_t b, std::span<const std::uint64_t> blocks) const {
  std::vector<std::uint32_t> m;
  match(blocks, m);
  return b < m.size() ? m[b] : 0;
}

void ApproxPrefixIndex::match(std::span<const std::uint64_t> blocks,
                              std::vector<std::uint32_t>& out) const {
  const std::size_t nb = clock_.size();
  out.assign(nb, 0);
  if (blocks.empty() || nb == 0) return;
  const std::size_t words = (nb + 63) / 64;
  std::vector<std::uint64_t> pending(words, ~std::uint64_t{0});  // backends whose depth is unknown
  if (nb % 64) pending.back() = (std::uint64_t{1} << (nb % 64)) - 1;
  std::vector<std::uint64_t> mask(words), got(words);
  // Repeatedly find the deepest block held by any pending backend (binary search over depth,
  // valid because holding block i implies holding its prefix); those backends match that deep.
  std::size_t hi = blocks.size();
  for (;;) {
    bool any_pending = false;
    for (auto w : pending) any_pending |= w != 0;
    if (!any_pending || hi == 0) break;
    // Largest d in [1, hi] such that block d-1 has a pending holder.
    std::size_t lo = 0, top = hi;
    bool found = false;
    while (lo < top) {
      std::size_t mid = lo + (top - lo + 1) / 2;  // candidate depth
      holders_of(blocks[mid - 1], mask);
      bool hit = false;
      for (std::size_t w = 0; w < words; ++w) {
        mask[w] &= pending[w];
        hit |= mask[w] != 0;
      }
      if (hit) {
        lo = mid;
        got = mask;
        found = true;
      } else {
        top = mid - 1;
      }
    }
    if (!found || lo == 0) break;
    for (std::size_t w = 0; w < words; ++w) {
      std::uint64_t bits = got[w];
      pending[w] &= ~bits;
      while (bits) {
        int i = std::countr_zero(bits);
        out[w * 64 + static_cast<std::size_t>(i)] = static_cast<std::uint32_t>(lo);
        bits &= bits - 1;
      }
    }
    hi = lo - 1;
  }
}

std::size_t ApproxPrefixIndex::entries() const {
  std::size_t n = 0;
  for (std::size_t i = 0; i < kShards; ++i) {
    const Shard& s = shards_[i];
    MutexLock lock(s.mu);
    n += s.holders;
  }
  return n;
}

std::size_t ApproxPrefixIndex::memory_bytes() const {
  std::size_t bytes = 0;
  for (std::size_t i = 0; i < kShards; ++i) {
    const Shard& s = shards_[i];
    MutexLock lock(s.mu);
    const auto& m = s.map;
    bytes += m.bucket_count() * (sizeof(std::uint64_t) + sizeof(Entry)) + m.bucket_count() / 8;
    // Overflow vectors: their holders plus the vector header and allocator overhead.
    if (s.holders > m.size()) bytes += (s.holders - m.size()) * (sizeof(Holder) + 16);
  }
  return bytes;
}

}  // namespace kvroute::routing
