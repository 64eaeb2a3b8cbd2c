#include "routing/scheduler.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <random>

namespace kvroute::routing {

void compute_prefix_match(RoutingContext& ctx, CycleState& state) {
  if (state.matched) return;
  ctx.prefix.match(state.req->blocks, state.matched_blocks);
  state.matched = true;
}

void charge_prefill(RouteRequest& req, Backend& b, std::uint32_t matched_blocks) {
  const std::int64_t cached = static_cast<std::int64_t>(matched_blocks) * req.tokens_per_block;
  req.charged_tokens =
      std::max<std::int64_t>(0, static_cast<std::int64_t>(req.prompt_tokens) - cached);
  b.inflight_tokens.fetch_add(req.charged_tokens, std::memory_order_relaxed);
}

void release_prefill(RouteRequest& req, Backend& b) {
  if (req.prefill_done) return;
  req.prefill_done = true;
  b.inflight_tokens.fetch_sub(req.charged_tokens, std::memory_order_relaxed);
}

namespace {

double param(const YAML::Node& p, const char* key, double def) {
  auto n = p[key];
  return n ? n.as<double>() : def;
}

// Min-max normalisation so that the lowest cost scores 1 (1 for all when equal).
void score_low_is_good(std::span<const double> cost, std::span<double> out) {
  if (cost.empty()) return;
  auto [mn, mx] = std::minmax_element(cost.begin(), cost.end());
  for (std::size_t i = 0; i < cost.size(); ++i)
    out[i] = *mx == *mn ? 1.0 : (*mx - cost[i]) / (*mx - *mn);
}

bool load_fresh(const Backend& b) {
  auto l = b.load.load();
  return l && std::chrono::steady_clock::now() - l->scraped_at < std::chrono::seconds(5);
}

// --- filters ---------------------------------------------------------------------------------

// Hot-spot protection (consistent hashing with bounded loads, Mirrokni et al. 2018): a backend may
// take a new request only while its in-flight count stays within (1+epsilon) of the mean, or below
// `minInflight`: with a few requests in flight the mean is noise (two requests for one prefix
// arriving together would otherwise push the second off the engine that holds it; ADR 0024).
class BoundedLoadFilter final : public Filter {
 public:
  BoundedLoadFilter(double eps, double min_inflight) : eps_(eps), min_(min_inflight) {}
  std::string_view type() const override { return "bounded-load-filter"; }
  void filter(CycleState&, std::vector<Backend*>& c) override {
    if (c.size() <= 1) return;
    double total = 0;
    for (auto* b : c) total += b->load_inflight();
    const double bound =
        std::max(min_, std::ceil((1 + eps_) * (total + 1) / static_cast<double>(c.size())));
    std::vector<Backend*> keep;
    for (auto* b : c) {
      if (b->load_inflight() + 1 <= bound) keep.push_back(b);
    }
    if (!keep.empty()) c.swap(keep);
  }

 private:
  double eps_;
  double min_;
};

// Share of recent requests (ADR 0024): a backend may take a new request only while its share of
// the last ~`window` requests routed (exponentially decayed counts) stays within `maxShare` of the
// mean, as the load-capped longest-prefix oracle of `kvroute bench` is held to; the first requests
// may go anywhere that has had none. A conversation's follow-up turn is exempt by default: its
// history lives on one engine, and balance comes from where new conversations start.
class LoadShareFilter final : public Filter {
 public:
  LoadShareFilter(double max_share, double slack, double window, bool exempt_conversations)
      : max_share_(max_share),
        slack_(slack),
        decay_(window > 1 ? 1 - 1 / window : 0),
        exempt_(exempt_conversations) {}
  std::string_view type() const override { return "load-share-filter"; }
  void filter(CycleState& s, std::vector<Backend*>& c) override {
    if (c.size() <= 1 || (exempt_ && s.req->conversation)) return;
    std::lock_guard lock(mu_);
    const double next = decay_ > 0 ? inc_ / decay_ : 1;
    double sum = 0;
    for (auto* b : c) sum += share_of(b->index);
    const double mean = (sum + next) / static_cast<double>(c.size());
    const double bound = std::max({next, max_share_ * mean, mean + slack_ * next});
    std::vector<Backend*> keep;
    for (auto* b : c) {
      if (share_of(b->index) + next <= bound * (1 + 1e-9)) keep.push_back(b);
    }
    if (!keep.empty()) c.swap(keep);
  }
  void on_routed(const RouteRequest&, const Backend& b) override {
    if (b.index < 0) return;
    std::lock_guard lock(mu_);
    const auto i = static_cast<std::size_t>(b.index);
    if (share_.size() <= i) share_.resize(i + 1, 0.0);
    // Decay by growing the increment instead of shrinking every count; rescale before overflow.
    if (decay_ > 0) inc_ /= decay_;
    share_[i] += inc_;
    if (inc_ > 1e200) {
      for (auto& v : share_) v /= inc_;
      inc_ = 1;
    }
  }

 private:
  double share_of(int index) const {
    const auto i = static_cast<std::size_t>(index);
    return index >= 0 && i < share_.size() ? share_[i] : 0.0;
  }
  double max_share_;
  double slack_;
  double decay_;
  bool exempt_;
  std::mutex mu_;
  std::vector<double> share_;  // by backend index, in units of inc_ at routing time
  double inc_ = 1;
};

// llm-d's prefix-cache-affinity-filter: keep endpoints whose prefix score reaches the threshold.
class PrefixAffinityFilter final : public Filter {
 public:
  PrefixAffinityFilter(std::shared_ptr<RoutingContext> ctx, double threshold)
      : ctx_(std::move(ctx)), t_(threshold) {}
  std::string_view type() const override { return "prefix-cache-affinity-filter"; }
  void filter(CycleState& s, std::vector<Backend*>& c) override {
    if (s.req->blocks.empty()) return;
    compute_prefix_match(*ctx_, s);
    std::vector<Backend*> keep;
    for (auto* b : c) {
      if (static_cast<double>(s.matched_blocks[static_cast<std::size_t>(b->index)]) /
              s.req->blocks.size() >=
          t_) {
        keep.push_back(b);
      }
    }
    if (!keep.empty()) c.swap(keep);
  }

 private:
  std::shared_ptr<RoutingContext> ctx_;
  double t_;
};

// --- scorers ---------------------------------------------------------------------------------

// GIE/llm-d prefix-cache-scorer: w*min(1, matched_tokens/scale)^2 + (1-w)*matched/total blocks.
class PrefixCacheScorer final : public Scorer {
 public:
  PrefixCacheScorer(std::shared_ptr<RoutingContext> ctx, double w, double scale)
      : ctx_(std::move(ctx)), w_(w), scale_(scale) {}
  std::string_view type() const override { return "prefix-cache-scorer"; }
  void score(CycleState& s, std::span<Backend* const> c, std::span<double> out) override {
    compute_prefix_match(*ctx_, s);
    const double total = static_cast<double>(s.req->blocks.size());
    for (std::size_t i = 0; i < c.size(); ++i) {
      const double m = s.matched_blocks[static_cast<std::size_t>(c[i]->index)];
      const double tok = m * s.req->tokens_per_block;
      out[i] =
          total == 0 ? 0 : w_ * std::pow(std::min(1.0, tok / scale_), 2) + (1 - w_) * m / total;
    }
  }

 private:
  std::shared_ptr<RoutingContext> ctx_;
  double w_, scale_;
};

// queue-scorer: min-max of the engine's waiting queue (scraped), router in-flight when stale.
class QueueScorer final : public Scorer {
 public:
  std::string_view type() const override { return "queue-scorer"; }
  void score(CycleState&, std::span<Backend* const> c, std::span<double> out) override {
    std::vector<double> q(c.size());
    for (std::size_t i = 0; i < c.size(); ++i) {
      auto l = c[i]->load.load();
      q[i] = load_fresh(*c[i]) ? l->waiting : c[i]->load_inflight();
    }
    score_low_is_good(q, out);
  }
};

class KvUtilizationScorer final : public Scorer {
 public:
  std::string_view type() const override { return "kv-cache-utilization-scorer"; }
  void score(CycleState&, std::span<Backend* const> c, std::span<double> out) override {
    for (std::size_t i = 0; i < c.size(); ++i) {
      auto l = c[i]->load.load();
      out[i] = load_fresh(*c[i]) ? std::clamp(1.0 - l->kv_usage, 0.0, 1.0) : 0.5;
    }
  }
};

// active-request-scorer: router-tracked in-flight requests, min-max.
class ActiveRequestScorer final : public Scorer {
 public:
  std::string_view type() const override { return "active-request-scorer"; }
  void score(CycleState&, std::span<Backend* const> c, std::span<double> out) override {
    std::vector<double> q(c.size());
    for (std::size_t i = 0; i < c.size(); ++i) q[i] = c[i]->load_inflight();
    score_low_is_good(q, out);
  }
};

// load-aware-scorer (llm-d): q=0 -> 0.5; q >= threshold -> 0; else 0.5(1 - q/threshold).
class LoadAwareScorer final : public Scorer {
 public:
  explicit LoadAwareScorer(double threshold) : t_(threshold) {}
  std::string_view type() const override { return "load-aware-scorer"; }
  void score(CycleState&, std::span<Backend* const> c, std::span<double> out) override {
    for (std::size_t i = 0; i < c.size(); ++i) {
      auto l = c[i]->load.load();
      const double q = load_fresh(*c[i]) ? l->waiting : c[i]->load_inflight();
      out[i] = q <= 0 ? 0.5 : q >= t_ ? 0.0 : 0.5 * (1 - q / t_);
    }
  }

 private:
  double t_;
};

// kvroute's own: predicted time to first token, in tokens of prefill work ahead of the request on
// each backend (its own uncached prompt tokens + the uncached tokens the router sent there that
// have not started decoding + a per-running-request decode penalty), plus the prefill work the
// choice adds to the cluster (its uncached tokens again, weight uncachedWeight - 1): two backends
// with equal predicted TTFT differ in how much capacity they burn, and the cached one keeps it.
// A conversation's follow-up turn (RouteRequest::conversation) weighs its uncached tokens
// conversationUncachedWeight instead: its history is private, so a copy made elsewhere leaves the
// old one as dead cache that evicts other conversations (docs/adr/0010). Lowest cost scores 1.
class TtftCostScorer final : public Scorer {
 public:
  TtftCostScorer(std::shared_ptr<RoutingContext> ctx, double decode_tokens_per_request,
                 double uncached_weight, double conversation_uncached_weight, double kv_fraction,
                 double kv_weight)
      : ctx_(std::move(ctx)),
        decode_(decode_tokens_per_request),
        uncached_(uncached_weight),
        conversation_uncached_(conversation_uncached_weight),
        kv_fraction_(kv_fraction),
        kv_weight_(kv_weight) {}
  std::string_view type() const override { return "ttft-cost-scorer"; }
  void score(CycleState& s, std::span<Backend* const> c, std::span<double> out) override {
    compute_prefix_match(*ctx_, s);
    std::vector<double> cost(c.size());
    const double uncached_weight = s.req->conversation ? conversation_uncached_ : uncached_;
    for (std::size_t i = 0; i < c.size(); ++i) {
      const double cached =
          static_cast<double>(s.matched_blocks[static_cast<std::size_t>(c[i]->index)]) *
          s.req->tokens_per_block;
      const double own = std::max(0.0, static_cast<double>(s.req->prompt_tokens) - cached);
      double queued = static_cast<double>(c[i]->load_inflight_tokens());
      if (auto l = c[i]->load.load(); l && load_fresh(*c[i])) {
        // The engine's own waiting queue covers other routers' traffic too.
        queued = std::max(queued, l->waiting * s.req->prompt_tokens * 0.5);
      }
      cost[i] = uncached_weight * own + queued + decode_ * c[i]->load_inflight();
      // KV memory: a request that does not fit next to the ones in flight waits in the engine's
      // queue until enough of them finish (or preempts one): each token over kvCapacityFraction
      // of the engine's KV capacity costs kvOverflowWeight tokens of prefill.
      if (const auto cap = c[i]->kv_capacity_tokens.load(std::memory_order_relaxed);
          cap > 0 && kv_weight_ > 0) {
        const double limit = kv_fraction_ * static_cast<double>(cap);
        const double held =
            static_cast<double>(c[i]->inflight_blocks.unique_blocks()) * s.req->tokens_per_block +
            static_cast<double>(c[i]->inflight_output_tokens.load(std::memory_order_relaxed));
        double need = held + s.req->prompt_tokens + s.req->expected_output_tokens;
        // Near the limit only: the part of the prompt that requests in flight there already pin
        // (a shared document or system prompt) takes no new memory.
        if (need > limit) {
          need -= static_cast<double>(c[i]->inflight_blocks.shared_prefix(s.req->blocks)) *
                  s.req->tokens_per_block;
        }
        cost[i] += kv_weight_ * std::max(0.0, need - limit);
      }
    }
    score_low_is_good(cost, out);
  }

 private:
  std::shared_ptr<RoutingContext> ctx_;
  double decode_;
  double uncached_;
  double conversation_uncached_;
  double kv_fraction_;
  double kv_weight_;
};

// --- pickers ---------------------------------------------------------------------------------

class MaxScorePicker final : public Picker {
 public:
  std::string_view type() const override { return "max-score-picker"; }
  std::size_t pick(std::span<Backend* const> c, std::span<const double> scores) override {
    // Ties go to the least loaded, then rotate.
    const std::size_t start = next_.fetch_add(1, std::memory_order_relaxed) % c.size();
    std::size_t best = start;
    for (std::size_t k = 1; k < c.size(); ++k) {
      std::size_t i = (start + k) % c.size();
      if (scores[i] > scores[best] + 1e-12 || (std::fabs(scores[i] - scores[best]) <= 1e-12 &&
                                               c[i]->load_inflight() < c[best]->load_inflight())) {
        best = i;
      }
    }
    return best;
  }

 private:
  std::atomic<std::uint64_t> next_{0};
};

class RandomPicker final : public Picker {
 public:
  std::string_view type() const override { return "random-picker"; }
  std::size_t pick(std::span<Backend* const> c, std::span<const double>) override {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    return rng() % c.size();
  }
};

}  // namespace

Scheduler::Scheduler(std::string name, std::shared_ptr<RoutingContext> ctx,
                     std::vector<std::unique_ptr<Filter>> filters,
                     std::vector<WeightedScorer> scorers, std::unique_ptr<Picker> picker)
    : name_(std::move(name)),
      ctx_(std::move(ctx)),
      filters_(std::move(filters)),
      scorers_(std::move(scorers)),
      picker_(picker ? std::move(picker) : std::make_unique<MaxScorePicker>()) {}

Decision Scheduler::pick(const RouteRequest& req, std::span<Backend* const> candidates) {
  CycleState state;
  state.req = &req;
  std::vector<Backend*> c(candidates.begin(), candidates.end());
  for (auto& f : filters_) f->filter(state, c);
  std::vector<double> total(c.size(), 0.0), part(c.size());
  for (auto& ws : scorers_) {
    std::fill(part.begin(), part.end(), 0.0);
    ws.scorer->score(state, c, part);
    for (std::size_t i = 0; i < c.size(); ++i)
      total[i] += ws.weight * std::clamp(part[i], 0.0, 1.0);
  }
  const std::size_t w = picker_->pick(c, total);
  Decision d;
  d.backend = c[w];
  // Reason: did the winner hold the best prefix among all candidates, was it spilled, or load?
  if (!state.matched && !req.blocks.empty()) compute_prefix_match(*ctx_, state);
  std::uint32_t best_all = 0;
  for (auto* b : candidates)
    best_all = std::max(best_all, state.matched_blocks[static_cast<std::size_t>(b->index)]);
  const std::uint32_t mine =
      req.blocks.empty() ? 0 : state.matched_blocks[static_cast<std::size_t>(d.backend->index)];
  d.predicted_blocks = mine;
  if (mine > 0 && mine == best_all) {
    d.reason = "prefix-hit";
  } else if (best_all > 0 && mine < best_all) {
    d.reason = "hotspot-spill";
  } else {
    d.reason = "load-balance";
  }
  if (req.want_detail || spdlog::should_log(spdlog::level::debug)) {
    for (std::size_t i = 0; i < c.size(); ++i) {
      d.detail += fmt::format(
          "{}{}: matched={}/{} inflight={} queued_tokens={} score={:.3f}", i ? "; " : "",
          c[i]->name,
          req.blocks.empty() ? 0 : state.matched_blocks[static_cast<std::size_t>(c[i]->index)],
          req.blocks.size(), c[i]->load_inflight(), c[i]->load_inflight_tokens(), total[i]);
    }
  }
  return d;
}

void Scheduler::on_routed(RouteRequest& req, Backend& b) {
  const auto i = static_cast<std::size_t>(b.index);
  const std::uint32_t held = ctx_->prefix.held(i, req.blocks);
  charge_prefill(req, b, held);
  b.inflight_output_tokens.fetch_add(req.expected_output_tokens, std::memory_order_relaxed);
  b.inflight_blocks.add(req.blocks);
  req.kv_pinned = true;
  ctx_->prefix.insert(i, req.blocks, held);
  for (auto& f : filters_) f->on_routed(req, b);
  for (auto& ws : scorers_) ws.scorer->on_routed(req, b);
}

void Scheduler::on_peer_routed(RouteRequest& req, Backend& b) {
  const auto i = static_cast<std::size_t>(b.index);
  ctx_->prefix.insert(i, req.blocks, ctx_->prefix.held(i, req.blocks));
  if (req.tokens_per_block > 0)
    ctx_->prefix.advance(i, req.expected_output_tokens / req.tokens_per_block);
  // The filters count it too: the load-share filter's shares are the cluster's, not this
  // replica's slice of them.
  for (auto& f : filters_) f->on_routed(req, b);
  for (auto& ws : scorers_) ws.scorer->on_routed(req, b);
}

void Scheduler::on_first_byte(RouteRequest& req, Backend& b) { release_prefill(req, b); }

void Scheduler::on_done(RouteRequest& req, Backend& b, bool) {
  release_prefill(req, b);
  if (req.kv_pinned) {
    b.inflight_output_tokens.fetch_sub(req.expected_output_tokens, std::memory_order_relaxed);
    b.inflight_blocks.remove(req.blocks);
    req.kv_pinned = false;
  }
  // Generated tokens occupied blocks too: advance the backend's LRU clock.
  if (req.tokens_per_block > 0)
    ctx_->prefix.advance(static_cast<std::size_t>(b.index),
                         req.expected_output_tokens / req.tokens_per_block);
}

std::vector<std::string> plugin_types() {
  return {"bounded-load-filter",         "load-share-filter", "prefix-cache-affinity-filter",
          "prefix-cache-scorer",         "queue-scorer",      "kv-cache-utilization-scorer",
          "active-request-scorer",       "load-aware-scorer", "ttft-cost-scorer",
          "precise-prefix-cache-scorer", "max-score-picker",  "random-picker"};
}

namespace {
Result<YAML::Node> params_of(const config::PluginConfig& pc) {
  try {
    return YAML::Load(pc.parameters_yaml.empty() ? "{}" : pc.parameters_yaml);
  } catch (const YAML::Exception& e) {
    return fail(Error::invalid(fmt::format("plugin '{}': bad parameters: {}", pc.name, e.what())));
  }
}
}  // namespace

Result<std::unique_ptr<Filter>> make_filter(const config::PluginConfig& pc,
                                            std::shared_ptr<RoutingContext> ctx) {
  KVROUTE_TRY(YAML::Node p, params_of(pc));
  try {
    if (pc.type == "bounded-load-filter")
      return std::make_unique<BoundedLoadFilter>(param(p, "epsilon", 0.25),
                                                 param(p, "minInflight", 0));
    if (pc.type == "load-share-filter") {
      const double share = param(p, "maxShare", 1.1), slack = param(p, "slack", 8),
                   window = param(p, "window", 1000);
      if (!(share >= 1) || !(slack >= 0) || !(window >= 1)) {
        return fail(Error::invalid(fmt::format(
            "plugin '{}': maxShare must be >= 1, slack >= 0 and window >= 1 (got {}, {}, {})",
            pc.name, share, slack, window)));
      }
      auto ex = p["exemptConversations"];
      return std::make_unique<LoadShareFilter>(share, slack, window, ex ? ex.as<bool>() : true);
    }
    if (pc.type == "prefix-cache-affinity-filter") {
      return std::make_unique<PrefixAffinityFilter>(std::move(ctx),
                                                    param(p, "affinityThreshold", 0.8));
    }
  } catch (const YAML::Exception& e) {
    return fail(
        Error::invalid(fmt::format("plugin '{}' (line {}): {}", pc.name, pc.line, e.what())));
  }
  return nullptr;
}

Result<std::unique_ptr<Scorer>> make_scorer(const config::PluginConfig& pc,
                                            std::shared_ptr<RoutingContext> ctx) {
  for (const auto& ext : ctx->scorer_extensions) {
    KVROUTE_TRY(auto s, ext(pc, ctx));
    if (s) return s;
  }
  KVROUTE_TRY(YAML::Node p, params_of(pc));
  try {
    if (pc.type == "prefix-cache-scorer") {
      return std::make_unique<PrefixCacheScorer>(std::move(ctx), param(p, "matchLengthWeight", 0.0),
                                                 param(p, "matchLengthScaleTokens", 8192));
    }
    if (pc.type == "queue-scorer") return std::make_unique<QueueScorer>();
    if (pc.type == "kv-cache-utilization-scorer") return std::make_unique<KvUtilizationScorer>();
    if (pc.type == "active-request-scorer") return std::make_unique<ActiveRequestScorer>();
    if (pc.type == "load-aware-scorer")
      return std::make_unique<LoadAwareScorer>(param(p, "threshold", 128));
    if (pc.type == "ttft-cost-scorer") {
      return std::make_unique<TtftCostScorer>(
          std::move(ctx), param(p, "decodeTokensPerRequest", 64), param(p, "uncachedWeight", 2.0),
          param(p, "conversationUncachedWeight", 4.0), param(p, "kvCapacityFraction", 0.9),
          param(p, "kvOverflowWeight", 4.0));
    }
  } catch (const YAML::Exception& e) {
    return fail(
        Error::invalid(fmt::format("plugin '{}' (line {}): {}", pc.name, pc.line, e.what())));
  }
  return nullptr;
}

Result<std::unique_ptr<Picker>> make_picker(const config::PluginConfig& pc) {
  if (pc.type == "max-score-picker") return std::make_unique<MaxScorePicker>();
  if (pc.type == "random-picker") return std::make_unique<RandomPicker>();
  return nullptr;
}

Result<std::unique_ptr<Policy>> make_configured_scheduler(const config::Config& cfg,
                                                          std::shared_ptr<RoutingContext> ctx) {
  std::vector<std::unique_ptr<Filter>> filters;
  std::vector<WeightedScorer> scorers;
  std::unique_ptr<Picker> picker;
  auto add = [&](const config::PluginConfig& pc, double weight) -> Status {
    KVROUTE_TRY(auto f, make_filter(pc, ctx));
    if (f) {
      filters.push_back(std::move(f));
      return {};
    }
    KVROUTE_TRY(auto s, make_scorer(pc, ctx));
    if (s) {
      scorers.push_back({std::move(s), weight});
      return {};
    }
    KVROUTE_TRY(auto p, make_picker(pc));
    if (p) {
      picker = std::move(p);
      return {};
    }
    std::string known;
    for (const auto& t : plugin_types()) known += (known.empty() ? "" : ", ") + t;
    return fail(Error::invalid(fmt::format("plugin '{}' (line {}): unknown type '{}' (known: {})",
                                           pc.name, pc.line, pc.type, known)));
  };
  if (cfg.profiles.empty()) {
    // llm-d's loader default: one profile with every plugin, weight 1.
    for (const auto& pc : cfg.plugins) {
      if (auto s = add(pc, 1.0); !s) return fail(s.error());
    }
  } else {
    for (const auto& ref : cfg.profiles.front().plugins) {
      for (const auto& pc : cfg.plugins) {
        if (pc.name != ref.plugin_ref) continue;
        if (auto s = add(pc, ref.weight); !s) return fail(s.error());
      }
    }
  }
  if (scorers.empty() && !picker)
    return fail(Error::invalid("scheduling profile has no scorer and no picker"));
  const std::string name = cfg.profiles.empty() ? "custom" : cfg.profiles.front().name;
  return std::unique_ptr<Policy>(std::make_unique<Scheduler>(
      name, std::move(ctx), std::move(filters), std::move(scorers), std::move(picker)));
}

}  // namespace kvroute::routing
