#include "kv_index/block_index.h"

#include <algorithm>
#include <bit>
#include <cassert>
#include <thread>

#include "common/hash.h"

namespace kvroute::kv_index {

namespace {

constexpr std::size_t kShards = 256;  // power of two

bool ieq(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'a' && x <= 'z') x = static_cast<char>(x - 32);
    if (y >= 'a' && y <= 'z') y = static_cast<char>(y - 32);
    if (x != y) return false;
  }
  return true;
}

template <class Map>
std::size_t flat_map_bytes(const Map& m) {
  return m.bucket_count() * (sizeof(typename Map::value_type) + 1);
}

bool spec_alive(std::uint32_t until, std::uint32_t now) {
  return until != 0 && static_cast<std::int32_t>(until - now) > 0;
}

std::uint16_t sat_add(std::uint16_t a) {
  return a == 0xffff ? a : static_cast<std::uint16_t>(a + 1);
}

}  // namespace

Tier tier_of(const std::optional<std::string>& medium) {
  if (!medium || ieq(*medium, "GPU")) return Tier::kGpu;
  if (ieq(*medium, "CPU")) return Tier::kCpu;
  return Tier::kOther;
}

void KvBlockIndex::RwSpin::lock() {
  for (int spins = 0;; ++spins) {
    std::uint32_t expected = 0;
    if (v_.compare_exchange_weak(expected, kWriter, std::memory_order_acquire,
                                 std::memory_order_relaxed))
      return;
    if (spins > 64) std::this_thread::yield();
  }
}

void KvBlockIndex::RwSpin::lock_shared() {
  for (int spins = 0;; ++spins) {
    std::uint32_t v = v_.load(std::memory_order_relaxed);
    if (!(v & kWriter) &&
        v_.compare_exchange_weak(v, v + 1, std::memory_order_acquire, std::memory_order_relaxed)) {
      return;
    }
    if (spins > 64) std::this_thread::yield();
  }
}

struct KvBlockIndex::Tally {
  std::uint64_t events = 0, stored = 0, removed = 0, tier_updates = 0, unknown_removals = 0,
                unknown_tier_updates = 0, unknown_parents = 0, rejected = 0, conflicting = 0,
                evicted = 0;
  std::uint32_t now = 0;
};

struct KvBlockIndex::Counters {
  std::atomic<std::uint64_t> events{0}, blocks_stored{0}, blocks_removed{0}, tier_updates{0},
      unknown_removals{0}, unknown_tier_updates{0}, unknown_parents{0}, rejected_events{0},
      conflicting_stores{0}, clears{0}, evicted{0}, speculative_added{0};
};

namespace {
// Holder helpers over the inline-first Entry layout.
template <class E, class H>
H* find_holder(E& e, std::uint16_t engine) {
  if (e.first.engine == engine) return &e.first;
  if (e.more) {
    for (auto& h : *e.more) {
      if (h.engine == engine) return &h;
    }
  }
  return nullptr;
}
}  // namespace

KvBlockIndex::KvBlockIndex(IndexOptions options)
    : opts_(std::move(options)),
      shard_mask_(kShards - 1),
      shards_(new Shard[kShards]),
      epoch_(std::chrono::steady_clock::now()),
      counters_(std::make_unique<Counters>()) {
  opts_.num_engines = std::clamp<std::size_t>(opts_.num_engines, 1, kMaxEngines);
  if (opts_.block_size == 0) opts_.block_size = 16;
  per_engine_cap_ = std::max<std::size_t>(1, opts_.max_entries / opts_.num_engines);
  engines_.reserve(opts_.num_engines);
  for (std::size_t i = 0; i < opts_.num_engines; ++i)
    engines_.push_back(std::make_unique<EngineState>());
}

KvBlockIndex::~KvBlockIndex() = default;

std::uint32_t KvBlockIndex::now_ms() const {
  const auto d = std::chrono::steady_clock::now() - epoch_;
  const auto ms =
      static_cast<std::uint32_t>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
  return ms == 0 ? 1 : ms;
}

KvBlockIndex::Shard& KvBlockIndex::shard_of(std::uint64_t h) const {
  // Top bits: XXH3 output is uniform; the flat map uses the low bits after its own mixing.
  return shards_[(h >> 56) & shard_mask_];
}

void KvBlockIndex::set_engine_model(std::size_t engine, std::string_view model) {
  if (engine >= engines_.size()) return;
  EngineState& es = *engines_[engine];
  MutexLock lock(es.mu);
  es.seed = hash64(model);
  es.has_seed = true;
}

// --- global table ------------------------------------------------------------------------------

namespace {
// The holder of `engine` in entry e, added (no references, no speculation) when it has none.
// `added` tells which.
template <class E, class H>
H& find_or_add_holder(E& e, std::uint16_t engine, std::uint16_t none, bool& added) {
  added = false;
  if (H* h = find_holder<E, H>(e, engine)) return *h;
  added = true;
  if (e.first.engine == none) {
    e.first = H{engine, {}, 0};
    return e.first;
  }
  if (!e.more) e.more = std::make_unique<std::vector<H>>();
  e.more->push_back(H{engine, {}, 0});
  return e.more->back();
}
}  // namespace

void KvBlockIndex::add_ref(std::uint64_t our, std::uint16_t engine, Tier t) {
  Shard& s = shard_of(our);
  WriterLock<RwSpin> lock(s.mu);
  bool added = false;
  Holder& h = find_or_add_holder<Entry, Holder>(s.map[our], engine, kNoEngine, added);
  auto& r = h.refs[static_cast<std::size_t>(t)];
  r = sat_add(r);
  h.spec_until = 0;  // a real entry replaces the speculative one
}

namespace {
// Removes holder `h` (pointer into e) from entry e; returns true when e became empty.
template <class E, class H>
bool erase_holder(E& e, H* h, std::uint16_t none) {
  if (h == &e.first) {
    if (e.more && !e.more->empty()) {
      e.first = e.more->back();
      e.more->pop_back();
      if (e.more->empty()) e.more.reset();
      return false;
    }
    e.first.engine = none;
    return true;
  }
  *h = e.more->back();
  e.more->pop_back();
  if (e.more->empty()) e.more.reset();
  return false;
}
}  // namespace

void KvBlockIndex::sub_ref(std::uint64_t our, std::uint16_t engine, std::size_t tier,
                           std::uint32_t n, std::uint32_t now) {
  Shard& s = shard_of(our);
  WriterLock<RwSpin> lock(s.mu);
  auto it = s.map.find(our);
  if (it == s.map.end()) return;
  Holder* h = find_holder<Entry, Holder>(it->second, engine);
  if (!h) return;
  auto& r = h->refs[tier];
  r = static_cast<std::uint16_t>(r > n ? r - n : 0);
  if (h->refs[0] == 0 && h->refs[1] == 0 && h->refs[2] == 0 && !spec_alive(h->spec_until, now)) {
    if (erase_holder(it->second, h, kNoEngine)) s.map.erase(it);
  }
}

void KvBlockIndex::drop_holder(std::uint64_t our, std::uint16_t engine) {
  Shard& s = shard_of(our);
  WriterLock<RwSpin> lock(s.mu);
  auto it = s.map.find(our);
  if (it == s.map.end()) return;
  Holder* h = find_holder<Entry, Holder>(it->second, engine);
  if (!h) return;
  if (erase_holder(it->second, h, kNoEngine)) s.map.erase(it);
}

void KvBlockIndex::set_spec(std::uint64_t our, std::uint16_t engine, std::uint32_t until) {
  Shard& s = shard_of(our);
  WriterLock<RwSpin> lock(s.mu);
  bool added = false;
  Holder& h = find_or_add_holder<Entry, Holder>(s.map[our], engine, kNoEngine, added);
  if (added) {
    h.spec_until = until;
    return;
  }
  if (h.refs[0] || h.refs[1] || h.refs[2]) return;  // really held: nothing to speculate
  if (h.spec_until == 0 || static_cast<std::int32_t>(until - h.spec_until) > 0)
    h.spec_until = until;
}

void KvBlockIndex::expire_spec(std::uint64_t our, std::uint16_t engine, std::uint32_t now,
                               bool force) {
  Shard& s = shard_of(our);
  WriterLock<RwSpin> lock(s.mu);
  auto it = s.map.find(our);
  if (it == s.map.end()) return;
  Holder* h = find_holder<Entry, Holder>(it->second, engine);
  if (!h || (!force && spec_alive(h->spec_until, now))) return;  // refreshed by a later mark
  h->spec_until = 0;
  if (h->refs[0] == 0 && h->refs[1] == 0 && h->refs[2] == 0) {
    if (erase_holder(it->second, h, kNoEngine)) s.map.erase(it);
  }
}

// --- writer side -------------------------------------------------------------------------------

void KvBlockIndex::apply(std::size_t engine, const kv_events::EventBatch& batch) {
  if (engine >= engines_.size()) return;
  EngineState& es = *engines_[engine];
  const auto e = static_cast<std::uint16_t>(engine);
  Tally t;
  t.now = now_ms();
  {
    MutexLock lock(es.mu);
    for (const auto& ev : batch.events) {
      ++t.events;
      if (const auto* s = std::get_if<kv_events::BlockStored>(&ev)) {
        store_locked(es, e, *s, t);
      } else if (const auto* r = std::get_if<kv_events::BlockRemoved>(&ev)) {
        remove_locked(es, e, *r, t);
      } else {
        clear_locked(es, e);
      }
    }
    if (es.has_spec.load(std::memory_order_relaxed)) sweep_spec(es, e, t.now);
  }
  Counters& c = *counters_;
  auto add = [](std::atomic<std::uint64_t>& a, std::uint64_t v) {
    if (v) a.fetch_add(v, std::memory_order_relaxed);
  };
  add(c.events, t.events);
  add(c.blocks_stored, t.stored);
  add(c.blocks_removed, t.removed);
  add(c.tier_updates, t.tier_updates);
  add(c.unknown_removals, t.unknown_removals);
  add(c.unknown_tier_updates, t.unknown_tier_updates);
  add(c.unknown_parents, t.unknown_parents);
  add(c.rejected_events, t.rejected);
  add(c.conflicting_stores, t.conflicting);
  add(c.evicted, t.evicted);
}

void KvBlockIndex::store_locked(EngineState& es, std::uint16_t e, const kv_events::BlockStored& s,
                                Tally& tally) {
  const Tier tier = tier_of(s.medium);
  const auto t = static_cast<std::size_t>(tier);
  if (s.token_ids.empty()) {
    // Tokenless BlockStored (older offloading connectors): a tier update of known engine hashes.
    for (std::uint64_t eh : s.block_hashes) {
      auto it = es.records.find(eh);
      if (it == es.records.end()) {
        ++tally.unknown_tier_updates;
        continue;
      }
      it->second.refs[t] = sat_add(it->second.refs[t]);
      if (!es.multi.empty()) {
        if (auto m = es.multi.find(eh); m != es.multi.end()) {
          for (std::uint64_t our : m->second) add_ref(our, e, tier);
        }
      }
      add_ref(it->second.our, e, tier);
      ++tally.tier_updates;
    }
    return;
  }
  const std::size_t n = s.block_hashes.size();
  const std::uint32_t ebs = s.block_size;
  const std::uint32_t bs = opts_.block_size;
  if (n == 0 || ebs == 0 || ebs % bs != 0 || s.token_ids.size() != n * ebs) {
    ++tally.rejected;
    return;
  }
  std::uint64_t parent;
  if (!s.parent_block_hash) {
    if (s.lora_name && !s.lora_name->empty()) {
      parent = hash64(*s.lora_name);
    } else if (es.has_seed) {
      parent = es.seed;
    } else {
      ++tally.rejected;
      return;
    }
  } else {
    auto it = es.records.find(*s.parent_block_hash);
    if (it == es.records.end()) {
      ++tally.unknown_parents;
      return;
    }
    parent = it->second.our;
  }
  const std::size_t per = ebs / bs;
  const std::span<const std::uint32_t> tokens(s.token_ids);
  for (std::size_t j = 0; j < n; ++j) {
    const std::uint64_t eh = s.block_hashes[j];
    auto [it, inserted] = es.records.try_emplace(eh);
    Record& rec = it->second;
    if (per > 1) {
      // Chain the leading sub-blocks; remember them for removal.
      std::vector<std::uint64_t> lead;
      lead.reserve(per - 1);
      for (std::size_t k = 0; k + 1 < per; ++k) {
        parent = hash64(tokens.subspan((j * per + k) * bs, bs), parent);
        lead.push_back(parent);
      }
      if (inserted) {
        es.multi[eh] = std::move(lead);
      }
    }
    parent = hash64(tokens.subspan((j * per + per - 1) * bs, bs), parent);
    if (inserted) {
      rec.our = parent;
      es.entries.fetch_add(1, std::memory_order_relaxed);
      entries_.fetch_add(1, std::memory_order_relaxed);
    } else if (rec.our != parent) {
      // Same engine hash, other content (an engine-side collision or an extra_keys difference):
      // keep the first mapping and continue the chain from it as the engine does.
      ++tally.conflicting;
      parent = rec.our;
    }
    rec.refs[t] = sat_add(rec.refs[t]);
    rec.stamp = ++es.next_stamp;
    es.order.emplace_back(eh, rec.stamp);
    // Drop superseded entries at the front (removed or re-stored records), amortized O(1).
    for (int k = 0; k < 2 && !es.order.empty(); ++k) {
      auto f = es.records.find(es.order.front().first);
      if (f != es.records.end() && f->second.stamp == es.order.front().second) break;
      es.order.pop_front();
    }
    if (per > 1) {
      if (auto m = es.multi.find(eh); m != es.multi.end()) {
        for (std::uint64_t our : m->second) add_ref(our, e, tier);
      }
    }
    add_ref(rec.our, e, tier);
    ++tally.stored;
  }
  // Memory bound: evict this engine's least recently stored records.
  while (es.records.size() > per_engine_cap_ && !es.order.empty()) {
    auto [eh, stamp] = es.order.front();
    es.order.pop_front();
    auto it = es.records.find(eh);
    if (it == es.records.end() || it->second.stamp != stamp) continue;  // superseded entry
    drop_record_locked(es, e, eh, tally.now);
    ++tally.evicted;
  }
  // The order queue keeps superseded entries; rebuild it when they dominate.
  if (es.order.size() > 2 * es.records.size() + 1024) {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> live;
    live.reserve(es.records.size());
    for (const auto& [eh, rec] : es.records) live.emplace_back(rec.stamp, eh);
    std::sort(live.begin(), live.end());
    es.order.clear();
    for (const auto& [stamp, eh] : live) es.order.emplace_back(eh, stamp);
  }
}

void KvBlockIndex::remove_locked(EngineState& es, std::uint16_t e, const kv_events::BlockRemoved& r,
                                 Tally& tally) {
  const auto t = static_cast<std::size_t>(tier_of(r.medium));
  for (std::uint64_t eh : r.block_hashes) {
    auto it = es.records.find(eh);
    if (it == es.records.end() || it->second.refs[t] == 0) {
      ++tally.unknown_removals;
      continue;
    }
    Record& rec = it->second;
    --rec.refs[t];
    if (!es.multi.empty()) {
      if (auto m = es.multi.find(eh); m != es.multi.end()) {
        for (std::uint64_t our : m->second) sub_ref(our, e, t, 1, tally.now);
      }
    }
    sub_ref(rec.our, e, t, 1, tally.now);
    ++tally.removed;
    if (rec.refs[0] == 0 && rec.refs[1] == 0 && rec.refs[2] == 0) {
      es.records.erase(it);
      if (!es.multi.empty()) es.multi.erase(eh);
      es.entries.fetch_sub(1, std::memory_order_relaxed);
      entries_.fetch_sub(1, std::memory_order_relaxed);
    }
  }
}

void KvBlockIndex::drop_record_locked(EngineState& es, std::uint16_t e, std::uint64_t eh,
                                      std::uint32_t now) {
  auto it = es.records.find(eh);
  if (it == es.records.end()) return;
  const Record rec = it->second;
  es.records.erase(it);
  auto drop = [&](std::uint64_t our) {
    for (std::size_t t = 0; t < kNumTiers; ++t) {
      if (rec.refs[t]) sub_ref(our, e, t, rec.refs[t], now);
    }
  };
  if (auto m = es.multi.find(eh); m != es.multi.end()) {
    for (std::uint64_t our : m->second) drop(our);
    es.multi.erase(m);
  }
  drop(rec.our);
  es.entries.fetch_sub(1, std::memory_order_relaxed);
  entries_.fetch_sub(1, std::memory_order_relaxed);
}

void KvBlockIndex::clear_locked(EngineState& es, std::uint16_t e) {
  counters_->clears.fetch_add(1, std::memory_order_relaxed);
  for (const auto& [eh, rec] : es.records) {
    drop_holder(rec.our, e);
  }
  for (const auto& [eh, lead] : es.multi) {
    for (std::uint64_t our : lead) drop_holder(our, e);
  }
  {
    MutexLock lock(es.spec_mu);
    for (const auto& [until, our] : es.spec) drop_holder(our, e);
    es.spec.clear();
  }
  entries_.fetch_sub(es.records.size(), std::memory_order_relaxed);
  es.entries.store(0, std::memory_order_relaxed);
  // Release the memory: a restarted engine starts small.
  es.records = {};
  es.multi = {};
  es.order = {};
}

void KvBlockIndex::clear_engine(std::size_t engine) {
  if (engine >= engines_.size()) return;
  EngineState& es = *engines_[engine];
  MutexLock lock(es.mu);
  clear_locked(es, static_cast<std::uint16_t>(engine));
}

// --- speculative -------------------------------------------------------------------------------

void KvBlockIndex::add_speculative(std::size_t engine, std::span<const std::uint64_t> blocks,
                                   std::chrono::milliseconds ttl) {
  if (engine >= engines_.size() || blocks.empty() || ttl.count() <= 0) return;
  ttl = std::min(ttl, opts_.max_speculative_ttl);
  EngineState& es = *engines_[engine];
  const auto e = static_cast<std::uint16_t>(engine);
  const std::uint32_t now = now_ms();
  std::uint32_t until = now + static_cast<std::uint32_t>(ttl.count());
  if (until == 0) until = 1;
  sweep_spec(es, e, now);
  MutexLock lock(es.spec_mu);
  // Bound: a speculative mark costs like a record; keep at most one engine quota of them.
  while (es.spec.size() + blocks.size() > per_engine_cap_ && !es.spec.empty()) {
    auto [u, our] = es.spec.front();
    es.spec.pop_front();
    (void)u;
    expire_spec(our, e, now, /*force=*/true);
  }
  for (std::uint64_t our : blocks.first(std::min(blocks.size(), per_engine_cap_))) {
    set_spec(our, e, until);
    es.spec.emplace_back(until, our);
  }
  es.has_spec.store(true, std::memory_order_relaxed);
  counters_->speculative_added.fetch_add(blocks.size(), std::memory_order_relaxed);
}

void KvBlockIndex::sweep_spec(EngineState& es, std::uint16_t e, std::uint32_t now) {
  MutexLock lock(es.spec_mu);
  while (!es.spec.empty() && !spec_alive(es.spec.front().first, now)) {
    const std::uint64_t our = es.spec.front().second;
    es.spec.pop_front();
    expire_spec(our, e, now, /*force=*/false);
  }
  if (es.spec.empty()) es.has_spec.store(false, std::memory_order_relaxed);
}

void KvBlockIndex::sweep_speculative() {
  const std::uint32_t now = now_ms();
  for (std::size_t i = 0; i < engines_.size(); ++i)
    sweep_spec(*engines_[i], static_cast<std::uint16_t>(i), now);
}

// --- readers -----------------------------------------------------------------------------------

void KvBlockIndex::match(std::span<const std::uint64_t> blocks, std::vector<std::uint32_t>& out,
                         std::vector<double>* weighted) const {
  const std::size_t n = engines_.size();
  out.assign(n, 0);
  if (weighted) weighted->assign(n, 0.0);
  if (blocks.empty()) return;
  const std::uint32_t now = now_ms();
  const std::size_t words = (n + 63) / 64;
  // alive: engines whose run is still unbroken; held: engines holding the current block.
  thread_local std::vector<std::uint64_t> alive, held;
  alive.assign(words, ~std::uint64_t{0});
  if (n % 64) alive[words - 1] = (std::uint64_t{1} << (n % 64)) - 1;
  held.assign(words, 0);
  const auto& w = opts_.tier_weights;
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    bool any = false;
    {
      Shard& s = shard_of(blocks[i]);
      ReaderLock<RwSpin> lock(s.mu);
      auto it = s.map.find(blocks[i]);
      if (it != s.map.end()) {
        auto visit = [&](const Holder& h) {
          if (h.engine == kNoEngine) return;
          const std::size_t e = h.engine;
          const std::uint64_t bit = std::uint64_t{1} << (e % 64);
          if (!(alive[e / 64] & bit)) return;
          double best;
          if (h.refs[0])
            best = w[0];
          else if (spec_alive(h.spec_until, now))
            best = w[0];
          else if (h.refs[1])
            best = w[1];
          else if (h.refs[2])
            best = w[2];
          else
            return;
          held[e / 64] |= bit;
          out[e] = static_cast<std::uint32_t>(i + 1);
          if (weighted) (*weighted)[e] += best;
          any = true;
        };
        const Entry& en = it->second;
        visit(en.first);
        if (en.more) {
          for (const auto& h : *en.more) visit(h);
        }
      }
    }
    if (!any) break;
    for (std::size_t k = 0; k < words; ++k) {
      alive[k] = held[k];
      held[k] = 0;
    }
  }
}

void KvBlockIndex::mark_stale(std::size_t engine, std::chrono::steady_clock::time_point until) {
  if (engine >= engines_.size()) return;
  std::int64_t ticks = until.time_since_epoch().count();
  engines_[engine]->stale_until.store(ticks == 0 ? 1 : ticks, std::memory_order_release);
}

void KvBlockIndex::clear_stale(std::size_t engine) {
  if (engine >= engines_.size()) return;
  engines_[engine]->stale_until.store(0, std::memory_order_release);
}

bool KvBlockIndex::is_stale(std::size_t engine) const {
  if (engine >= engines_.size()) return false;
  const std::int64_t until = engines_[engine]->stale_until.load(std::memory_order_acquire);
  return until != 0 && std::chrono::steady_clock::now().time_since_epoch().count() < until;
}

std::vector<KvBlockIndex::EngineRecord> KvBlockIndex::engine_records(std::size_t engine) const {
  std::vector<EngineRecord> out;
  if (engine >= engines_.size()) return out;
  const EngineState& es = *engines_[engine];
  MutexLock lock(es.mu);
  out.reserve(es.records.size());
  for (const auto& [eh, rec] : es.records) out.push_back({eh, rec.our, rec.refs});
  return out;
}

std::size_t KvBlockIndex::engine_entries(std::size_t engine) const {
  return engine < engines_.size() ? engines_[engine]->entries.load(std::memory_order_relaxed) : 0;
}

std::size_t KvBlockIndex::entries() const { return entries_.load(std::memory_order_relaxed); }

std::size_t KvBlockIndex::memory_bytes() const {
  std::size_t bytes = 0;
  for (std::size_t i = 0; i < kShards; ++i) {
    const Shard& s = shards_[i];
    ReaderLock<RwSpin> lock(s.mu);
    const auto& m = s.map;
    bytes += flat_map_bytes(m);
    for (const auto& [h, e] : m) {
      if (e.more) bytes += sizeof(std::vector<Holder>) + e.more->capacity() * sizeof(Holder) + 16;
    }
  }
  for (const auto& es : engines_) {
    MutexLock lock(es->mu);
    bytes += flat_map_bytes(es->records) + flat_map_bytes(es->multi);
    for (const auto& [eh, lead] : es->multi) bytes += lead.capacity() * sizeof(std::uint64_t) + 16;
    bytes += es->order.size() * sizeof(es->order.front());
    MutexLock slock(es->spec_mu);
    bytes += es->spec.size() * sizeof(std::pair<std::uint32_t, std::uint64_t>);
  }
  return bytes;
}

IndexStats KvBlockIndex::stats() const {
  const Counters& c = *counters_;
  auto ld = [](const std::atomic<std::uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  IndexStats s;
  s.events = ld(c.events);
  s.blocks_stored = ld(c.blocks_stored);
  s.blocks_removed = ld(c.blocks_removed);
  s.tier_updates = ld(c.tier_updates);
  s.unknown_removals = ld(c.unknown_removals);
  s.unknown_tier_updates = ld(c.unknown_tier_updates);
  s.unknown_parents = ld(c.unknown_parents);
  s.rejected_events = ld(c.rejected_events);
  s.conflicting_stores = ld(c.conflicting_stores);
  s.clears = ld(c.clears);
  s.evicted = ld(c.evicted);
  s.speculative_added = ld(c.speculative_added);
  return s;
}

}  // namespace kvroute::kv_index
