// File: sim/internal/cost_model.h
//
// The simulator's time model: how long one engine step (one forward pass of a continuous batch)
// takes, from the step's shape. Presets are calibrated on an H100 (docs/sim-calibration.md).
//
// Thread-safety: a CostModel is immutable after construction; its const methods and the static
// preset functions keep no state, so it is safe to share across threads.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kvroute::sim {

// What one scheduler step computes.
struct StepShape {
  struct Prefill {
    std::uint32_t new_tokens = 0;      // prompt tokens computed in this step (a chunk)
    std::uint32_t context_tokens = 0;  // tokens already in the KV cache before the chunk
  };
  std::vector<Prefill> prefills;
  std::uint32_t decode_seqs = 0;            // sequences producing one token each
  std::uint64_t decode_context_tokens = 0;  // sum of their context lengths
};

// Linear-in-work model:
//   t = base + per_prefill_token * P' + per_attn_pair * sum(new*(context + new/2))
//       + per_decode_seq * D + per_decode_context_token * C
// where P is the number of prefill tokens, D the decode batch and C its total context, and
// P' = max(0, P - max(0, free_batch_tokens - D)): the first free_batch_tokens tokens of a step
// (decode tokens first) ride on the weight read at no marginal matmul cost. With
// free_batch_tokens = 0 (the default), P' = P. See docs/sim-calibration.md, docs/adr/0180.
struct CostCoefficients {
  double base_s = 0;
  double per_prefill_token_s = 0;
  double per_attn_pair_s = 0;
  double per_decode_seq_s = 0;
  double per_decode_context_token_s = 0;
  double free_batch_tokens = 0;
};

class CostModel {
 public:
  explicit CostModel(CostCoefficients c) : c_(c) {}

  // Known presets: "llama-3.1-8b-h100", "llama-3.2-1b-h100"; nullopt for an unknown name.
  static std::optional<CostModel> preset(std::string_view name);
  static std::vector<std::string> preset_names();

  double step_seconds(const StepShape& shape) const;
  const CostCoefficients& coefficients() const { return c_; }

 private:
  CostCoefficients c_;
};

}  // namespace kvroute::sim
