#include "kv_index/precise_indexer.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <variant>

namespace kvroute::kv_index {

IndexerConfig indexer_config_from(const config::Config& cfg) {
  IndexerConfig out;
  out.num_backends = cfg.backends.size();
  out.index.block_size = cfg.block_size;
  for (std::size_t i = 0; i < cfg.backends.size(); ++i) {
    const auto& b = cfg.backends[i];
    if (b.kv_events_endpoint.empty()) continue;
    IndexedEngine e;
    e.backend = i;
    e.endpoint = b.kv_events_endpoint;
    e.replay_endpoint = b.kv_events_replay;
    if (!b.models.empty()) e.model = b.models.front();
    out.engines.push_back(std::move(e));
  }
  return out;
}

PreciseIndexer::PreciseIndexer(IndexerConfig config) : cfg_(std::move(config)) {}

PreciseIndexer::~PreciseIndexer() { stop(); }

Result<std::unique_ptr<PreciseIndexer>> PreciseIndexer::create(IndexerConfig config) {
  if (config.num_backends == 0 || config.num_backends > KvBlockIndex::kMaxEngines) {
    return fail(Error::invalid(fmt::format("kv index: {} backends (1..{})", config.num_backends,
                                           KvBlockIndex::kMaxEngines)));
  }
  if (config.index.block_size == 0) return fail(Error::invalid("kv index: block_size must be > 0"));
  config.index.num_engines = config.num_backends;
  std::unique_ptr<PreciseIndexer> self(new PreciseIndexer(std::move(config)));
  IndexerConfig& cfg = self->cfg_;
  self->index_ = std::make_unique<KvBlockIndex>(cfg.index);
  self->tracked_ = std::make_unique<std::atomic<std::uint8_t>[]>(cfg.num_backends);
  for (std::size_t i = 0; i < cfg.engines.size(); ++i) {
    auto& e = cfg.engines[i];
    if (e.backend >= cfg.num_backends) {
      return fail(Error::invalid(fmt::format("kv index: engine '{}' has backend index {} >= {}",
                                             e.endpoint, e.backend, cfg.num_backends)));
    }
    if (self->tracked_[e.backend].exchange(1)) {
      return fail(Error::invalid(fmt::format("kv index: backend {} listed twice", e.backend)));
    }
    if (e.engine_id.empty()) e.engine_id = fmt::format("backend-{}", e.backend);
    if (!e.model.empty()) self->index_->set_engine_model(e.backend, e.model);
    MutexLock lk(self->mu_);
    self->engines_.emplace_back(e.engine_id, e.backend);
  }
  PreciseIndexer* p = self.get();
  kv_events::SubscriberCallbacks cb;
  cb.on_batch = [p](const std::string& id, std::uint64_t, const kv_events::EventBatch& b) {
    p->on_batch(id, b);
  };
  cb.on_reset = [p](const std::string& id) { p->on_reset(id); };
  cb.on_stale = [p](const std::string& id, kv_events::StaleReason r) {
    spdlog::warn("kv index: engine {} stale ({}): falling back to the approximate index", id,
                 to_string(r));
    p->on_stale(id);
  };
  KVROUTE_TRY(self->sub_, kv_events::ZmqEventSubscriber::create(cfg.subscriber, std::move(cb)));
  for (const auto& e : cfg.engines) {
    auto st = self->sub_->add_engine({e.engine_id, e.endpoint, e.replay_endpoint});
    if (!st) return fail(st.error());
  }
  return self;
}

std::size_t PreciseIndexer::backend_of(const std::string& id) const {
  // Few engines: a linear scan is cheaper than hashing for < ~32 engines and runs once per batch.
  MutexLock lk(mu_);
  for (const auto& [eid, backend] : engines_) {
    if (eid == id) return backend;
  }
  return cfg_.num_backends;
}

Status PreciseIndexer::add_engine(IndexedEngine e) {
  if (e.backend >= cfg_.num_backends) {
    return fail(Error::invalid(
        fmt::format("kv index: backend index {} >= {}", e.backend, cfg_.num_backends)));
  }
  if (tracked_[e.backend].exchange(1)) {
    return fail(Error::invalid(fmt::format("kv index: backend {} tracked already", e.backend)));
  }
  {
    MutexLock lk(mu_);
    if (e.engine_id.empty()) e.engine_id = fmt::format("backend-{}.{}", e.backend, ++generation_);
    engines_.emplace_back(e.engine_id, e.backend);
  }
  // A reused slot starts empty and fresh.
  index_->clear_engine(e.backend);
  index_->clear_stale(e.backend);
  if (!e.model.empty()) index_->set_engine_model(e.backend, e.model);
  auto st = sub_->add_engine({e.engine_id, e.endpoint, e.replay_endpoint});
  if (!st) {
    MutexLock lk(mu_);
    std::erase_if(engines_, [&](const auto& p) { return p.second == e.backend; });
    tracked_[e.backend].store(0);
    return st;
  }
  return {};
}

void PreciseIndexer::remove_engine(std::size_t backend) {
  if (backend >= cfg_.num_backends || !tracked_[backend].exchange(0)) return;
  std::string id;
  {
    MutexLock lk(mu_);
    for (const auto& [eid, b] : engines_) {
      if (b == backend) id = eid;
    }
    std::erase_if(engines_, [&](const auto& p) { return p.second == backend; });
  }
  if (!id.empty()) (void)sub_->remove_engine(id);
  index_->clear_engine(backend);
}

void PreciseIndexer::on_batch(const std::string& id, const kv_events::EventBatch& batch) {
  const std::size_t b = backend_of(id);
  if (b >= cfg_.num_backends) return;
  if (cfg_.before_apply_for_test) cfg_.before_apply_for_test();
  index_->apply(b, batch);
  for (const auto& ev : batch.events) {
    if (std::holds_alternative<kv_events::AllBlocksCleared>(ev)) {
      index_->clear_stale(b);  // the engine's cache is empty now: fully known again
      break;
    }
  }
  if (batch.ts > 0) {
    const double now =
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    last_lag_s_.store(now - batch.ts, std::memory_order_relaxed);
  }
  // Counters are published after the effect they count (release, read with acquire in stats()),
  // so whoever sees a count also sees the index state it stands for.
  batches_.fetch_add(1, std::memory_order_release);
}

void PreciseIndexer::on_reset(const std::string& id) {
  const std::size_t b = backend_of(id);
  if (b >= cfg_.num_backends) return;
  index_->clear_engine(b);
  index_->clear_stale(b);
  resets_.fetch_add(1, std::memory_order_release);
}

void PreciseIndexer::forget_backend(std::size_t backend) {
  if (backend >= cfg_.num_backends || !is_tracked(backend)) return;
  index_->clear_engine(backend);
  down_clears_.fetch_add(1, std::memory_order_release);
}

void PreciseIndexer::on_stale(const std::string& id) {
  const std::size_t b = backend_of(id);
  if (b >= cfg_.num_backends) return;
  // Stale first, so no reader trusts the engine's entries while they are being cleared.
  index_->mark_stale(b, std::chrono::steady_clock::now() + cfg_.stale_ttl);
  index_->clear_engine(b);
  stale_reports_.fetch_add(1, std::memory_order_release);
}

void PreciseIndexer::set_model(std::size_t backend, std::string_view model) {
  index_->set_engine_model(backend, model);
}

bool PreciseIndexer::is_tracked(std::size_t backend) const {
  return backend < cfg_.num_backends && tracked_[backend].load(std::memory_order_relaxed) != 0;
}

bool PreciseIndexer::has_precise(std::size_t backend) const {
  return is_tracked(backend) && !index_->is_stale(backend);
}

void PreciseIndexer::on_routed(std::size_t backend, std::span<const std::uint64_t> blocks) {
  if (!has_precise(backend)) return;
  index_->add_speculative(backend, blocks, cfg_.speculative_ttl);
}

IndexerStats PreciseIndexer::stats(bool memory) const {
  IndexerStats s;
  // The counters first: whatever they count is then visible in the index's figures below.
  s.batches = batches_.load(std::memory_order_acquire);
  s.resets = resets_.load(std::memory_order_acquire);
  s.backend_down_clears = down_clears_.load(std::memory_order_acquire);
  s.stale_reports = stale_reports_.load(std::memory_order_acquire);
  s.index = index_->stats();
  {
    MutexLock lk(mu_);
    for (const auto& e : engines_) s.stale_engines += index_->is_stale(e.second) ? 1 : 0;
  }
  s.entries = index_->entries();
  s.last_lag_s = last_lag_s_.load(std::memory_order_relaxed);
  if (memory) s.memory_bytes = index_->memory_bytes();
  if (sub_) s.subscriber = sub_->stats();
  return s;
}

void PreciseIndexer::stop() {
  if (sub_) sub_->stop();
}

}  // namespace kvroute::kv_index
