// File: routing/scheduler.h
//
// The llm-d-style scheduling pipeline: filters narrow the candidates, scorers give each survivor a
// score in [0,1] that is summed with the scorer's weight, and a picker chooses. Plugins are named
// by role with llm-d's vocabulary where they match (prefix-cache-scorer, queue-scorer,
// kv-cache-utilization-scorer, ...) and are built from one explicit registry (make_plugin).
// Every decision carries a reason label ("prefix-hit", "session", "load-balance",
// "hotspot-spill") and, at debug level, each backend's scores.
//
// Thread-safety: plugins are stateless or internally synchronized; pick() runs on any thread.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "config/config.h"
#include "routing/policy.h"
#include "routing/prefix_index.h"

namespace kvroute::routing {

class Scorer;

// Builds a scorer of a type the routing library does not know (e.g. the precise KV-event scorer,
// which depends on routing); returns nullptr for other types.
using ScorerFactory = std::function<Result<std::unique_ptr<Scorer>>(
    const config::PluginConfig&, std::shared_ptr<struct RoutingContext>)>;

// State shared by the plugins of one router: the approximate prefix index, and scorer types
// provided by other components (set up before the policy is built).
struct RoutingContext {
  explicit RoutingContext(std::size_t backends) : prefix(backends) {}
  ApproxPrefixIndex prefix;
  std::vector<ScorerFactory> scorer_extensions;
  bool precise_available = false;  // a "precise-prefix-cache-scorer" extension is registered
  std::size_t num_backends() const { return prefix.num_backends(); }
};

// Per-decision scratch: computed once, read by every plugin.
struct CycleState {
  const RouteRequest* req = nullptr;
  std::vector<std::uint32_t> matched_blocks;  // by backend index, from the prefix index
  bool matched = false;
  std::string session_backend;  // set by the session-affinity scorer
};

class Filter {
 public:
  virtual ~Filter() = default;
  virtual std::string_view type() const = 0;
  // Removes candidates; must leave at least one when given at least one.
  virtual void filter(CycleState& state, std::vector<Backend*>& candidates) = 0;
  // After a decision (e.g. the load-share filter's counts).
  virtual void on_routed(const RouteRequest&, const Backend&) {}
};

class Scorer {
 public:
  virtual ~Scorer() = default;
  virtual std::string_view type() const = 0;
  // out[i] in [0,1] for candidates[i].
  virtual void score(CycleState& state, std::span<Backend* const> candidates,
                     std::span<double> out) = 0;
  // After a decision (e.g. speculative index entries).
  virtual void on_routed(const RouteRequest&, const Backend&) {}
};

class Picker {
 public:
  virtual ~Picker() = default;
  virtual std::string_view type() const = 0;
  virtual std::size_t pick(std::span<Backend* const> candidates,
                           std::span<const double> scores) = 0;
};

// Fills state.matched_blocks from the prefix index (once per decision).
void compute_prefix_match(RoutingContext& ctx, CycleState& state);

struct WeightedScorer {
  std::unique_ptr<Scorer> scorer;
  double weight = 1;
};

class Scheduler final : public Policy {
 public:
  Scheduler(std::string name, std::shared_ptr<RoutingContext> ctx,
            std::vector<std::unique_ptr<Filter>> filters, std::vector<WeightedScorer> scorers,
            std::unique_ptr<Picker> picker);
  std::string_view name() const override { return name_; }
  Decision pick(const RouteRequest& req, std::span<Backend* const> candidates) override;
  void on_routed(RouteRequest& req, Backend& b) override;
  void on_first_byte(RouteRequest& req, Backend& b) override;
  void on_done(RouteRequest& req, Backend& b, bool success) override;
  // The prefix index learns the blocks and the output's clock advance; filters' on_routed (the
  // load-share filter's counts are the cluster's) and scorers' (speculative entries) run; the load
  // charges do not (peers report their load). A snapshot replay of a decision the stream delivered
  // too counts it twice in the clock and the shares (bounded by the warm-up's overlap).
  void on_peer_routed(RouteRequest& req, Backend& b) override;

 private:
  std::string name_;
  std::shared_ptr<RoutingContext> ctx_;
  std::vector<std::unique_ptr<Filter>> filters_;
  std::vector<WeightedScorer> scorers_;
  std::unique_ptr<Picker> picker_;
};

// Builds one plugin from its config entry (type + YAML parameters); errors name the plugin.
Result<std::unique_ptr<Filter>> make_filter(const config::PluginConfig& pc,
                                            std::shared_ptr<RoutingContext> ctx);
Result<std::unique_ptr<Scorer>> make_scorer(const config::PluginConfig& pc,
                                            std::shared_ptr<RoutingContext> ctx);
Result<std::unique_ptr<Picker>> make_picker(const config::PluginConfig& pc);
std::vector<std::string> plugin_types();

// Builds a Scheduler from `plugins` + the first scheduling profile (llm-d's shape).
Result<std::unique_ptr<Policy>> make_configured_scheduler(const config::Config& cfg,
                                                          std::shared_ptr<RoutingContext> ctx);

// Router-side charge of a request's uncached prefill against a backend's queue.
void charge_prefill(RouteRequest& req, Backend& b, std::uint32_t matched_blocks);
void release_prefill(RouteRequest& req, Backend& b);

}  // namespace kvroute::routing
