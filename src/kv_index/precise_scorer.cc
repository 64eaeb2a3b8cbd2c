#include "kv_index/precise_scorer.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

namespace kvroute::kv_index {

PrecisePrefixScorer::PrecisePrefixScorer(std::shared_ptr<PreciseIndexer> indexer,
                                         std::shared_ptr<routing::RoutingContext> ctx,
                                         PreciseScorerOptions options)
    : indexer_(std::move(indexer)), ctx_(std::move(ctx)), opts_(options) {}

bool PrecisePrefixScorer::token_blocks(const routing::RouteRequest& req) const {
  return indexer_ && (!req.tokens.empty() || req.peer_token_blocks) &&
         req.tokens_per_block == indexer_->index().block_size();
}

void PrecisePrefixScorer::score(routing::CycleState& s, std::span<routing::Backend* const> c,
                                std::span<double> out) {
  const routing::RouteRequest& req = *s.req;
  const double total = static_cast<double>(req.blocks.size());
  if (total == 0) {
    for (std::size_t i = 0; i < c.size(); ++i) out[i] = 0;
    return;
  }
  // The approximate match: the fallback, computed once per decision and shared with other plugins.
  if (ctx_) routing::compute_prefix_match(*ctx_, s);
  auto approx = [&](std::size_t b) -> double {
    return b < s.matched_blocks.size() ? static_cast<double>(s.matched_blocks[b]) : 0.0;
  };
  if (!token_blocks(req)) {
    for (std::size_t i = 0; i < c.size(); ++i)
      out[i] = approx(static_cast<std::size_t>(c[i]->index)) / total;
    return;
  }
  thread_local std::vector<std::uint32_t> runs;
  thread_local std::vector<double> weighted;
  indexer_->index().match(req.blocks, runs, &weighted);
  for (std::size_t i = 0; i < c.size(); ++i) {
    const auto b = static_cast<std::size_t>(c[i]->index);
    if (b < runs.size() && indexer_->has_precise(b)) {
      out[i] = std::min(1.0, weighted[b] / total);
      if (opts_.export_match && b < s.matched_blocks.size()) s.matched_blocks[b] = runs[b];
    } else {
      out[i] = approx(b) / total;
    }
  }
}

void PrecisePrefixScorer::on_routed(const routing::RouteRequest& req,
                                    const routing::Backend& chosen) {
  if (!opts_.speculative || !token_blocks(req)) return;
  indexer_->on_routed(static_cast<std::size_t>(chosen.index), req.blocks);
}

Result<std::unique_ptr<routing::Scorer>> make_precise_scorer(
    const config::PluginConfig& pc, std::shared_ptr<routing::RoutingContext> ctx,
    std::shared_ptr<PreciseIndexer> indexer) {
  if (pc.type != kPreciseScorerType) return nullptr;
  if (!indexer) {
    return fail(
        Error::invalid(fmt::format("plugin '{}' (line {}): {} needs at least one backend with "
                                   "kv_events_endpoint",
                                   pc.name, pc.line, kPreciseScorerType)));
  }
  PreciseScorerOptions o;
  try {
    const YAML::Node p = YAML::Load(pc.parameters_yaml.empty() ? "{}" : pc.parameters_yaml);
    if (p.IsMap()) {
      if (auto n = p["exportMatch"]) o.export_match = n.as<bool>();
      if (auto n = p["speculative"]) o.speculative = n.as<bool>();
    } else if (!p.IsNull()) {
      return fail(Error::invalid(
          fmt::format("plugin '{}' (line {}): parameters must be a map", pc.name, pc.line)));
    }
  } catch (const YAML::Exception& e) {
    return fail(
        Error::invalid(fmt::format("plugin '{}' (line {}): {}", pc.name, pc.line, e.what())));
  }
  return std::make_unique<PrecisePrefixScorer>(std::move(indexer), std::move(ctx), o);
}

}  // namespace kvroute::kv_index
