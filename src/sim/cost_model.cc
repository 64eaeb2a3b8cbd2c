// File: sim/cost_model.cc
//
// CostModel: presets calibrated on one H100 80GB HBM3 (docs/sim-calibration.md) and the step-time
// formula of cost_model.h. Stateless; safe to share across threads.
#include "sim/internal/cost_model.h"

#include <algorithm>
#include <array>

namespace kvroute::sim {
namespace {

struct Preset {
  std::string_view name;
  CostCoefficients coefficients;
};

// Fitted by src/sim/calibration/fit.py from the CSVs in src/sim/calibration/data/ (PyTorch
// re-implementation of the model shapes, bf16, CUDA graphs, H100 80GB HBM3, torch 2.11/CUDA 13).
// Method, per-point errors and the comparison with public vLLM figures: docs/sim-calibration.md.
// The measurement runs unfused kernels (no FlashAttention-3 / paged attention); see that document
// before reading these as vLLM's own step times.
constexpr std::array<Preset, 2> kPresets{{
    {"llama-3.1-8b-h100", CostCoefficients{.base_s = 8.311625e-03,
                                           .per_prefill_token_s = 2.268002e-05,
                                           .per_attn_pair_s = 1.678795e-09,
                                           .per_decode_seq_s = 6.259831e-06,
                                           .per_decode_context_token_s = 4.271076e-08,
                                           .free_batch_tokens = 176}},
    {"llama-3.2-1b-h100", CostCoefficients{.base_s = 2.317089e-03,
                                           .per_prefill_token_s = 3.522558e-06,
                                           .per_attn_pair_s = 4.622379e-10,
                                           .per_decode_seq_s = 1.436393e-06,
                                           .per_decode_context_token_s = 1.053470e-08,
                                           .free_batch_tokens = 160}},
}};

}  // namespace

std::optional<CostModel> CostModel::preset(std::string_view name) {
  for (const Preset& p : kPresets) {
    if (p.name == name) return CostModel(p.coefficients);
  }
  return std::nullopt;
}

std::vector<std::string> CostModel::preset_names() {
  std::vector<std::string> names;
  names.reserve(kPresets.size());
  for (const Preset& p : kPresets) names.emplace_back(p.name);
  return names;
}

double CostModel::step_seconds(const StepShape& shape) const {
  double prefill_tokens = 0;
  double attn_pairs = 0;
  for (const StepShape::Prefill& p : shape.prefills) {
    const double n = p.new_tokens;
    prefill_tokens += n;
    attn_pairs += n * (static_cast<double>(p.context_tokens) + n / 2.0);
  }
  const double decode = shape.decode_seqs;
  const double free_for_prefill = std::max(0.0, c_.free_batch_tokens - decode);
  const double charged_prefill = std::max(0.0, prefill_tokens - free_for_prefill);
  return c_.base_s + c_.per_prefill_token_s * charged_prefill + c_.per_attn_pair_s * attn_pairs +
         c_.per_decode_seq_s * decode +
         c_.per_decode_context_token_s * static_cast<double>(shape.decode_context_tokens);
}

}  // namespace kvroute::sim
