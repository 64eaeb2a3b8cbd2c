// File: kv_index/precise_scorer.h
//
// PrecisePrefixScorer, plugin type "precise-prefix-cache-scorer" (llm-d's name): scores each
// candidate by the longest run of the prompt's blocks that the engine really holds, from the
// precise index fed by KV events:
//     score = sum over the run of the best tier's weight (GPU 1.0, CPU 0.8) / total blocks.
// Fallback to the approximate index (routing::compute_prefix_match, CycleState::matched_blocks) for
// candidates without precise info (no event endpoint, or stale: kv_index/precise_indexer.h), and
// for every candidate when the request's blocks are not token blocks (no router tokenizer: then
// RouteRequest::tokens is empty and the blocks are character blocks the index cannot know) or use
// another block size than the index.
// With exportMatch (default true) the scorer also writes the merged run lengths into
// CycleState::matched_blocks, so the scorers configured after it (ttft-cost-scorer) and the
// decision's reason label use the precise figures.
// on_routed(): the speculative hook; the proxy (or Scheduler::on_routed) calls it with the chosen
// backend after each decision.
//
// Parameters (YAML): exportMatch (bool, true), speculative (bool, true).
// Thread-safety: score() and on_routed() run concurrently on router worker threads.
#pragma once

#include <memory>
#include <span>
#include <string_view>

#include "common/result.h"
#include "config/config.h"
#include "kv_index/precise_indexer.h"
#include "routing/scheduler.h"

namespace kvroute::kv_index {

inline constexpr std::string_view kPreciseScorerType = "precise-prefix-cache-scorer";

struct PreciseScorerOptions {
  bool export_match = true;
  bool speculative = true;
};

class PrecisePrefixScorer final : public routing::Scorer {
 public:
  PrecisePrefixScorer(std::shared_ptr<PreciseIndexer> indexer,
                      std::shared_ptr<routing::RoutingContext> ctx,
                      PreciseScorerOptions options = {});
  std::string_view type() const override { return kPreciseScorerType; }
  void score(routing::CycleState& state, std::span<routing::Backend* const> candidates,
             std::span<double> out) override;
  // Speculative entries for the chosen backend (no-op for character blocks or when disabled).
  void on_routed(const routing::RouteRequest& req, const routing::Backend& chosen) override;

 private:
  bool token_blocks(const routing::RouteRequest& req) const;
  std::shared_ptr<PreciseIndexer> indexer_;
  std::shared_ptr<routing::RoutingContext> ctx_;
  PreciseScorerOptions opts_;
};

// Builds the scorer from its plugin entry. `indexer` null: an error naming the plugin (the router
// has no backend with kv_events_endpoint).
Result<std::unique_ptr<routing::Scorer>> make_precise_scorer(
    const config::PluginConfig& pc, std::shared_ptr<routing::RoutingContext> ctx,
    std::shared_ptr<PreciseIndexer> indexer);

}  // namespace kvroute::kv_index
