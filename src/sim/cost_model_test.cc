// File: sim/cost_model_test.cc
//
// The presets reproduce their calibration tables (src/sim/calibration/data/table_*.csv, written by
// src/sim/calibration/fit.py from the raw H100 measurements), and the model is monotone in the work
// of a step. Tolerances follow the fit's residuals reported in docs/sim-calibration.md.
#include "sim/internal/cost_model.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace kvroute::sim {
namespace {

struct Point {
  std::string kind;
  StepShape shape;
  double measured_ms = 0;
  double fit_ms = 0;
};

std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> out;
  std::stringstream ss(line);
  std::string cell;
  while (std::getline(ss, cell, ',')) out.push_back(cell);
  return out;
}

// Reads kind,prefill_new,prefill_ctx,decode_seqs,decode_ctx,measured_ms,fit_ms,decode_attn.
std::vector<Point> load_table(const std::string& model) {
  const std::string path =
      std::string(KVROUTE_SOURCE_DIR) + "/src/sim/calibration/data/table_" + model + ".csv";
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::vector<Point> points;
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto c = split_csv(line);
    if (c.size() < 7) {
      ADD_FAILURE() << "bad row in " << path << ": " << line;
      continue;
    }
    Point p;
    p.kind = c[0];
    const auto new_tokens = static_cast<std::uint32_t>(std::stoul(c[1]));
    const auto ctx = static_cast<std::uint32_t>(std::stoul(c[2]));
    const auto seqs = static_cast<std::uint32_t>(std::stoul(c[3]));
    const auto decode_ctx = std::stoull(c[4]);
    if (new_tokens > 0) p.shape.prefills.push_back({new_tokens, ctx});
    p.shape.decode_seqs = seqs;
    p.shape.decode_context_tokens = seqs * decode_ctx;
    p.measured_ms = std::stod(c[5]);
    p.fit_ms = std::stod(c[6]);
    points.push_back(p);
  }
  return points;
}

struct Case {
  const char* preset;
  const char* table;
  double tol_fitted;  // max |relative error| allowed on fitted points
  double tol_mixed;   // same for held-out mixed prefill+decode steps
};

class CalibrationTable : public ::testing::TestWithParam<Case> {};

TEST_P(CalibrationTable, ReproducesMeasuredSteps) {
  const Case& tc = GetParam();
  const auto model = CostModel::preset(tc.preset);
  ASSERT_TRUE(model.has_value());
  const auto points = load_table(tc.table);
  ASSERT_GE(points.size(), 80u);
  double worst = 0;
  for (const Point& p : points) {
    const double pred_ms = 1e3 * model->step_seconds(p.shape);
    // The C++ formula and coefficients are the ones fit.py evaluated (coefficients printed to 7
    // significant digits).
    EXPECT_NEAR(pred_ms, p.fit_ms, 1e-4 * p.fit_ms + 1e-4) << p.kind;
    const double rel = std::abs(pred_ms - p.measured_ms) / p.measured_ms;
    const bool mixed = p.kind == "mixed";
    // Points above 20 ms (compute-bound prefill, big decode batches) fit within 9%.
    const double tol = mixed ? tc.tol_mixed : (p.measured_ms > 20.0 ? 0.09 : tc.tol_fitted);
    const StepShape::Prefill pf =
        p.shape.prefills.empty() ? StepShape::Prefill{} : p.shape.prefills[0];
    EXPECT_LE(rel, tol) << tc.preset << " " << p.kind << " new=" << pf.new_tokens
                        << " ctx=" << pf.context_tokens << " B=" << p.shape.decode_seqs
                        << " C=" << p.shape.decode_context_tokens << " measured=" << p.measured_ms
                        << "ms predicted=" << pred_ms << "ms";
    worst = std::max(worst, rel);
  }
  RecordProperty("worst_relative_error", std::to_string(worst));
}

INSTANTIATE_TEST_SUITE_P(Presets, CalibrationTable,
                         ::testing::Values(Case{"llama-3.1-8b-h100", "llama-3.1-8b", 0.11, 0.08},
                                           Case{"llama-3.2-1b-h100", "llama-3.2-1b", 0.17, 0.10}),
                         [](const ::testing::TestParamInfo<Case>& param_info) {
                           return std::string(param_info.param.preset) == "llama-3.1-8b-h100"
                                      ? std::string("Llama31_8B")
                                      : std::string("Llama32_1B");
                         });

TEST(CostModel, PresetNamesAreKnown) {
  const auto names = CostModel::preset_names();
  ASSERT_EQ(names.size(), 2u);
  for (const std::string& n : names) EXPECT_TRUE(CostModel::preset(n).has_value()) << n;
  EXPECT_NE(std::find(names.begin(), names.end(), "llama-3.1-8b-h100"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "llama-3.2-1b-h100"), names.end());
  EXPECT_FALSE(CostModel::preset("").has_value());
  EXPECT_FALSE(CostModel::preset("llama-3.1-8b").has_value());
  EXPECT_FALSE(CostModel::preset("LLAMA-3.1-8B-H100").has_value());
}

TEST(CostModel, FormulaWithExplicitCoefficients) {
  const CostModel m(CostCoefficients{.base_s = 1.0,
                                     .per_prefill_token_s = 0.1,
                                     .per_attn_pair_s = 0.01,
                                     .per_decode_seq_s = 2.0,
                                     .per_decode_context_token_s = 0.001});
  StepShape s;
  EXPECT_DOUBLE_EQ(m.step_seconds(s), 1.0);
  s.prefills.push_back({10, 4});  // pairs = 10 * (4 + 5) = 90
  s.prefills.push_back({2, 0});   // pairs = 2 * 1 = 2
  s.decode_seqs = 3;
  s.decode_context_tokens = 1000;
  EXPECT_DOUBLE_EQ(m.step_seconds(s), 1.0 + 0.1 * 12 + 0.01 * 92 + 2.0 * 3 + 0.001 * 1000);
}

TEST(CostModel, FreeBatchTokensAreUsedByDecodeFirst) {
  CostCoefficients c{.per_prefill_token_s = 1.0};
  c.free_batch_tokens = 100;
  const CostModel m(c);
  StepShape s;
  s.prefills.push_back({150, 0});
  EXPECT_DOUBLE_EQ(m.step_seconds(s), 50.0);  // 150 - 100 charged
  s.decode_seqs = 30;
  EXPECT_DOUBLE_EQ(m.step_seconds(s), 80.0);  // 150 - (100 - 30) charged
  s.decode_seqs = 500;
  EXPECT_DOUBLE_EQ(m.step_seconds(s), 150.0);  // no allowance left
  s.prefills[0].new_tokens = 20;
  s.decode_seqs = 0;
  EXPECT_DOUBLE_EQ(m.step_seconds(s), 0.0);  // all free, never negative
}

TEST(CostModel, MonotoneInEveryKindOfWork) {
  for (const std::string& name : CostModel::preset_names()) {
    const auto m = CostModel::preset(name);
    ASSERT_TRUE(m.has_value());
    const CostCoefficients& c = m->coefficients();
    EXPECT_GT(c.base_s, 0.0);
    EXPECT_GT(c.per_prefill_token_s, 0.0);
    EXPECT_GT(c.per_attn_pair_s, 0.0);
    EXPECT_GT(c.per_decode_seq_s, 0.0);
    EXPECT_GT(c.per_decode_context_token_s, 0.0);
    EXPECT_GE(c.free_batch_tokens, 0.0);

    double prev = 0;
    for (std::uint32_t n : {1u, 16u, 128u, 176u, 177u, 512u, 2048u, 8192u}) {
      StepShape s;
      s.prefills.push_back({n, 0});
      const double t = m->step_seconds(s);
      EXPECT_GE(t, prev) << name << " prefill " << n;
      prev = t;
    }
    prev = 0;
    for (std::uint32_t ctx : {0u, 1024u, 8192u, 32768u}) {
      StepShape s;
      s.prefills.push_back({512, ctx});
      const double t = m->step_seconds(s);
      EXPECT_GT(t, prev) << name << " context " << ctx;
      prev = t;
    }
    prev = 0;
    for (std::uint32_t b : {1u, 8u, 64u, 256u}) {
      for (std::uint64_t l : {128ull, 4096ull}) {
        StepShape s;
        s.decode_seqs = b;
        s.decode_context_tokens = b * l;
        const double t = m->step_seconds(s);
        StepShape longer = s;
        longer.decode_context_tokens *= 2;
        EXPECT_GT(m->step_seconds(longer), t) << name;
        StepShape wider = s;
        wider.decode_seqs += 1;
        wider.decode_context_tokens += l;
        EXPECT_GT(m->step_seconds(wider), t) << name;
        // Adding a prefill chunk to a decode batch never makes the step cheaper.
        StepShape mixed = s;
        mixed.prefills.push_back({256, 0});
        EXPECT_GE(m->step_seconds(mixed), t) << name;
      }
    }
    // Splitting a prompt into chunks costs more in total than one pass (base per step), and the
    // attention term charges each chunk its full context.
    StepShape whole;
    whole.prefills.push_back({4096, 0});
    double chunked = 0;
    for (std::uint32_t i = 0; i < 4; ++i) {
      StepShape s;
      s.prefills.push_back({1024, 1024 * i});
      chunked += m->step_seconds(s);
    }
    EXPECT_GT(chunked, m->step_seconds(whole)) << name;
  }
}

TEST(CostModel, PresetsAreInThePublicBallpark) {
  // Order-of-magnitude guard against a unit slip (docs/sim-calibration.md compares with vLLM).
  const auto m8 = CostModel::preset("llama-3.1-8b-h100");
  const auto m1 = CostModel::preset("llama-3.2-1b-h100");
  ASSERT_TRUE(m8 && m1);
  StepShape decode1;
  decode1.decode_seqs = 1;
  decode1.decode_context_tokens = 1024;
  EXPECT_GT(m8->step_seconds(decode1), 0.005);
  EXPECT_LT(m8->step_seconds(decode1), 0.012);
  EXPECT_LT(m1->step_seconds(decode1), m8->step_seconds(decode1));
  StepShape prompt4k;
  prompt4k.prefills.push_back({4096, 0});
  EXPECT_GT(m8->step_seconds(prompt4k), 0.08);
  EXPECT_LT(m8->step_seconds(prompt4k), 0.2);
}

}  // namespace
}  // namespace kvroute::sim
