#include "router/router.h"

#include <simdjson.h>

#include <algorithm>
#include <array>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cmath>
#include <map>
#include <set>
#include <unordered_map>

#include "common/hash.h"
#include "common/json.h"
#include "common/log.h"
#include "discovery/discovery.h"
#include "http/client.h"
#include "kv_index/precise_scorer.h"
#include "metrics/prom_parser.h"
#include "router/internal/replica_link.h"
#include "routing/scheduler.h"
#include "tls/tls.h"

namespace kvroute::router {

namespace net = boost::asio;
using Clock = std::chrono::steady_clock;

namespace {
std::atomic<std::uint64_t> next_router_id{1};
}  // namespace

struct Router::Impl {
  // Names this router in thread-local caches (an address could be reused by a later router).
  const std::uint64_t id = next_router_id.fetch_add(1);
  config::Config cfg;
  flow::SaturationOptions saturation;
  enum class PickAmong { kWithRoom, kAll, kBest } pick_among = PickAmong::kWithRoom;
  std::unique_ptr<flow::FlowController> flow;       // flowControl.enabled
  std::shared_ptr<net::ssl::context> upstream_tls;  // https engines (docs/adr/0022)
  std::size_t capacity = 0;  // backend slots (index structures are sized by it)
  // Membership (docs/adr/0021). Backends are never freed while the router lives: a reader may
  // hold a removed one (a snapshot, an Assignment). A slot is reused only once its last occupant
  // has no request in flight, so late completions never touch the new occupant's entries.
  mutable Mutex mu;
  std::vector<std::unique_ptr<Backend>> owned GUARDED_BY(mu);  // every backend ever created
  struct Slot {
    Backend* b = nullptr;  // current or last occupant
    bool live = false;
    std::optional<std::uint32_t> fixed_blocks;  // configured num_gpu_blocks (not scraped)
  };
  std::vector<Slot> slots GUARDED_BY(mu);
  BackendSet members GUARDED_BY(mu) = std::make_shared<const std::vector<Backend*>>();
  std::atomic<std::uint64_t> members_gen{1};
  // The last list set_backends was given, and whether some of it found no free slot (retried by
  // resync(), which the health loop calls every interval).
  std::vector<config::BackendConfig> wanted_list GUARDED_BY(mu);
  bool pending GUARDED_BY(mu) = false;  // bumped (under mu) each time `members` changes
  std::unique_ptr<discovery::Source> discovery;
  std::unique_ptr<routing::Policy> policy;
  std::shared_ptr<routing::RoutingContext> routing_ctx;
  // Models without their own tokenizer; null: character blocks.
  std::shared_ptr<const prompt::PromptEncoder> encoder;
  // routing.models: per-model tokenizers (immutable after create, read from every thread).
  std::unordered_map<std::string, std::shared_ptr<const prompt::PromptEncoder>> model_encoders;
  std::shared_ptr<kv_index::PreciseIndexer> precise;  // null: no backend publishes KV events
  std::unique_ptr<ReplicaLink> replicas;              // replicas.listen set (issue 17)
  std::function<void(const Backend&)> backend_down;

  metrics::GaugeFamily* inflight = nullptr;
  metrics::GaugeFamily* healthy = nullptr;
  metrics::CounterFamily* upstream_errors = nullptr;
  metrics::CounterFamily* decisions = nullptr;
  // Flow control (declared only when enabled).
  metrics::CounterFamily* flow_requests = nullptr;         // {priority, outcome}
  metrics::HistogramFamily* flow_queue_seconds = nullptr;  // {priority}
  metrics::Gauge* flow_queue_size = nullptr;
  metrics::Gauge* flow_pool_saturation = nullptr;
  metrics::CounterFamily* flow_tenant_requests = nullptr;  // {tenant, outcome}
  // The outcome cells by band and by tenant, so that recording an admission costs one lock and
  // two small lookups, not two label-tuple lookups with their allocations (measured per request:
  // scripts/bench/flow_instructions.sh). Bands come from the config, so they are few. Tenants
  // with a label of their own: the first kMaxTenantLabels seen; later ones are "other", so a
  // client cannot grow the metrics without bound by inventing fairness ids.
  static constexpr std::size_t kMaxTenantLabels = 64;
  static constexpr std::size_t kOutcomes =
      static_cast<std::size_t>(flow::Outcome::kRateLimited) + 1;
  using OutcomeCells = std::array<metrics::Counter*, kOutcomes>;
  Mutex flow_cells_mu;
  std::map<int, OutcomeCells> band_cells GUARDED_BY(flow_cells_mu);
  std::map<std::string, OutcomeCells, std::less<>> tenant_cells GUARDED_BY(flow_cells_mu);
  OutcomeCells other_tenant_cells GUARDED_BY(flow_cells_mu) = {};
  metrics::Counter* prompt_tokens = nullptr;       // routed by prefix-aware policies
  metrics::Histogram* decision_seconds = nullptr;  // sampled: one decision in 64
  metrics::Gauge* index_entries = nullptr;
  metrics::Gauge* kv_event_lag = nullptr;  // the last KV-event batch's age when applied  // the
                                           // approximate prefix index's (block, backend) pairs
  metrics::Counter* predicted_tokens = nullptr;  // of those, predicted cached on the chosen engine
  metrics::GaugeFamily* precise_gauges = nullptr;

  // Health probes and /metrics scrapes have pools of their own: a probe must not take (and find
  // dead) the connections requests use, nor leave its own for them.
  std::unique_ptr<http::ConnectionPool> probe_pool;
  std::unique_ptr<http::ConnectionPool> scrape_pool;

  // Recent decisions for the status page: one in 64 (the copy costs ~1,000 instructions: 16
  // instructions a request amortized), written only when the lock is free (a request never waits
  // for the page).
  struct Recent {
    std::int64_t at_ms = 0;
    const Backend* backend = nullptr;  // never freed while the router lives
    std::string reason, detail, model;
    std::size_t prompt_blocks = 0;
  };
  mutable Mutex recent_mu;
  std::vector<Recent> recent GUARDED_BY(recent_mu);
  std::size_t recent_next GUARDED_BY(recent_mu) = 0;
  static constexpr std::size_t kRecent = 64;
  void remember(const routing::RouteRequest& rr, const routing::Decision& d) {
    if (!recent_mu.try_lock()) return;
    Recent r{routing::steady_now_ms(),
             d.backend,
             d.reason,
             d.detail,
             rr.request != nullptr ? rr.request->model : std::string(),
             rr.blocks.size()};
    if (recent.size() < kRecent) {
      recent.push_back(std::move(r));
    } else {
      recent[recent_next] = std::move(r);
    }
    recent_next = (recent_next + 1) % kRecent;
    recent_mu.unlock();
  }

  metrics::Counter& decision_cell(std::string_view reason) {
    // Per thread and per router (a test may run several routers on one thread, one after another).
    struct Entry {
      std::uint64_t owner;
      std::string reason;
      metrics::Counter* cell;
    };
    thread_local std::vector<Entry> cache;
    for (auto& e : cache) {
      if (e.owner == id && e.reason == reason) return *e.cell;
    }
    auto* c = &decisions->with({policy->name(), reason});
    cache.push_back({id, std::string(reason), c});
    return *c;
  }

  void declare_metrics(metrics::Registry& reg) {
    inflight = &reg.gauge("kvroute_backend_inflight_requests", "Requests in flight per backend.",
                          {"backend"});
    healthy = &reg.gauge("kvroute_backend_healthy",
                         "1 when the backend is healthy and not ejected.", {"backend"});
    upstream_errors = &reg.counter("kvroute_upstream_errors_total",
                                   "Upstream failures by backend and kind.", {"backend", "kind"});
    prompt_tokens = &reg.counter("kvroute_prompt_tokens_total",
                                 "Prompt tokens routed (exact with a tokenizer, else estimated) by "
                                 "prefix-aware policies.")
                         .with({});
    predicted_tokens = &reg.counter("kvroute_predicted_cached_tokens_total",
                                    "Prompt tokens the policy predicted cached on the engine it "
                                    "chose (compare vllm:prefix_cache_hits_total).")
                            .with({});
    decision_seconds =
        &reg.histogram("kvroute_routing_decision_duration_seconds",
                       "Time the policy took to pick an engine (one decision in 64 is timed).",
                       {0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                        0.01, 0.025, 0.05})
             .with({});
    kv_event_lag = &reg.gauge("kvroute_kv_event_lag_seconds",
                              "Age of the last KV-event batch when the router applied it (its "
                              "clock minus the engine's timestamp).")
                        .with({});
    index_entries = &reg.gauge("kvroute_prefix_index_entries",
                               "(block, engine) pairs in the approximate prefix index.")
                         .with({});
    if (cfg.flow_control.enabled) {
      flow_requests =
          &reg.counter("kvroute_flow_control_requests_total",
                       "Requests through flow control by priority band and outcome (dispatched, "
                       "rejected-saturated, rejected-capacity, rejected-ttl-expired, "
                       "rejected-context-cancelled, rejected-shutting-down).",
                       {"priority", "outcome"});
      flow_queue_seconds = &reg.histogram(
          "kvroute_flow_control_request_queue_duration_seconds",
          "Time requests waited in the router's queue (queued requests only), by priority band.",
          {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}, {"priority"});
      flow_queue_size =
          &reg.gauge("kvroute_flow_control_queue_size", "Requests waiting in the router's queue.")
               .with({});
      flow_pool_saturation =
          &reg.gauge("kvroute_flow_control_pool_saturation",
                     "Mean over available engines of max(estimated waiting / queueDepthThreshold, "
                     "KV usage / kvCacheUtilThreshold); stale or missing metrics count 1. Requests "
                     "wait in the router when no candidate engine is below 1.")
               .with({});
      flow_tenant_requests = &reg.counter(
          "kvroute_flow_control_tenant_requests_total",
          "Requests through flow control by tenant (fairness id; the first 64 tenants seen, the "
          "rest as \"other\"; \"\" when none) and outcome.",
          {"tenant", "outcome"});
    }
    decisions = &reg.counter("kvroute_routing_decisions_total",
                             "Routing decisions by policy and reason.", {"policy", "reason"});
    precise_gauges =
        &reg.gauge("kvroute_kv_events",
                   "KV-event index counters (cumulative, read at scrape time).", {"counter"});
  }

  const prompt::PromptEncoder* encoder_for(const std::string& model) const {
    if (!model_encoders.empty()) {
      if (auto it = model_encoders.find(model); it != model_encoders.end()) return it->second.get();
    }
    return encoder.get();
  }

  // An engine's KV capacity in the router's blocks: the approximate index forgets past it, the
  // TTFT cost counts memory against it.
  void set_kv_capacity(Backend& b, std::uint64_t blocks) {
    routing_ctx->prefix.set_capacity(static_cast<std::size_t>(b.index), blocks);
    b.kv_capacity_tokens.store(static_cast<std::int64_t>(blocks * cfg.block_size),
                               std::memory_order_relaxed);
  }
  void down(const Backend& b) {
    if (backend_down) backend_down(b);
  }
  BackendSet snapshot() const {
    MutexLock lk(mu);
    return members;
  }
  // The pool for the request path: a per-thread copy of the snapshot, refreshed when the
  // generation moves, so a request costs one atomic load instead of a lock and two reference
  // counts. Valid until this thread's next call.
  const std::vector<Backend*>& members_view() const {
    struct Cached {
      std::uint64_t owner = 0;
      std::uint64_t gen = 0;
      BackendSet set;
    };
    thread_local Cached cache;
    const std::uint64_t gen = members_gen.load(std::memory_order_acquire);
    if (cache.owner != id || cache.gen != gen) {
      MutexLock lk(mu);
      cache = {id, members_gen.load(std::memory_order_relaxed), members};
    }
    return *cache.set;
  }
  std::optional<std::uint32_t> fixed_blocks(const Backend& b) const {
    MutexLock lk(mu);
    return slots[static_cast<std::size_t>(b.index)].fixed_blocks;
  }
  Status set_backends(std::vector<config::BackendConfig> list);
  Status resync();
  Status add_locked(const config::BackendConfig& bc) REQUIRES(mu);
  void remove_locked(Backend& b) REQUIRES(mu);
  void publish_locked() REQUIRES(mu);

  Result<void> load_encoders();
  Result<void> build();
  // `sent_epoch`: the backend's dispatch epoch before the scrape's request went out.
  void scrape(Backend& b, std::string_view text, std::uint32_t sent_epoch);
  http::Task<void> scrape_loop();
  http::Task<void> health_loop();
};

// --- Assignment --------------------------------------------------------------------------------

Assignment::Assignment(Router* r, routing::RouteRequest* rr, Backend* b, routing::Decision d)
    : r_(r), rr_(rr), b_(b), d_(std::move(d)) {
  b_->inflight.fetch_add(1);
  epoch_ = b_->dispatch_epoch.load();
  b_->unstarted_by_parity[epoch_ & 1].fetch_add(1);
  r_->impl_->policy->on_routed(*rr_, *b_);
}

Assignment::Assignment(Assignment&& o) noexcept
    : r_(o.r_),
      rr_(o.rr_),
      b_(o.b_),
      d_(std::move(o.d_)),
      ok_(o.ok_),
      first_(o.first_),
      epoch_(o.epoch_) {
  o.b_ = nullptr;
}

Assignment& Assignment::operator=(Assignment&& o) noexcept {
  if (this != &o) {
    release();
    r_ = o.r_;
    rr_ = o.rr_;
    b_ = o.b_;
    d_ = std::move(o.d_);
    ok_ = o.ok_;
    first_ = o.first_;
    epoch_ = o.epoch_;
    o.b_ = nullptr;
  }
  return *this;
}

Assignment::~Assignment() { release(); }

void Assignment::first_byte() {
  if (!b_ || first_) return;
  first_ = true;
  started(*b_);
  r_->impl_->policy->on_first_byte(*rr_, *b_);
  if (r_->impl_->flow) r_->impl_->flow->wake();
}

void Assignment::started(Backend& b) const {
  if (epoch_ > b.settled_epoch.load()) b.unstarted_by_parity[epoch_ & 1].fetch_sub(1);
}

void Assignment::release() {
  if (!b_) return;
  Backend* b = b_;
  b_ = nullptr;
  // The hooks first: once in-flight reaches 0 a removed backend's slot may be reused, and nothing
  // of this request may land in the new occupant's entries.
  r_->impl_->policy->on_done(*rr_, *b, ok_);
  if (!first_) started(*b);
  b->inflight.fetch_sub(1);
  if (r_->impl_->flow) r_->impl_->flow->wake();
}

// --- Router ------------------------------------------------------------------------------------

Router::Router() : impl_(std::make_unique<Impl>()) {}
Router::~Router() { stop(); }

const config::Config& Router::config() const { return impl_->cfg; }
BackendSet Router::backends() const { return impl_->snapshot(); }
routing::Policy& Router::policy() { return *impl_->policy; }
void Router::on_backend_down(std::function<void(const Backend&)> fn) {
  impl_->backend_down = std::move(fn);
}

std::size_t Router::capacity() const { return impl_->capacity; }

Status Router::set_backends(std::vector<config::BackendConfig> list) {
  return impl_->set_backends(std::move(list));
}

Status Router::Impl::set_backends(std::vector<config::BackendConfig> list) {
  auto& im = *this;
  std::set<std::string> wanted;
  for (auto& bc : list) {
    KVROUTE_TRY(config::resolve_backend(im.cfg, bc));
    if (!wanted.insert(bc.url).second) {
      return fail(Error::invalid("backend " + bc.url + " listed twice"));
    }
  }
  std::vector<Backend*> gone;
  Status result;
  {
    MutexLock lk(im.mu);
    std::set<std::string> have;
    for (auto& slot : im.slots) {
      if (!slot.live) continue;
      if (wanted.contains(slot.b->url)) {
        have.insert(slot.b->url);
      } else {
        im.remove_locked(*slot.b);
        gone.push_back(slot.b);
      }
    }
    for (const auto& bc : list) {
      if (have.contains(bc.url)) continue;
      if (auto st = im.add_locked(bc); !st) {
        spdlog::error("discovery: {}", st.error().message);
        if (result) result = st;
      } else {
        spdlog::info("backend {} added ({})", bc.name, bc.url);
      }
    }
    im.publish_locked();
    im.wanted_list = list;
    im.pending = !result;
  }
  for (auto* b : gone) {
    spdlog::info("backend {} removed ({} in flight finish there)", b->name, b->inflight.load());
    im.down(*b);  // front doors drop their idle connections to it
  }
  return result;
}

Status Router::resync() { return impl_->resync(); }

Status Router::Impl::resync() {
  std::vector<config::BackendConfig> list;
  {
    MutexLock lk(mu);
    if (!pending) return {};
    list = wanted_list;
  }
  return set_backends(std::move(list));
}

Backend* Router::find_backend(std::string_view host, std::uint16_t port) const {
  const BackendSet members = impl_->snapshot();
  for (auto* b : *members) {
    if (b->endpoint.port == port && b->endpoint.host == host) return b;
  }
  return nullptr;
}

Result<void> Router::Impl::load_encoders() {
  // "word": the simulator's word tokenizer (exact blocks against `kvroute sim` without a
  // tokenizer). Each directory is loaded once, however many models share it.
  std::unordered_map<std::string, std::shared_ptr<const prompt::PromptEncoder>> by_path;
  auto load = [&](const std::string& path) -> Result<std::shared_ptr<const prompt::PromptEncoder>> {
    if (auto it = by_path.find(path); it != by_path.end()) return it->second;
    auto enc = prompt::PromptEncoder::load(path == "word" ? "" : path);
    if (!enc) return fail(Error::invalid("tokenizer " + path + ": " + enc.error().message));
    by_path.emplace(path, *enc);
    return std::move(*enc);
  };
  if (!cfg.tokenizer.empty()) {
    KVROUTE_TRY(encoder, load(cfg.tokenizer));
  }
  for (const auto& m : cfg.models) {
    KVROUTE_TRY(auto enc, load(m.tokenizer));
    model_encoders[m.name] = std::move(enc);
  }
  return {};
}

Status Router::Impl::add_locked(const config::BackendConfig& bc) {
  auto ep = http::parse_http_url(bc.url);
  if (!ep) return fail(ep.error());
  // A free slot: never used, or its last occupant removed and idle.
  std::size_t i = slots.size();
  for (std::size_t k = 0; k < slots.size(); ++k) {
    if (!slots[k].live && (!slots[k].b || slots[k].b->inflight.load() == 0)) {
      i = k;
      break;
    }
  }
  if (i == slots.size()) {
    return fail(Error::unavailable(
        fmt::format("no free backend slot for {} ({} in use or draining; raise maxEndpoints)",
                    bc.url, capacity)));
  }
  auto b = std::make_unique<Backend>(static_cast<int>(i), bc.name, bc.url, *ep);
  if (!bc.models.empty()) b->models.set(bc.models);
  Slot& slot = slots[i];
  const bool reused = slot.b != nullptr;
  slot.b = b.get();
  slot.live = true;
  slot.fixed_blocks = bc.num_gpu_blocks;
  if (reused && routing_ctx) routing_ctx->prefix.clear_backend(i);
  if (routing_ctx && bc.num_gpu_blocks) set_kv_capacity(*b, *bc.num_gpu_blocks);
  if (precise && !bc.kv_events_endpoint.empty()) {
    kv_index::IndexedEngine e;
    e.backend = i;
    e.endpoint = bc.kv_events_endpoint;
    e.replay_endpoint = bc.kv_events_replay;
    if (!bc.models.empty()) e.model = bc.models.front();
    if (auto st = precise->add_engine(std::move(e)); !st) {
      spdlog::warn("backend {}: KV events not indexed: {}", bc.name, st.error().message);
    }
  }
  owned.push_back(std::move(b));
  return {};
}

void Router::Impl::remove_locked(Backend& b) {
  const auto i = static_cast<std::size_t>(b.index);
  b.removed.store(true);
  slots[i].live = false;
  if (precise) precise->remove_engine(i);
  routing_ctx->prefix.clear_backend(i);
  healthy->remove({b.name});
  inflight->remove({b.name});
}

void Router::Impl::publish_locked() {
  auto next = std::make_shared<std::vector<Backend*>>();
  for (const auto& s : slots) {
    if (s.live) next->push_back(s.b);
  }
  members = std::move(next);
  members_gen.fetch_add(1, std::memory_order_release);
}

Result<void> Router::Impl::build() {
  capacity = cfg.max_endpoints != 0    ? cfg.max_endpoints
             : cfg.dynamic_discovery() ? std::max<std::size_t>(64, cfg.backends.size())
                                       : cfg.backends.size();
  capacity = std::max<std::size_t>(capacity, 1);
  routing_ctx = std::make_shared<routing::RoutingContext>(capacity);
  KVROUTE_TRY(load_encoders());
  auto ic = kv_index::indexer_config_from(cfg);
  ic.engines.clear();  // added with their backends below
  ic.num_backends = capacity;
  const bool any_events = !cfg.kv_events_template.empty() ||
                          std::any_of(cfg.backends.begin(), cfg.backends.end(),
                                      [](const auto& b) { return !b.kv_events_endpoint.empty(); });
  if (any_events) {
    auto created = kv_index::PreciseIndexer::create(std::move(ic));
    if (!created) return fail(created.error());
    precise = std::shared_ptr<kv_index::PreciseIndexer>(std::move(*created));
    auto indexer = precise;
    routing_ctx->scorer_extensions.push_back(
        [indexer](const config::PluginConfig& pc, std::shared_ptr<routing::RoutingContext> ctx)
            -> Result<std::unique_ptr<routing::Scorer>> {
          return kv_index::make_precise_scorer(pc, std::move(ctx), indexer);
        });
    routing_ctx->precise_available = true;
  }
  {
    MutexLock lk(mu);
    slots.resize(capacity);
    for (const auto& bc : cfg.backends) KVROUTE_TRY(add_locked(bc));
    publish_locked();
  }
  auto made = routing::make_policy(cfg, *snapshot(), routing_ctx);
  if (!made) return fail(made.error());
  policy = std::move(*made);
  // Discovery: an endpoints file is read now (errors fail start-up); sources run once started.
  KVROUTE_TRY(discovery, discovery::make_source(cfg, [this](std::vector<config::BackendConfig> l) {
                if (auto st = set_backends(std::move(l)); !st) {
                  spdlog::error("discovery: {}", st.error().message);
                }
              }));
  return {};
}

Result<std::unique_ptr<Router>> Router::create(config::Config cfg, metrics::Registry& reg) {
  std::unique_ptr<Router> r(new Router());
  auto& im = *r->impl_;
  im.cfg = std::move(cfg);
  if (auto ok = config::resolve(im.cfg); !ok) return fail(ok.error());
  if (auto ok = config::validate(im.cfg); !ok) return fail(ok.error());
  tls::ClientConfig tc;
  tc.ca_file = im.cfg.upstream_ca_file;
  tc.cert_file = im.cfg.upstream_cert_file;
  tc.key_file = im.cfg.upstream_key_file;
  tc.insecure_skip_verify = im.cfg.upstream_insecure_skip_verify;
  KVROUTE_TRY(im.upstream_tls, tls::make_client_context(tc));
  if (tc.insecure_skip_verify)
    spdlog::warn("upstream.insecureSkipVerify: https engines' certificates are not verified");
  im.declare_metrics(reg);
  KVROUTE_TRY(im.build());
  if (const auto& fc = im.cfg.flow_control; fc.enabled) {
    im.saturation.queue_depth_threshold = fc.queue_depth_threshold;
    im.saturation.kv_cache_util_threshold = fc.kv_cache_util_threshold;
    im.saturation.metrics_staleness = fc.metrics_staleness;
    im.saturation.headroom = fc.headroom;
    im.saturation.max_concurrency = fc.max_concurrency;
    im.saturation.engine_max_running = fc.engine_max_running;
    im.pick_among = fc.pick_among == "all"    ? Impl::PickAmong::kAll
                    : fc.pick_among == "best" ? Impl::PickAmong::kBest
                                              : Impl::PickAmong::kWithRoom;
    flow::FlowOptions o;
    o.default_band.max_requests = fc.band_max_requests;
    o.default_band.max_bytes = fc.band_max_bytes;
    o.default_band.fairness = fc.fairness == "vtc"             ? flow::Fairness::kVtc
                              : fc.fairness == "global-strict" ? flow::Fairness::kGlobalStrict
                                                               : flow::Fairness::kRoundRobin;
    o.max_requests = fc.max_requests;
    o.max_bytes = fc.max_bytes;
    o.default_ttl = fc.default_request_ttl;
    o.shed_sheddable = fc.shed_sheddable;
    const auto limit = [](const config::TenantRateLimit& t) {
      return flow::RateLimit{t.requests_per_second, t.tokens_per_second,
                             static_cast<double>(t.burst.count()) / 1000.0};
    };
    o.default_limit = limit(fc.default_rate_limit);
    for (const auto& t : fc.tenant_rate_limits) o.tenant_limits[t.name] = limit(t);
    im.flow = std::make_unique<flow::FlowController>(std::move(o));
  }
  if (im.cfg.replicas.enabled()) {
    Impl* p = &im;
    KVROUTE_TRY(im.replicas, ReplicaLink::start(
                                 im.cfg.replicas, *im.policy, [p] { return p->snapshot(); }, reg));
  }
  return r;
}

std::string Router::replicas_endpoint() const {
  return impl_->replicas ? impl_->replicas->endpoint() : std::string();
}

void Router::add_replica_peer(const std::string& endpoint) {
  if (impl_->replicas) impl_->replicas->add_peer(endpoint);
}

bool Router::replicas_warming() const { return impl_->replicas && impl_->replicas->warming(); }
std::size_t Router::replica_peers() const { return impl_->replicas ? impl_->replicas->peers() : 0; }

flow::FlowController* Router::flow_control() const { return impl_->flow.get(); }

int Router::priority_of(std::string_view objective, std::string_view tenant,
                        std::string_view model) const {
  const auto& fc = impl_->cfg.flow_control;
  const std::pair<std::string_view, const std::vector<config::ObjectivePriority>*> rules[] = {
      {objective, &fc.objectives}, {tenant, &fc.tenant_priorities}, {model, &fc.model_priorities}};
  for (const auto& [key, list] : rules) {
    if (key.empty()) continue;
    for (const auto& o : *list)
      if (o.name == key) return o.priority;
  }
  return 0;
}

double Router::pool_saturation(std::int64_t now_ms) const {
  std::vector<flow::EngineSnapshot> engines;
  const BackendSet members = impl_->snapshot();
  for (auto* b : *members)
    if (b->available(now_ms)) engines.push_back(flow::snapshot(*b));
  return flow::pool_saturation(impl_->saturation, engines, now_ms);
}

bool Router::has_room(const Backend& b, std::int64_t now_ms) const {
  return flow::judge(impl_->saturation, flow::snapshot(b), now_ms) == flow::Room::kRoom;
}

Assignment Router::pick_with_room(routing::RouteRequest& rr, Candidates& candidates,
                                  std::int64_t now_ms, std::int64_t waiting_since_ms) {
  Assignment a;
  const bool spill = waiting_since_ms >= 0 && now_ms - waiting_since_ms >= kBestMaxWaitMs;
  if (impl_->pick_among == Impl::PickAmong::kBest && !spill) {
    // The scheduler weighs every candidate whose metrics are fresh (one never scraped or whose
    // scrapes fail must not hold the queue); its pick goes if it has room, else the request waits
    // for it (no spill off the prefix holder, no pile into a full engine's queue), for at most
    // kBestMaxWaitMs: a holder that stays busy must not hold its band's queue (ADR 0027).
    Candidates fresh;
    for (auto* b : candidates)
      if (flow::judge(impl_->saturation, flow::snapshot(*b), now_ms) != flow::Room::kStale)
        fresh.push_back(b);
    a = pick(rr, fresh, now_ms);
  } else if (impl_->pick_among == Impl::PickAmong::kAll) {
    // Once any candidate has room, the scheduler weighs them all.
    const bool any = std::any_of(candidates.begin(), candidates.end(),
                                 [&](const Backend* b) { return has_room(*b, now_ms); });
    if (!any) return {};  // the pool is saturated: wait
    a = pick(rr, candidates);
  } else {  // with-room, or best after its wait
    Candidates roomy;
    for (auto* b : candidates)
      if (has_room(*b, now_ms)) roomy.push_back(b);
    if (roomy.empty()) return {};  // the pool is saturated: wait
    a = pick(rr, roomy);
  }
  if (a)
    candidates.erase(std::remove(candidates.begin(), candidates.end(), a.backend()),
                     candidates.end());
  return a;
}

Prepared Router::prepare(openai::Endpoint kind, std::string_view body) const {
  Prepared p{openai::parse_request(kind, body), {}};
  if (p.parsed && impl_->policy->uses_prompt()) {
    p.blocks = prompt::prompt_blocks(*p.parsed, impl_->encoder_for(p.parsed->model),
                                     impl_->cfg.block_size, hash64(p.parsed->model));
  }
  return p;
}

void Router::route_request(Prepared& p, std::string_view session_header,
                           routing::RouteRequest& rr) const {
  const auto& parsed = *p.parsed;
  rr.request = &parsed;
  rr.session_key = session_header;
  if (rr.session_key.empty()) rr.session_key = parsed.user;
  rr.conversation = openai::continues_conversation(parsed);
  rr.expected_output_tokens =
      parsed.max_tokens
          ? static_cast<std::uint32_t>(std::min<std::int64_t>(*parsed.max_tokens, 1 << 20))
          : 16;
  if (impl_->policy->uses_prompt()) {
    rr.tokens = std::move(p.blocks.tokens);
    rr.blocks = std::move(p.blocks.blocks);
    rr.tokens_per_block = p.blocks.tokens_per_block;
    rr.prompt_tokens = p.blocks.prompt_tokens;
  }
}

std::optional<CandidateError> Router::select_candidates(const openai::ParsedRequest& req,
                                                        std::int64_t now, Candidates& out) const {
  bool any_serves = false;
  for (auto* b : impl_->members_view()) {
    if (!b->serves(req.model)) continue;
    any_serves = true;
    if (b->available(now)) out.push_back(b);
  }
  if (!any_serves) {
    return CandidateError{404, "The model `" + req.model + "` does not exist.", "model"};
  }
  if (out.empty())
    return CandidateError{503, "no healthy backend for model `" + req.model + "`", {}};
  return std::nullopt;
}

Assignment Router::pick(routing::RouteRequest& rr, Candidates& candidates,
                        std::int64_t need_room_at) {
  if (candidates.empty()) return {};
  // One decision in 64 is kept for the status page, with its scores.
  thread_local unsigned sampled = 0;
  rr.want_detail = (++sampled & 63) == 1;
  // Another one in 64 is timed (not the detailed one: formatting its scores would be timed too).
  const bool timed = (sampled & 63) == 33;
  const auto t0 =
      timed ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
  routing::Decision d = impl_->policy->pick(rr, {candidates.data(), candidates.size()});
  if (timed) {
    impl_->decision_seconds->observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  Backend* b = d.backend;
  if (!b) return {};
  if (need_room_at >= 0 && !has_room(*b, need_room_at)) return {};  // wait for the best engine
  candidates.erase(std::remove(candidates.begin(), candidates.end(), b), candidates.end());
  impl_->decision_cell(d.reason).inc();
  if (rr.want_detail) impl_->remember(rr, d);
  if (impl_->policy->uses_prompt() && !rr.prediction_counted) {
    rr.prediction_counted = true;
    impl_->prompt_tokens->inc(rr.prompt_tokens);
    impl_->predicted_tokens->inc(static_cast<double>(d.predicted_blocks) * rr.tokens_per_block);
  }
  if (!d.detail.empty()) spdlog::debug("route -> {} ({}): {}", b->name, d.reason, d.detail);
  if (impl_->replicas) impl_->replicas->publish(rr, *b);
  return Assignment(this, &rr, b, std::move(d));
}

void Router::record_failure(Backend& b, std::string_view kind, std::string_view message,
                            bool cancelled) {
  auto& im = *impl_;
  im.upstream_errors->with({b.name, std::string(kind)}).inc();
  if (cancelled) return;
  int n = b.consecutive_failures.fetch_add(1) + 1;
  if (n >= im.cfg.failure_threshold) {
    b.ejected_until_ms.store(routing::steady_now_ms() + im.cfg.ejection_time.count());
    im.down(b);
    spdlog::warn("backend {} ejected for {} ms after {} consecutive failures (last: {})", b.name,
                 im.cfg.ejection_time.count(), n, message);
  }
}

std::string Router::status_json() const {
  auto& im = *impl_;
  const auto now = routing::steady_now_ms();
  std::string out = R"({"policy":")";
  append_json_escaped(out, im.policy->name());
  out += R"(","backends":[)";
  bool first = true;
  const BackendSet members = im.snapshot();  // named: the loop must not outlive the snapshot
  for (const Backend* b : *members) {
    if (!first) out += ',';
    first = false;
    out += R"({"name":")";
    append_json_escaped(out, b->name);
    out += fmt::format(R"(","healthy":{},"inflight":{})", b->available(now) ? "true" : "false",
                       b->inflight.load(std::memory_order_relaxed));
    if (auto load = b->load.load()) {
      // JSON has no NaN or infinity: an engine that reports one shows 0.
      const auto num = [](double v) { return std::isfinite(v) ? v : 0.0; };
      out += fmt::format(
          R"(,"waiting":{},"running":{},"kv_usage":{},"prefix_queries":{},"prefix_hits":{},)"
          R"("scraped_ms_ago":{})",
          num(load->waiting), num(load->running), num(load->kv_usage), num(load->prefix_queries),
          num(load->prefix_hits),
          std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                load->scraped_at)
              .count());
    }
    out += '}';
  }
  out += R"(],"decisions":[)";
  {
    MutexLock lock(im.recent_mu);
    // Newest first.
    for (std::size_t i = 0; i < im.recent.size(); ++i) {
      const std::size_t at = (im.recent_next + im.recent.size() - 1 - i) % im.recent.size();
      const auto& r = im.recent[at];
      if (i > 0) out += ',';
      out += fmt::format(R"({{"ms_ago":{},"backend":")", now - r.at_ms);
      append_json_escaped(out, r.backend != nullptr ? r.backend->name : "");
      out += R"(","reason":")";
      append_json_escaped(out, r.reason);
      out += R"(","model":")";
      append_json_escaped(out, r.model);
      out += fmt::format(R"(","prompt_blocks":{},"scores":")", r.prompt_blocks);
      append_json_escaped(out, r.detail);
      out += "\"}";
    }
  }
  out += "]}";
  return out;
}

void Router::record_admission(int priority, std::string_view tenant, const flow::Admission& a) {
  auto& im = *impl_;
  if (!im.flow_requests) return;
  const auto o = static_cast<std::size_t>(a.outcome);
  const std::string_view outcome = flow::to_string(a.outcome);
  metrics::Counter* band_cell = nullptr;
  metrics::Counter* tenant_cell = nullptr;
  {
    MutexLock l(im.flow_cells_mu);
    auto& bc = im.band_cells[priority];  // value-initialized: no cells yet
    if (!bc[o]) bc[o] = &im.flow_requests->with({std::to_string(priority), outcome});
    band_cell = bc[o];
    Impl::OutcomeCells* tc = &im.other_tenant_cells;
    std::string_view label = "other";
    if (auto it = im.tenant_cells.find(tenant); it != im.tenant_cells.end()) {
      tc = &it->second;
      label = tenant;
    } else if (im.tenant_cells.size() < Impl::kMaxTenantLabels) {
      tc = &im.tenant_cells.emplace(std::string(tenant), Impl::OutcomeCells{}).first->second;
      label = tenant;
    }
    if (!(*tc)[o]) (*tc)[o] = &im.flow_tenant_requests->with({label, outcome});
    tenant_cell = (*tc)[o];
  }
  band_cell->inc();
  tenant_cell->inc();
  if (a.queued) {
    im.flow_queue_seconds->with({std::to_string(priority)})
        .observe(static_cast<double>(a.queued_ms) / 1000.0);
  }
}

void Router::update_gauges() {
  auto& im = *impl_;
  const auto now = routing::steady_now_ms();
  if (im.flow) {
    im.flow_queue_size->set(static_cast<double>(im.flow->queued()));
    im.flow_pool_saturation->set(pool_saturation(now));
  }
  const BackendSet members = im.snapshot();
  for (auto* b : *members) {
    im.healthy->with({b->name}).set(b->available(now) ? 1 : 0);
    im.inflight->with({b->name}).set(b->inflight.load());
  }
  if (im.routing_ctx) im.index_entries->set(static_cast<double>(im.routing_ctx->prefix.entries()));
  if (im.replicas) im.replicas->update_metrics();
  if (!im.precise) return;
  const auto st = im.precise->stats(false);
  im.kv_event_lag->set(st.last_lag_s);
  const std::pair<const char*, std::uint64_t> rows[] = {
      {"batches", st.batches},
      {"blocks_stored", st.index.blocks_stored},
      {"blocks_removed", st.index.blocks_removed},
      {"unknown_removals", st.index.unknown_removals},
      {"resets", st.resets},
      {"backend_down_clears", st.backend_down_clears},
      {"stale_reports", st.stale_reports},
      {"stale_engines", st.stale_engines},
      {"entries", st.entries},
      {"received_messages", st.subscriber.received},
      {"malformed_messages", st.subscriber.malformed},
      {"unknown_events", st.subscriber.unknown_events},
      {"gaps", st.subscriber.gaps},
      {"replay_requests", st.subscriber.replay_requests},
      {"replayed_batches", st.subscriber.replayed},
      {"replay_failures", st.subscriber.replay_failures},
  };
  for (const auto& [name, value] : rows) {
    im.precise_gauges->with({name}).set(static_cast<double>(value));
  }
}

std::vector<std::string> Router::known_models() const {
  std::set<std::string> all;
  const BackendSet members = impl_->snapshot();
  for (auto* b : *members) {
    if (const auto* m = b->models.get()) all.insert(m->begin(), m->end());
  }
  return {all.begin(), all.end()};
}

void Router::Impl::scrape(Backend& b, std::string_view text, std::uint32_t sent_epoch) {
  static const std::vector<std::string_view> kWanted = {
      "vllm:num_requests_waiting",       "vllm:num_requests_running",
      "vllm:kv_cache_usage_perc",        "vllm:gpu_cache_usage_perc",
      "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total",
      "vllm:cache_config_info"};
  auto parsed = metrics::parse_exposition(text, kWanted);
  auto load = std::make_shared<routing::EngineLoad>();
  for (const auto& s : parsed.samples) {
    if (s.name == "vllm:num_requests_waiting")
      load->waiting += s.value;
    else if (s.name == "vllm:num_requests_running")
      load->running += s.value;
    else if (s.name == "vllm:kv_cache_usage_perc" || s.name == "vllm:gpu_cache_usage_perc")
      load->kv_usage = std::max(load->kv_usage, s.value);
    else if (s.name == "vllm:prefix_cache_queries_total")
      load->prefix_queries += s.value;
    else if (s.name == "vllm:prefix_cache_hits_total")
      load->prefix_hits += s.value;
    else if (s.name == "vllm:cache_config_info") {
      auto blocks = s.label("num_gpu_blocks");
      auto bs = s.label("block_size");
      load->num_gpu_blocks =
          static_cast<std::uint32_t>(std::strtoul(std::string(blocks).c_str(), nullptr, 10));
      load->block_size =
          static_cast<std::uint32_t>(std::strtoul(std::string(bs).c_str(), nullptr, 10));
    }
  }
  load->scraped_at = Clock::now();
  // The index forgets what the engine must have evicted: capacity in our blocks.
  if (load->num_gpu_blocks > 0 && !fixed_blocks(b)) {
    const double ratio =
        load->block_size ? static_cast<double>(load->block_size) / cfg.block_size : 1.0;
    set_kv_capacity(b, static_cast<std::uint64_t>(load->num_gpu_blocks * ratio));
  }
  b.scraped_waiting.store(load->waiting, std::memory_order_relaxed);
  b.scraped_running.store(load->running, std::memory_order_relaxed);
  b.running_limit.store(
      routing::learn_running_limit(b.running_limit.load(std::memory_order_relaxed), load->waiting,
                                   load->running),
      std::memory_order_relaxed);
  b.scraped_kv_usage.store(load->kv_usage, std::memory_order_relaxed);
  b.scraped_at_ms.store(routing::steady_ms(load->scraped_at), std::memory_order_release);
  b.load.store(std::move(load));
  // What the router dispatched before the request went out is in these figures or started
  // (Backend::dispatch_epoch).
  b.unstarted_by_parity[sent_epoch & 1].store(0);
  b.settled_epoch.store(sent_epoch);
  if (flow) flow->wake();
}

http::Task<void> Router::Impl::scrape_loop() {
  auto ex = co_await net::this_coro::executor;
  net::steady_timer timer(ex);
  auto& p = *scrape_pool;
  for (;;) {
    const BackendSet members = snapshot();
    for (auto* b : *members) {
      if (!b->healthy.load() || b->removed.load()) continue;
      const std::uint32_t sent_epoch = b->dispatch_epoch.fetch_add(1);
      auto r = co_await p.get(b->endpoint, "/metrics", cfg.health_timeout, 8u << 20);
      if (r && r->first == 200) scrape(*b, r->second, sent_epoch);
    }
    timer.expires_after(cfg.metrics_scrape_interval);
    auto [ec] = co_await timer.async_wait(http::use_task_tuple);
    if (ec) co_return;
  }
}

http::Task<void> Router::Impl::health_loop() {
  auto ex = co_await net::this_coro::executor;
  net::steady_timer timer(ex);
  auto& p = *probe_pool;
  for (;;) {
    // Backends that found no free slot (their slot's last requests were draining) get one now.
    (void)resync();
    const BackendSet members = snapshot();
    for (auto* b : *members) {
      if (b->removed.load()) continue;
      auto r = co_await p.get(b->endpoint, cfg.health_path, cfg.health_timeout, 64 * 1024);
      const bool ok = r && r->first == 200;
      if (ok != b->healthy.load()) {
        spdlog::warn("backend {} is now {}", b->name, ok ? "healthy" : "unhealthy");
        if (!ok) {
          // Down: if it restarts it comes back with an empty cache. Forget what we believe it holds
          // (the engine's events rebuild the precise entries; our own decisions the approximate
          // ones).
          const auto i = static_cast<std::size_t>(b->index);
          if (precise) precise->forget_backend(i);
          routing_ctx->prefix.clear_backend(i);
        }
      }
      if (!ok) down(*b);  // its connections died with the engine, or will fail as it does
      b->healthy.store(ok);
      // A passing probe ends a passive ejection early (Envoy's default,
      // successful_active_health_check_uneject_host): an engine that crashed under load and came
      // back takes traffic within one health interval instead of waiting out the ejection.
      if (ok && b->ejected_until_ms.load() != 0) {
        spdlog::info("backend {} passed its health check: ejection ended", b->name);
        b->ejected_until_ms.store(0);
        b->consecutive_failures.store(0);
      }
      if (ok && !b->models.get()) {
        auto m = co_await p.get(b->endpoint, "/v1/models", cfg.health_timeout, 1 << 20);
        if (m && m->first == 200) {
          simdjson::dom::parser parser;
          simdjson::dom::element doc;
          if (!parser.parse(m->second).get(doc)) {
            std::vector<std::string> names;
            simdjson::dom::array data;
            if (!doc["data"].get_array().get(data)) {
              for (simdjson::dom::element e : data) {
                std::string_view id;
                if (!e["id"].get_string().get(id)) names.emplace_back(id);
              }
            }
            if (!names.empty()) {
              if (precise) precise->set_model(static_cast<std::size_t>(b->index), names.front());
              b->models.set(std::move(names));
            }
          }
        }
      }
    }
    timer.expires_after(cfg.health_interval);
    auto [ec] = co_await timer.async_wait(http::use_task_tuple);
    if (ec) co_return;
  }
}

http::ClientOptions Router::client_options() const {
  const auto& cfg = impl_->cfg;
  http::ClientOptions o;
  o.connect_timeout = cfg.connect_timeout;
  o.first_byte_timeout = cfg.first_byte_timeout;
  o.idle_timeout = cfg.idle_timeout;
  o.max_idle_per_endpoint = cfg.max_idle_per_backend;
  o.tls = impl_->upstream_tls;
  o.tls_verify = !cfg.upstream_insecure_skip_verify;
  return o;
}

void Router::start_background(http::Executor probe_ex, http::Executor scrape_ex) {
  auto& im = *impl_;
  http::ClientOptions probe = client_options();
  probe.max_idle_per_endpoint = 1;
  im.probe_pool = std::make_unique<http::ConnectionPool>(probe_ex, probe);
  im.scrape_pool = std::make_unique<http::ConnectionPool>(scrape_ex, probe);
  net::co_spawn(probe_ex, im.health_loop(), net::detached);
  if (im.cfg.metrics_scrape_interval.count() > 0) {
    net::co_spawn(scrape_ex, im.scrape_loop(), net::detached);
  }
  if (im.discovery) im.discovery->start();
}

void Router::stop() {
  if (!impl_) return;
  if (impl_->replicas) impl_->replicas->stop();
  if (impl_->flow) impl_->flow->stop();
  if (impl_->discovery) impl_->discovery->stop();
  if (impl_->precise) impl_->precise->stop();
}

}  // namespace kvroute::router
