// File: router/router.h
//
// The routing core shared by every front door: `kvroute serve` (the HTTP proxy, proxy/) and
// `kvroute epp` (the Gateway API endpoint picker, epp/) call the same Router, so a request is
// parsed, turned into prefix blocks, filtered to candidates, scored and picked by one path, and
// the same bookkeeping (in-flight counts, prefill charges, speculative index entries) follows it.
// The Router also owns what the picks read: the backends, the policy, the tokenizers, the precise
// KV-event indexer, and the background loops that probe engine health and scrape engine /metrics.
//
// A request's life through the core:
//   prepare()            parse the OpenAI body, compute prompt blocks (pure; any thread)
//   route_request()      the RouteRequest the policy reads (session key, expected output)
//   select_candidates()  backends that serve the model and are available (else 404 or 503)
//   pick()               the policy's choice among them; counts the decision, marks it in flight
//   Assignment           RAII: first_byte() when the engine answers, done on destruction
//
// Thread-safety: create() and start_background() from one thread; stop() once. Everything else is
// safe from any thread at once (the policy and backends are internally synchronized; the pool is
// an immutable snapshot replaced under a mutex).
#pragma once

#include <boost/container/small_vector.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "config/config.h"
#include "flow/controller.h"
#include "flow/saturation.h"
#include "http/client.h"
#include "http/task.h"
#include "metrics/registry.h"
#include "openai/request.h"
#include "prompt/prompt.h"
#include "routing/backend.h"
#include "routing/policy.h"

namespace kvroute::router {

using routing::Backend;
using Candidates = boost::container::small_vector<Backend*, 16>;  // no allocation up to 16
// The backends in the pool at one moment (discovery replaces the set, never edits one).
using BackendSet = std::shared_ptr<const std::vector<Backend*>>;

// A request parsed and cut into prefix blocks.
struct Prepared {
  Expected<openai::ParsedRequest, openai::ParseError> parsed;
  prompt::PromptBlocks blocks;
};

// Why no candidate: 404 (no backend serves the model) or 503 (none available).
struct CandidateError {
  int status;
  std::string message;
  std::string_view param;
};

class Router;

// One backend chosen for one request: in flight from construction to destruction. Call
// first_byte() when the engine starts answering and succeeded() once it answered in full.
class Assignment {
 public:
  Assignment() = default;
  Assignment(Router* r, routing::RouteRequest* rr, Backend* b, routing::Decision d);
  Assignment(Assignment&& o) noexcept;
  Assignment& operator=(Assignment&& o) noexcept;
  ~Assignment();

  Backend* backend() const { return b_; }
  const routing::Decision& decision() const { return d_; }
  explicit operator bool() const { return b_ != nullptr; }
  void first_byte();
  void succeeded() { ok_ = true; }
  // Ends the assignment now (as the destructor would).
  void release();

 private:
  Router* r_ = nullptr;
  routing::RouteRequest* rr_ = nullptr;
  Backend* b_ = nullptr;
  routing::Decision d_;
  bool ok_ = false;
  bool first_ = false;
  std::uint32_t epoch_ = 0;  // Backend::dispatch_epoch at dispatch
  // Takes this request off the backend's unstarted count (unless its epoch is settled).
  void started(Backend& b) const;
};

class Router {
 public:
  // Resolves and validates `cfg`, builds the backends, tokenizers, precise indexer and policy,
  // and declares the core's metrics in `reg` (which must outlive the Router).
  static Result<std::unique_ptr<Router>> create(config::Config cfg, metrics::Registry& reg);
  ~Router();
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  const config::Config& config() const;
  // The pool now. Backends stay valid while the router lives, even once removed.
  BackendSet backends() const;
  // The same, copied (safe in a range-for: `for (auto* b : router.backend_list())`).
  std::vector<Backend*> backend_list() const { return *backends(); }
  // Backend slots: at most this many backends at once (and removed ones still draining).
  std::size_t capacity() const;
  // Replaces the pool (discovery): backends are matched by URL; new ones are added (KV-event
  // endpoints from the templates), missing ones removed (never available again, requests in flight
  // finish, their index entries go). Errors when the list is invalid; when slots run out, adds
  // what fits, reports the rest and retries it (resync).
  Status set_backends(std::vector<config::BackendConfig> list);
  // Adds what the last set_backends could not (no free slot while removed backends drained); the
  // health loop calls it every interval. No-op when nothing is pending.
  Status resync();
  routing::Policy& policy();
  // The backend listening at host:port (as an endpoint picker names it), or null.
  Backend* find_backend(std::string_view host, std::uint16_t port) const;

  // Parses `body` and, when the policy reads prompts, computes its blocks. CPU-bound (~10 ms per
  // MB): callers move large bodies off their network threads.
  Prepared prepare(openai::Endpoint kind, std::string_view body) const;
  // The policy's view of a parsed request. `session_header` is the value of the configured
  // session header (empty when absent: the `user` field is used). `p` must outlive the result.
  void route_request(Prepared& p, std::string_view session_header,
                     routing::RouteRequest& out) const;
  // Fills `out` with the backends that serve the model and are available at `now_ms`.
  std::optional<CandidateError> select_candidates(const openai::ParsedRequest& req,
                                                  std::int64_t now_ms, Candidates& out) const;
  // The policy's pick among `candidates` (the pick is removed from them, so a retry picks among
  // the rest); an empty Assignment when the policy declines, or (`need_room_at` >= 0) when its
  // pick has no room at that time (flow control's pickAmong: best; nothing is counted then).
  Assignment pick(routing::RouteRequest& rr, Candidates& candidates,
                  std::int64_t need_room_at = -1);

  // Flow control (issue 18; null when flowControl.enabled is false): the front doors admit each
  // request through it after select_candidates.
  flow::FlowController* flow_control() const;
  // A request's band: its objective header's value if listed (flowControl.objectives), else its
  // API key's tenant if listed, else its model if listed, else 0.
  int priority_of(std::string_view objective, std::string_view tenant = {},
                  std::string_view model = {}) const;
  // Counts how flow control answered a request of band `priority` and tenant (fairness id) in the
  // metrics; tenants beyond the first 64 seen are counted as "other".
  void record_admission(int priority, std::string_view tenant, const flow::Admission& a);
  // The mean saturation of the available backends (flow/saturation.h; 1 with none), as llm-d's
  // flow_control_pool_saturation.
  double pool_saturation(std::int64_t now_ms) const;
  // Whether `b` has room for one more request now (flow/saturation.h).
  bool has_room(const Backend& b, std::int64_t now_ms) const;
  // flowControl.pickAmong: best: pick() among the candidates with fresh metrics, empty when the
  // pick has no room, unless the request has waited kBestMaxWaitMs since `waiting_since_ms` (-1:
  // it has not waited): then as with-room; with-room: pick() among those with room, empty when
  // none has; all: pick() among all once one has room. Empty also when the policy declines. The
  // chosen one leaves `candidates`.
  static constexpr std::int64_t kBestMaxWaitMs = 250;
  Assignment pick_with_room(routing::RouteRequest& rr, Candidates& candidates, std::int64_t now_ms,
                            std::int64_t waiting_since_ms = -1);

  // An upstream failure seen by a front door: counted by `kind`; unless `cancelled`, it counts
  // toward passive ejection.
  void record_failure(Backend& b, std::string_view kind, std::string_view message, bool cancelled);
  // Called when a backend is ejected or fails a probe (the proxy drops its idle connections).
  void on_backend_down(std::function<void(const Backend&)> fn);

  // Starts the health-probe loop on `probe_ex` and the /metrics scrape loop on `scrape_ex` (with
  // connection pools of their own), and discovery (an endpoints file or an InferencePool) when
  // configured, which calls set_backends from a thread of its own.
  void start_background(http::Executor probe_ex, http::Executor scrape_ex);
  // Options of every connection to the engines: the config's timeouts and, for https engines,
  // the TLS client context built from upstream.caFile/certFile/keyFile (docs/adr/0022). The
  // front door's pools and the router's probes and scrapes use them alike.
  http::ClientOptions client_options() const;
  // Refreshes the core's gauges (backend health and in-flight, KV-event counters) before a scrape.
  void update_gauges();
  // The status page's data (admin/admin.h, /status.json): every backend with its health, requests
  // in flight, and the load the router last scraped from it (waiting, running, KV usage, prefix
  // cache queries and hits, cumulative); the policy; and recent routing decisions (one in 64 is
  // kept, the last 64 of those) with their reasons and scores.
  std::string status_json() const;
  std::vector<std::string> known_models() const;
  // Active-active replicas (replicas.listen, docs/adr/0280): the endpoint this router's peers
  // connect to (with the port the OS chose for "*"; empty when off), and one more peer to hear.
  std::string replicas_endpoint() const;
  void add_replica_peer(const std::string& endpoint);
  // True while this replica warms up from a peer's snapshot: the front doors report not ready
  // (requests that come anyway are routed on the local picture).
  bool replicas_warming() const;
  // Peer replicas heard within replicas.peerTimeout (0 when off).
  std::size_t replica_peers() const;
  // Stops the background loops' effects, the replica exchange and the KV-event subscriptions.
  void stop();

 private:
  friend class Assignment;
  Router();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvroute::router
