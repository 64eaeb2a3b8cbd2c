// File: bench/internal/report.h
//
// What a bench run means: the Summary of a RunResult (latency percentiles, throughput, hit rates
// from the engines' counters and from usage, the offline bounds over the same requests, load per
// backend), its JSON and Markdown forms, the --check gate, and gnuplot plots for `bench compare`.
// Pure functions over values, except write_plots (files + a gnuplot subprocess).
//
// Thread-safety: no shared state. The pure functions are safe from any thread; write_plots() and
// run_gnuplot() write files under the paths given and block the calling thread until gnuplot exits,
// so concurrent calls must not share a directory.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <vector>

#include "bench/internal/bounds.h"
#include "bench/internal/loadgen.h"
#include "bench/internal/workload.h"
#include "common/result.h"

namespace kvroute::bench {

struct Percentiles {
  double p50 = 0, p90 = 0, p99 = 0, mean = 0;
  std::size_t n = 0;
};
Percentiles percentiles_of(std::vector<double> values);

struct BackendLoad {
  std::string name;
  std::uint64_t requests = 0;
};

// Where the hits went (docs/adr/0024): the requests replayed in the order they were sent, each on
// the engine that served it, against one LRU cache per engine (outputs taking blocks, no
// concurrency): what each engine would have held, beside what the router predicted and what the
// engine reported.
struct HitLoss {
  bool known = false;  // the records name their engines (x-kvroute-backend)
  // Tokens the best engine would have held beyond the chosen one's, summed over the requests
  // routed elsewhere ("spills"), and how many requests that was.
  std::uint64_t spill_tokens = 0;
  std::size_t spilled_requests = 0;
  // The router predicted more cached tokens than the engine reported (evictions the index did not
  // foresee, or a prefix still being computed by a concurrent request), and less (the index had
  // forgotten what the engine still held).
  std::uint64_t overpredicted_tokens = 0;
  std::uint64_t underpredicted_tokens = 0;
  std::uint64_t shadow_hit_tokens = 0;     // the per-engine LRU replay's hits on the chosen engines
  std::vector<std::uint32_t> best_tokens;  // per record: the most any engine would have held
  std::vector<std::uint32_t> chosen_tokens;  // per record: what the chosen engine would have held
  std::vector<int> best_engine;              // per record: which engine (-1: none held any)
};

// One traffic class's requests (--class): outcomes and latency, so that shedding cannot hide in a
// pooled percentile. TTFT and router queue time are over the completed requests.
struct ClassSummary {
  std::string name;
  std::size_t sent = 0, completed = 0;
  std::size_t rejected_429 = 0, rejected_503 = 0;  // refused by the router (flow control)
  std::size_t failed_other = 0;  // any other failure: lost, as far as the class is concerned
  std::size_t cancelled = 0;     // in flight at the run's deadline
  Percentiles ttft;
  Percentiles queue_ms;  // x-kvroute-queue-ms of the completed requests that carried it
  double goodput = 0;    // completed requests per second of the run
};
std::vector<ClassSummary> class_summaries(const RunResult& run);
// One line per class (empty when the run has none).
std::string class_lines(const std::string& label, const std::vector<ClassSummary>& classes);

struct Summary {
  std::string label;  // policy name or URL
  std::string workload;
  std::size_t sent = 0, completed = 0, failed = 0, cancelled = 0;
  double wall_s = 0;
  double request_throughput = 0;  // completed requests per second
  double output_throughput = 0;   // output tokens per second
  Percentiles ttft, e2e, itl;
  // Hit rates.
  std::uint64_t usage_prompt_tokens = 0, usage_cached_tokens = 0;
  double usage_hit_rate = 0;
  bool engine_counters = false;  // every backend's /metrics was scraped
  double engine_queries = 0, engine_hits = 0;
  double engine_hit_rate = 0;
  double hit_rate = 0;  // engines' counters when available, else usage
  BoundsResult bounds;
  double fraction_of_bound = 0;   // hit_rate / pooled-LRU bound (1 when the bound is 0)
  double fraction_of_oracle = 0;  // hit_rate / load-capped longest-prefix oracle (0: none)
  // Load.
  std::vector<BackendLoad> backends;  // engines' request_success deltas, else x-kvroute-backend
  double imbalance = 0;               // max / mean requests per backend (0: unknown)
  std::vector<std::string> errors;    // a few distinct error messages
  std::vector<std::string> warnings;  // e.g. the engines' counters and usage disagree
  HitLoss loss;
  std::vector<ClassSummary> classes;  // per traffic class (--class), in order of first appearance
  int repeats = 1;                    // runs pooled into this summary
};

struct SummaryOptions {
  std::uint32_t block_size = 16;  // for the bounds (else the engines' block_size)
  // Pooled capacity in blocks of `block_size` (0: the engines' num_gpu_blocks x their block size,
  // in tokens, over block_size).
  std::uint64_t capacity_blocks = 0;
  std::uint32_t engines = 0;     // of the oracle (0: the engines scraped)
  double oracle_load_cap = 1.1;  // the oracle's max/mean requests per engine
  std::uint32_t vocab_size = 128256;
};

Summary summarize(const std::string& label, const Workload& wl, const RunResult& run,
                  const SummaryOptions& opts = {});

// Several runs of the same workload as one (`bench compare --repeat`): records concatenated (start
// times offset by the runs before), engine counter deltas summed by position, walls summed.
RunResult pool_runs(std::span<const RunResult> runs);
// Their Summary: TTFT and e2e p50/p90/p99 are the median over the runs of each run's percentile
// (robust to one run hit by machine noise; mean and counts pool every request), hit rate and load
// from the summed counters, and the bound summed over the runs (each run starts from cold caches).
Summary summarize_pooled(const std::string& label, const Workload& wl,
                         std::span<const RunResult> runs, const SummaryOptions& opts = {});

std::string summary_json(const Summary& s);
// {"runs":[...]} for several.
std::string summaries_json(const std::vector<Summary>& runs, const std::string& extra_fields = {});
// A Markdown table, one row per run; with `oracle` columns when any run knows its engines.
std::string markdown_table(const std::vector<Summary>& runs);
// Its parts, for printing rows as runs complete.
bool has_oracle(const std::vector<Summary>& runs);
std::string markdown_header(bool oracle);
std::string markdown_row(const Summary& s, bool oracle);
// Per-request records as CSV rows (header first when `header`): label, session, turn, start_s,
// ttft_s, e2e_s, prompt_tokens, cached_tokens, output_tokens, backend, status, outcome, reason,
// predicted_tokens, best_engine, best_tokens, chosen_tokens. For analysis outside kvroute.
// With `summary` (of this run), also reason, predicted_tokens and the replay's best_engine,
// best_tokens and chosen_tokens (HitLoss).
std::string records_csv(const std::string& label, const RunResult& run, bool header,
                        const Summary* summary = nullptr);
// One line on HitLoss (empty when unknown).
std::string hit_loss_line(const Summary& s);
// Human-readable lines for one run (`kvroute bench`).
std::string text_report(const Summary& s);

struct CheckOptions {
  std::optional<double> min_hit_rate;
  std::optional<double> max_ttft_p99_s;
  std::optional<double> max_imbalance;
  std::optional<double> max_error_rate;
};
// One message per failed threshold (empty: pass).
std::vector<std::string> check_thresholds(const Summary& s, const CheckOptions& c);

// Plots for `bench compare` into `dir` (created): hit_rate.png (bars per policy, with the bound),
// ttft_cdf.png (one curve per policy), load_<label>.png (in-flight requests per backend over
// time). Runs gnuplot (pngcairo, else png). Returns the PNG paths written.
struct PlotInput {
  Summary summary;
  const RunResult* run = nullptr;
};
Result<std::vector<std::string>> write_plots(const std::string& dir,
                                             const std::vector<PlotInput>& runs);

// Runs `gnuplot script_path`; its stderr goes to log_path. Returns the exit status.
int run_gnuplot(const std::string& script_path, const std::string& log_path);

}  // namespace kvroute::bench
