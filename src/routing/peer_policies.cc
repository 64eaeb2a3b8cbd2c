#include "routing/internal/peer_policies.h"

#include <algorithm>
#include <cmath>

#include "common/hash.h"

namespace kvroute::routing {

Backend* SessionHash::lookup(std::string_view key, std::span<Backend* const> candidates, double c) {
  if (candidates.empty()) return nullptr;
  double total = 0;
  for (auto* b : candidates) total += b->load_inflight();
  const double bound = std::ceil(c * (total + 1) / static_cast<double>(candidates.size()));
  const std::uint64_t h = hash64(key, 0x5e55);
  // Heaviest first; few candidates (an engine pool), so a selection per rank is cheap enough.
  Backend* best = nullptr;      // heaviest under the bound
  Backend* heaviest = nullptr;  // heaviest of all: the fallback when every one is at the bound
  std::uint64_t best_w = 0, heaviest_w = 0;
  for (auto* b : candidates) {
    const std::uint64_t w = mix64(h ^ b->name_hash);
    if (!heaviest || w > heaviest_w) {
      heaviest = b;
      heaviest_w = w;
    }
    if (b->load_inflight() + 1 <= bound && (!best || w > best_w)) {
      best = b;
      best_w = w;
    }
  }
  return best ? best : heaviest;
}

namespace {

Backend* least_loaded(std::span<Backend* const> c, std::uint64_t rotate) {
  Backend* best = nullptr;
  for (std::size_t k = 0; k < c.size(); ++k) {
    Backend* b = c[(rotate + k) % c.size()];
    if (!best || b->load_inflight() < best->load_inflight()) best = b;
  }
  return best;
}

class SessionAffinity final : public Policy {
 public:
  explicit SessionAffinity(double c) : c_(c) {}
  std::string_view name() const override { return "session-affinity"; }
  bool uses_prompt() const override { return false; }
  Decision pick(const RouteRequest& req, std::span<Backend* const> c) override {
    if (req.session_key.empty()) {
      return {least_loaded(c, next_.fetch_add(1, std::memory_order_relaxed)), "no-session", {}};
    }
    Backend* b = SessionHash::lookup(req.session_key, c, c_);
    return {b, "session", {}};
  }

 private:
  double c_;
  std::atomic<std::uint64_t> next_{0};
};

// SGLang router cache_aware (sgl-model-gateway policies/cache_aware.rs, CLI defaults): if loads are
// imbalanced (max-min > abs and max > rel*min) go to the least loaded; else the longest prefix
// match if its rate exceeds cache_threshold, else the least loaded. The tree is our approximate
// prefix index (same information: the router's own past decisions).
class SglangCacheAware final : public Policy {
 public:
  SglangCacheAware(std::shared_ptr<RoutingContext> ctx, double threshold, int abs, double rel)
      : ctx_(std::move(ctx)), threshold_(threshold), abs_(abs), rel_(rel) {}
  std::string_view name() const override { return "sglang-cache-aware"; }
  Decision pick(const RouteRequest& req, std::span<Backend* const> c) override {
    int mx = 0, mn = 1 << 30;
    for (auto* b : c) {
      mx = std::max(mx, b->load_inflight());
      mn = std::min(mn, b->load_inflight());
    }
    const auto rot = next_.fetch_add(1, std::memory_order_relaxed);
    if (mx - mn > abs_ && mx > rel_ * mn) return {least_loaded(c, rot), "imbalance", {}};
    std::vector<std::uint32_t> m;
    ctx_->prefix.match(req.blocks, m);
    Backend* best = nullptr;
    std::uint32_t best_m = 0;
    for (auto* b : c) {
      auto v = m.empty() ? 0u : m[static_cast<std::size_t>(b->index)];
      if (v > best_m ||
          (v == best_m && best && v > 0 && b->load_inflight() < best->load_inflight())) {
        best = b;
        best_m = v;
      }
    }
    const double rate = req.blocks.empty() ? 0 : static_cast<double>(best_m) / req.blocks.size();
    if (best && rate > threshold_) return {best, "prefix-hit", {}, best_m};
    return {least_loaded(c, rot), "load-balance", {}, 0};
  }
  void on_routed(RouteRequest& req, Backend& b) override {
    // A radix tree grows by the tokens it did not hold: only those age the others.
    const auto i = static_cast<std::size_t>(b.index);
    ctx_->prefix.insert(i, req.blocks, ctx_->prefix.held(i, req.blocks));
  }

 private:
  std::shared_ptr<RoutingContext> ctx_;
  double threshold_;
  int abs_;
  double rel_;
  std::atomic<std::uint64_t> next_{0};
};

// Dynamo KV router (lib/kv-router): logit = w * prefill_blocks + active_blocks, argmin (temperature
// 0); prefill_blocks = uncached prompt blocks on that worker, active_blocks = blocks of requests in
// flight there (router-tracked, including this one's decode estimate).
class DynamoCost final : public Policy {
 public:
  DynamoCost(std::shared_ptr<RoutingContext> ctx, double w) : ctx_(std::move(ctx)), w_(w) {}
  std::string_view name() const override { return "dynamo-cost"; }
  Decision pick(const RouteRequest& req, std::span<Backend* const> c) override {
    std::vector<std::uint32_t> m;
    ctx_->prefix.match(req.blocks, m);
    const double bs = std::max<std::uint32_t>(1, req.tokens_per_block);
    const double isl_blocks = req.prompt_tokens / bs;
    Backend* best = nullptr;
    double best_logit = 0;
    std::uint32_t best_m = 0;
    for (auto* b : c) {
      const std::uint32_t mb = m.empty() ? 0 : m[static_cast<std::size_t>(b->index)];
      const double prefill = std::max(0.0, isl_blocks - mb);
      const double active = static_cast<double>(b->active_blocks.load(std::memory_order_relaxed));
      const double logit = w_ * prefill + active;
      if (!best || logit < best_logit) {
        best = b;
        best_logit = logit;
        best_m = mb;
      }
    }
    return {best, best_m > 0 ? "prefix-hit" : "load-balance", {}, best_m};
  }
  void on_routed(RouteRequest& req, Backend& b) override {
    const double bs = std::max<std::uint32_t>(1, req.tokens_per_block);
    req.charged_tokens =
        static_cast<std::int64_t>((req.prompt_tokens + req.expected_output_tokens) / bs) + 1;
    b.active_blocks.fetch_add(req.charged_tokens);
    const auto i = static_cast<std::size_t>(b.index);
    ctx_->prefix.insert(i, req.blocks, ctx_->prefix.held(i, req.blocks));
  }
  void on_done(RouteRequest& req, Backend& b, bool) override {
    b.active_blocks.fetch_sub(req.charged_tokens);
  }

 private:
  std::shared_ptr<RoutingContext> ctx_;
  double w_;
};

}  // namespace

std::unique_ptr<Policy> make_session_affinity(double load_bound) {
  return std::make_unique<SessionAffinity>(load_bound);
}
std::unique_ptr<Policy> make_sglang_cache_aware(std::shared_ptr<RoutingContext> ctx, double t,
                                                int abs, double rel) {
  return std::make_unique<SglangCacheAware>(std::move(ctx), t, abs, rel);
}
std::unique_ptr<Policy> make_dynamo_cost(std::shared_ptr<RoutingContext> ctx, double w) {
  return std::make_unique<DynamoCost>(std::move(ctx), w);
}

}  // namespace kvroute::routing
