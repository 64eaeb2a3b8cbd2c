#include "routing/backend.h"

#include <algorithm>

#include "common/mutex.h"

namespace kvroute::routing {

std::int64_t steady_ms(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

std::int64_t steady_now_ms() { return steady_ms(std::chrono::steady_clock::now()); }

double learn_running_limit(double limit, double waiting, double running) {
  // Requests waiting: the engine runs all it can, whatever bounds it now (max_num_seqs, KV
  // blocks, the step's token budget). None waiting: it can run at least what it runs.
  if (waiting > 0) return running;
  return std::max(limit, running);
}

void InflightBlocks::add(std::span<const std::uint64_t> blocks) {
  MutexLock lock(mu_);
  std::int64_t fresh = 0;
  for (auto h : blocks) {
    if (++refs_[h] == 1) ++fresh;
  }
  unique_.fetch_add(fresh, std::memory_order_relaxed);
}

void InflightBlocks::remove(std::span<const std::uint64_t> blocks) {
  MutexLock lock(mu_);
  std::int64_t gone = 0;
  for (auto h : blocks) {
    auto it = refs_.find(h);
    if (it == refs_.end()) continue;
    if (--it->second == 0) {
      refs_.erase(it);
      ++gone;
    }
  }
  unique_.fetch_sub(gone, std::memory_order_relaxed);
}

std::size_t InflightBlocks::shared_prefix(std::span<const std::uint64_t> blocks) const {
  MutexLock lock(mu_);
  std::size_t lo = 0, hi = blocks.size();  // blocks [0, lo) pinned; [hi, n) not
  while (lo < hi) {
    const std::size_t mid = lo + (hi - lo) / 2;
    if (refs_.contains(blocks[mid])) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

bool Backend::serves(std::string_view model) const {
  const auto* m = models.get();
  if (!m || model.empty()) return true;  // unknown: do not exclude
  for (const auto& name : *m) {
    if (name == model) return true;
  }
  return false;
}

bool Backend::available(std::int64_t now_ms) const {
  return healthy.load(std::memory_order_relaxed) && !removed.load(std::memory_order_relaxed) &&
         ejected_until_ms.load(std::memory_order_relaxed) <= now_ms;
}

}  // namespace kvroute::routing
