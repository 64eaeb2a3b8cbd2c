// File: router/internal/replica_link.h
//
// The router's side of active-active replicas (replication/replication.h, docs/adr/0280): each
// decision of this router goes to the peers; a peer's decision reaches the policy through
// Policy::on_peer_routed; the peers' in-flight load per engine is kept summed by engine URL and
// stored in each Backend's peer_inflight fields (an engine a peer reports before this router knows
// it gets its figures once it appears). Metrics: kvroute_replication_*.
//
// Thread-safety: publish() from any worker; update_metrics() from the metrics scrape; the
// replicator's callbacks run on its thread; start and stop from the router's owner.
#pragma once

#include <functional>
#include <memory>

#include "common/result.h"
#include "config/config.h"
#include "metrics/registry.h"
#include "routing/policy.h"

namespace kvroute::router {

class ReplicaLink {
 public:
  using Members = std::function<std::shared_ptr<const std::vector<routing::Backend*>>()>;
  // Binds replicas.listen and connects to the peers; errors name the endpoint.
  static Result<std::unique_ptr<ReplicaLink>> start(const config::ReplicasConfig& cfg,
                                                    routing::Policy& policy, Members members,
                                                    metrics::Registry& reg);
  ~ReplicaLink();
  // Tells the peers that `rr` went to `b` (nothing for a request without prompt blocks).
  void publish(const routing::RouteRequest& rr, const routing::Backend& b);
  // The bound endpoint (tests: the OS-chosen port of tcp://127.0.0.1:*).
  std::string endpoint() const;
  void add_peer(const std::string& endpoint);
  // True while this replica waits for a peer's warm-up snapshot (the front door is not ready).
  bool warming() const;
  // Peers heard within peerTimeout.
  std::size_t peers() const;
  // Brings the kvroute_replication_* series up to date.
  void update_metrics();
  // Stops the exchange; the peers' load is taken off the backends.
  void stop();

 private:
  ReplicaLink();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvroute::router
