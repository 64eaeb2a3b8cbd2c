#include "routing/policy.h"

#include "routing/internal/peer_policies.h"
#include "routing/internal/simple_policies.h"
#include "routing/scheduler.h"

namespace kvroute::routing {

std::vector<std::string> policy_names() {
  return {"round-robin", "random",      "least-inflight", "session-affinity", "sglang-cache-aware",
          "gie-prefix",  "dynamo-cost", "kvroute",        "kvroute-approx"};
}

namespace {
config::PluginConfig plugin(std::string type, std::string params = "{}") {
  config::PluginConfig p;
  p.name = type;
  p.type = std::move(type);
  p.parameters_yaml = std::move(params);
  return p;
}

Result<std::unique_ptr<Policy>> preset(const std::string& name,
                                       std::vector<config::PluginConfig> plugins,
                                       std::vector<double> weights,
                                       std::shared_ptr<RoutingContext> ctx) {
  config::Config c;
  config::SchedulingProfile prof;
  prof.name = name;
  for (std::size_t i = 0; i < plugins.size(); ++i)
    prof.plugins.push_back({plugins[i].name, weights[i]});
  c.plugins = std::move(plugins);
  c.profiles.push_back(std::move(prof));
  return make_configured_scheduler(c, std::move(ctx));
}
}  // namespace

Result<std::unique_ptr<Policy>> make_policy(const config::Config& cfg,
                                            std::span<Backend* const> backends,
                                            std::shared_ptr<RoutingContext> ctx) {
  if (!ctx) ctx = std::make_shared<RoutingContext>(backends.size());
  if (!cfg.plugins.empty()) return make_configured_scheduler(cfg, ctx);
  const auto& n = cfg.policy;
  if (n == "round-robin") return make_round_robin();
  if (n == "random") return make_random();
  if (n == "least-inflight") return make_least_inflight();
  if (n == "session-affinity") return make_session_affinity(1.25);
  // SGLang's CLI defaults: cache_threshold 0.3, balance_abs 64, balance_rel 1.5.
  if (n == "sglang-cache-aware") return make_sglang_cache_aware(ctx, 0.3, 64, 1.5);
  if (n == "dynamo-cost") return make_dynamo_cost(ctx, 1.0);
  // llm-d's "optimized baseline" weights: prefix 3, queue 2, kv-cache utilization 2.
  if (n == "gie-prefix") {
    return preset(n,
                  {plugin("prefix-cache-scorer"), plugin("queue-scorer"),
                   plugin("kv-cache-utilization-scorer"), plugin("max-score-picker")},
                  {3, 2, 2, 1}, ctx);
  }
  // kvroute: a bounded share of recent requests first (no hot spots; conversations stay where
  // their history is), then the predicted time to first token with uncached prefill weighed as
  // the capacity it burns (ADR 0024). With KV events configured the precise index supplies the
  // matches (weight 0: it only exports them to the cost scorer); "kvroute-approx" forces the
  // router's own approximate index.
  if (n == "kvroute" || n == "kvroute-approx") {
    std::vector<config::PluginConfig> plugins{
        plugin("load-share-filter", "{maxShare: 1.25, slack: 16, window: 1000}")};
    std::vector<double> weights{1};
    if (n == "kvroute" && ctx->precise_available) {
      plugins.push_back(plugin("precise-prefix-cache-scorer"));
      weights.push_back(0);
    }
    plugins.push_back(
        plugin("ttft-cost-scorer", "{uncachedWeight: 6, conversationUncachedWeight: 8}"));
    plugins.push_back(plugin("max-score-picker"));
    weights.push_back(1);
    weights.push_back(1);
    return preset(n, std::move(plugins), std::move(weights), ctx);
  }
  std::string known;
  for (const auto& p : policy_names()) known += (known.empty() ? "" : ", ") + p;
  return fail(Error::invalid("unknown policy '" + n + "' (known: " + known + ")"));
}

}  // namespace kvroute::routing
