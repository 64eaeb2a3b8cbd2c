// File: router/replica_link.cc (router/internal/replica_link.h)
#include "router/internal/replica_link.h"

#include <unordered_map>

#include "common/mutex.h"
#include "replication/replication.h"

namespace kvroute::router {

using routing::Backend;

struct ReplicaLink::Impl {
  routing::Policy* policy = nullptr;
  Members members;
  std::unique_ptr<replication::Replicator> replicator;

  // The replicator thread's own state: engines by URL hash for the pool it last saw, and the
  // peers' summed load by URL hash (kept for engines not in the pool yet).
  std::shared_ptr<const std::vector<Backend*>> seen;
  std::unordered_map<std::uint64_t, Backend*> by_hash;
  struct Totals {
    std::int64_t inflight = 0, tokens = 0;
  };
  std::unordered_map<std::uint64_t, Totals> peer_load;

  // Metrics: counters advanced by the difference from the last stats read.
  metrics::CounterFamily* messages = nullptr;  // {direction, type}
  metrics::CounterFamily* dropped = nullptr;   // {reason}
  metrics::Counter* reordered = nullptr;
  metrics::Counter* forgotten = nullptr;
  metrics::Gauge* lost = nullptr;
  metrics::Gauge* peers = nullptr;
  metrics::CounterFamily* snapshot_records = nullptr;  // {direction}
  metrics::Counter* snapshots_served = nullptr;
  metrics::Gauge* warming = nullptr;
  Mutex metrics_mu;
  replication::ReplicatorStats last GUARDED_BY(metrics_mu);

  Backend* backend(std::uint64_t hash) {
    auto now = members();
    if (now != seen) {
      seen = std::move(now);
      by_hash.clear();
      for (auto* b : *seen) {
        if (b->removed.load(std::memory_order_relaxed)) continue;
        by_hash[b->url_hash] = b;
        // An engine that joined the pool gets what peers reported for it meanwhile.
        auto t = peer_load.find(b->url_hash);
        b->peer_inflight.store(t != peer_load.end() ? static_cast<int>(t->second.inflight) : 0);
        b->peer_inflight_tokens.store(t != peer_load.end() ? t->second.tokens : 0);
      }
    }
    auto it = by_hash.find(hash);
    return it != by_hash.end() ? it->second : nullptr;
  }

  void on_routed(const replication::Routed& r) {
    Backend* b = backend(r.backend);
    if (b == nullptr) return;
    routing::RouteRequest rr;
    rr.blocks = r.blocks;
    rr.tokens_per_block = r.tokens_per_block;
    rr.peer_token_blocks = r.token_blocks;
    rr.expected_output_tokens = r.output_blocks * r.tokens_per_block;
    policy->on_peer_routed(rr, *b);
  }

  void on_load(std::uint64_t hash, std::int32_t di, std::int64_t dt) {
    Totals& t = peer_load[hash];
    t.inflight += di;
    t.tokens += dt;
    if (Backend* b = backend(hash)) {
      b->peer_inflight.store(static_cast<int>(t.inflight));
      b->peer_inflight_tokens.store(t.tokens);
    }
    if (t.inflight == 0 && t.tokens == 0) peer_load.erase(hash);
  }

  void local_load(std::vector<replication::LoadEntry>& out) {
    for (auto* b : *members()) {
      if (b->removed.load(std::memory_order_relaxed)) continue;
      out.push_back({b->url_hash, b->inflight.load(std::memory_order_relaxed),
                     b->inflight_tokens.load(std::memory_order_relaxed)});
    }
  }
};

ReplicaLink::ReplicaLink() : impl_(std::make_unique<Impl>()) {}
ReplicaLink::~ReplicaLink() { stop(); }

Result<std::unique_ptr<ReplicaLink>> ReplicaLink::start(const config::ReplicasConfig& cfg,
                                                        routing::Policy& policy, Members members,
                                                        metrics::Registry& reg) {
  std::unique_ptr<ReplicaLink> link(new ReplicaLink());
  Impl& d = *link->impl_;
  d.policy = &policy;
  d.members = std::move(members);
  d.messages = &reg.counter("kvroute_replication_messages_total",
                            "Messages exchanged with peer replicas.", {"direction", "type"});
  d.dropped = &reg.counter(
      "kvroute_replication_messages_dropped_total",
      "Replication messages not sent (queue or peer buffer full) or not applied (duplicate, "
      "too_old, stale_load, malformed, other_version).",
      {"reason"});
  d.reordered = &reg.counter("kvroute_replication_messages_reordered_total",
                             "Peer messages that arrived after a later one (applied).")
                     .with({});
  d.forgotten = &reg.counter("kvroute_replication_peers_forgotten_total",
                             "Peers silent for replicas.peerTimeout (their load taken back).")
                     .with({});
  d.lost = &reg.gauge("kvroute_replication_messages_lost",
                      "Peer messages missing from the sequence (sent, never received).")
                .with({});
  d.peers =
      &reg.gauge("kvroute_replication_peers", "Peer replicas heard within peerTimeout.").with({});
  d.snapshot_records = &reg.counter("kvroute_replication_snapshot_records_total",
                                    "Decisions sent to or received from peers in warm-up "
                                    "snapshots.",
                                    {"direction"});
  d.snapshots_served = &reg.counter("kvroute_replication_snapshots_served_total",
                                    "Warm-up snapshots sent to joining peers.")
                            .with({});
  d.warming = &reg.gauge("kvroute_replication_warming",
                         "1 while this replica waits for a peer's snapshot (not ready).")
                   .with({});
  replication::ReplicatorOptions o;
  o.listen = cfg.listen;
  o.peers = cfg.peers;
  o.load_interval = cfg.load_interval;
  o.peer_timeout = cfg.peer_timeout;
  o.peers_dns = cfg.peers_dns;
  o.dns_interval = cfg.dns_interval;
  o.warmup_timeout = cfg.warmup_timeout;
  o.snapshot_blocks = cfg.snapshot_blocks;
  replication::ReplicatorCallbacks cb;
  cb.on_routed = [&d](const replication::Routed& r) { d.on_routed(r); };
  cb.on_load = [&d](std::uint64_t h, std::int32_t di, std::int64_t dt) { d.on_load(h, di, dt); };
  cb.local_load = [&d](std::vector<replication::LoadEntry>& out) { d.local_load(out); };
  d.replicator = std::make_unique<replication::Replicator>(std::move(o), std::move(cb));
  KVROUTE_TRY(d.replicator->start());
  return link;
}

void ReplicaLink::publish(const routing::RouteRequest& rr, const Backend& b) {
  if (rr.blocks.empty()) return;
  replication::Routed r;
  r.backend = b.url_hash;
  r.token_blocks = !rr.tokens.empty();
  r.tokens_per_block = rr.tokens_per_block;
  r.output_blocks = rr.tokens_per_block > 0 ? rr.expected_output_tokens / rr.tokens_per_block : 0;
  r.blocks.assign(rr.blocks.begin(),
                  rr.blocks.begin() + static_cast<std::ptrdiff_t>(
                                          std::min(rr.blocks.size(), replication::kMaxBlocks)));
  impl_->replicator->publish_routed(std::move(r));
}

bool ReplicaLink::warming() const { return impl_->replicator->warming(); }
std::size_t ReplicaLink::peers() const { return impl_->replicator->stats().peers_live; }

std::string ReplicaLink::endpoint() const { return impl_->replicator->endpoint(); }
void ReplicaLink::add_peer(const std::string& ep) { impl_->replicator->add_peer(ep); }

void ReplicaLink::update_metrics() {
  Impl& d = *impl_;
  const auto s = d.replicator->stats();
  MutexLock lock(d.metrics_mu);
  const auto inc = [](metrics::Counter& c, std::uint64_t now, std::uint64_t before) {
    if (now > before) c.inc(static_cast<double>(now - before));
  };
  inc(d.messages->with({"sent", "routed"}), s.sent_routed, d.last.sent_routed);
  inc(d.messages->with({"sent", "load"}), s.sent_load, d.last.sent_load);
  inc(d.messages->with({"received", "routed"}), s.received_routed, d.last.received_routed);
  inc(d.messages->with({"received", "load"}), s.received_load, d.last.received_load);
  inc(d.dropped->with({"send"}), s.send_dropped, d.last.send_dropped);
  inc(d.dropped->with({"duplicate"}), s.duplicates, d.last.duplicates);
  inc(d.dropped->with({"too_old"}), s.too_old, d.last.too_old);
  inc(d.dropped->with({"stale_load"}), s.stale_load, d.last.stale_load);
  inc(d.dropped->with({"malformed"}), s.malformed, d.last.malformed);
  inc(d.dropped->with({"other_version"}), s.other_version, d.last.other_version);
  inc(*d.reordered, s.reordered, d.last.reordered);
  inc(*d.forgotten, s.peers_forgotten, d.last.peers_forgotten);
  inc(d.snapshot_records->with({"sent"}), s.snapshot_records_sent, d.last.snapshot_records_sent);
  inc(d.snapshot_records->with({"received"}), s.snapshot_records_received,
      d.last.snapshot_records_received);
  inc(*d.snapshots_served, s.snapshots_served, d.last.snapshots_served);
  d.warming->set(s.warming ? 1 : 0);
  d.lost->set(static_cast<double>(s.lost));
  d.peers->set(static_cast<double>(s.peers_live));
  d.last = s;
}

void ReplicaLink::stop() {
  if (!impl_->replicator) return;
  impl_->replicator->stop();
  // The callbacks ran on the stopped thread or in stop() itself: the backends are back to local.
  for (auto* b : *impl_->members()) {
    b->peer_inflight.store(0);
    b->peer_inflight_tokens.store(0);
  }
}

}  // namespace kvroute::router
