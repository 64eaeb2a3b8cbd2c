#include "bench/bench_command.h"

#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "bench/internal/compare.h"
#include "bench/internal/loadgen.h"
#include "bench/internal/report.h"
#include "bench/internal/workload.h"
#include "common/log.h"
#include "config/config.h"
#include "routing/policy.h"

namespace kvroute::bench {

namespace {

struct CommonFlags {
  WorkloadOptions wl;
  LoadOptions load;
  std::string duration = "600s";
  std::string think = "1s";
  std::string json_path;
  std::string records_path;
  std::vector<std::string> classes;  // --class specs
  std::uint64_t capacity_blocks = 0;
  std::uint32_t block_size = 0;  // 0: the engines' block size, else 16
  bool quiet = false;
  bool no_plots = false;  // no plots beside --json
  CLI::Option* output_len_opt = nullptr;
  CLI::Option* concurrency_opt = nullptr;
};

// Where plots go by default: beside the JSON results ("out/run.json" -> "out/run-plots/").
std::string plots_beside(const std::string& json_path) {
  if (json_path.empty()) return {};
  std::filesystem::path p(json_path);
  return (p.parent_path() / (p.stem().string() + "-plots")).string();
}

void add_common_flags(CLI::App* cmd, CommonFlags& f) {
  auto& w = f.wl;
  auto& l = f.load;
  cmd->add_option("--workload", w.name, "shared-prefix, multi-turn, long-doc-qa, mooncake, mix")
      ->capture_default_str();
  cmd->add_option("--seed", w.seed, "Seed of the workload and of the arrival process")
      ->capture_default_str();
  f.output_len_opt =
      cmd->add_option("--output-len", w.output_len,
                      "Output tokens per request (max_tokens, ignore_eos); mooncake: "
                      "the trace's output_length unless this is given")
          ->capture_default_str();
  cmd->add_option("--output-len-dist", w.output_len_dist,
                  "Output lengths: fixed, or per request with mean --output-len: uniform, "
                  "exponential (built-in workloads; a trace keeps its own)")
      ->capture_default_str();
  cmd->add_option("--sp-groups", w.sp_groups, "shared-prefix: groups")->capture_default_str();
  cmd->add_option("--sp-prompts-per-group", w.sp_prompts_per_group,
                  "shared-prefix: prompts per group")
      ->capture_default_str();
  cmd->add_option("--sp-system-len", w.sp_system_len, "shared-prefix: system prompt tokens")
      ->capture_default_str();
  cmd->add_option("--sp-question-len", w.sp_question_len, "shared-prefix: question tokens")
      ->capture_default_str();
  cmd->add_option("--mt-sessions", w.mt_sessions, "multi-turn: sessions")->capture_default_str();
  cmd->add_option("--mt-turns", w.mt_turns, "multi-turn: turns per session")->capture_default_str();
  cmd->add_option("--mt-turn-len", w.mt_turn_len, "multi-turn: user tokens per turn")
      ->capture_default_str();
  cmd->add_option("--mt-system-len", w.mt_system_len, "multi-turn: shared system prompt tokens")
      ->capture_default_str();
  cmd->add_option("--think-time", f.think,
                  "multi-turn: mean think time between turns (exponential)")
      ->capture_default_str();
  cmd->add_option("--ld-docs", w.ld_docs, "long-doc-qa: documents")->capture_default_str();
  cmd->add_option("--ld-doc-len", w.ld_doc_len, "long-doc-qa: document tokens")
      ->capture_default_str();
  cmd->add_option("--ld-questions", w.ld_questions, "long-doc-qa: questions per document")
      ->capture_default_str();
  cmd->add_option("--ld-question-len", w.ld_question_len, "long-doc-qa: question tokens")
      ->capture_default_str();
  cmd->add_option("--trace", w.trace_path,
                  "mooncake: trace JSONL (timestamp, input_length, output_length, hash_ids)");
  cmd->add_option("--trace-block", w.trace_block,
                  "mooncake: tokens per hash id (the bounds still use --block-size, default the "
                  "engines')")
      ->capture_default_str();
  cmd->add_option("--trace-limit", w.trace_limit,
                  "mooncake: replay only the first N lines (0: all)");
  cmd->add_option("--speed", l.speed,
                  "mooncake: open loop on the trace's timestamps, this many times faster (unless "
                  "--rate or --concurrency is given)")
      ->capture_default_str();
  cmd->add_option("--rate", l.rate,
                  "Open loop: sessions started per second (Poisson); 0: closed loop. mooncake: "
                  "replaces the trace's timestamps")
      ->capture_default_str();
  f.concurrency_opt = cmd->add_option(
      "--concurrency", l.concurrency,
      "Closed loop: concurrent users (default 16 without --rate). mooncake: only when given, "
      "then the trace's requests go in order, its timestamps ignored");
  cmd->add_option("--requests", l.max_requests,
                  "Stop after this many requests (0: the whole workload)")
      ->capture_default_str();
  cmd->add_option("--duration", f.duration, "Hard stop: in-flight requests are cancelled")
      ->capture_default_str();
  cmd->add_option("--model", l.model, "Model name (default: the first of GET /v1/models)");
  cmd->add_option("--session-header", l.session_header, "Header carrying the session id")
      ->capture_default_str();
  cmd->add_option(
      "--capacity-blocks", f.capacity_blocks,
      "Pooled KV capacity for the LRU bound (default: sum of the engines' num_gpu_blocks)");
  cmd->add_option("--block-size", f.block_size,
                  "Tokens per KV block for the bounds (default: the engines', else 16); the pooled "
                  "capacity is the engines' KV memory in tokens over this");
  cmd->add_option("--json", f.json_path,
                  "Write the results as JSON to FILE, and PNG plots (gnuplot) into FILE's stem + "
                  "\"-plots/\" beside it");
  cmd->add_flag("--no-plots", f.no_plots, "No plots beside --json");
  cmd->add_option("--records", f.records_path,
                  "Write every request (TTFT, cached tokens, backend, ...) as CSV to FILE");
  cmd->add_flag("--quiet", f.quiet, "No progress bar");
  cmd->add_option("--class", f.classes,
                  "NAME:SHARE[:HEADER=VALUE,...]: a traffic class, SHARE of the sessions (relative "
                  "weight) sending these headers (e.g. x-gateway-inference-objective=high); "
                  "outcomes and TTFT are reported per class (repeatable)");
}

// Applies the string flags; false (with a message) on a bad value.
bool finish_common(CommonFlags& f) {
  auto d = config::parse_duration(f.duration);
  if (!d || d->count() <= 0) {
    fmt::print(stderr, "kvroute bench: bad --duration '{}'\n", f.duration);
    return false;
  }
  f.load.duration = *d;
  auto t = config::parse_duration(f.think);
  if (!t) {
    fmt::print(stderr, "kvroute bench: bad --think-time '{}'\n", f.think);
    return false;
  }
  f.wl.mt_think_s = static_cast<double>(t->count()) / 1000.0;
  f.wl.classes.clear();
  for (const auto& spec : f.classes) {
    auto c = parse_traffic_class(spec);
    if (!c) {
      fmt::print(stderr, "kvroute bench: {}\n", c.error().message);
      return false;
    }
    f.wl.classes.push_back(std::move(*c));
  }
  f.load.seed = f.wl.seed;
  f.load.progress = !f.quiet;
  if (f.wl.name == "mooncake") {
    // A trace replays its own arrival times and output lengths unless told otherwise: say which.
    if (f.output_len_opt != nullptr && f.output_len_opt->count() > 0)
      f.wl.trace_output_len = f.wl.output_len;
    const bool closed = f.load.rate <= 0 && f.concurrency_opt != nullptr &&
                        f.concurrency_opt->count() > 0 && f.load.concurrency > 0;
    f.load.use_timestamps = f.load.rate <= 0 && !closed;
    const std::string arrivals =
        f.load.rate > 0
            ? fmt::format("open loop, Poisson at {} requests/s (timestamps ignored)", f.load.rate)
        : closed ? fmt::format("closed loop, {} users, in trace order (timestamps ignored)",
                               f.load.concurrency)
                 : fmt::format("open loop on the trace's timestamps at {}x speed", f.load.speed);
    fmt::print(stderr, "mooncake replay: {}; output lengths {}\n", arrivals,
               f.wl.trace_output_len > 0
                   ? fmt::format("{} tokens (--output-len)", f.wl.trace_output_len)
                   : std::string("from the trace"));
  }
  if (f.load.rate <= 0 && f.load.concurrency <= 0) f.load.concurrency = 16;
  return true;
}

bool write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return false;
  out << text;
  return static_cast<bool>(out);
}

int run_bench(CommonFlags& f, const std::vector<std::string>& metrics_urls,
              const CheckOptions& checks, bool check) {
  if (!finish_common(f)) return 2;
  if (f.load.url.empty()) {
    fmt::print(stderr, "kvroute bench: --url is required\n");
    return 2;
  }
  auto wl = make_workload(f.wl);
  if (!wl) {
    fmt::print(stderr, "kvroute bench: {}\n", wl.error().message);
    return 2;
  }
  f.load.backend_metrics = metrics_urls;
  auto run = run_load(*wl, f.load);
  if (!run) {
    fmt::print(stderr, "kvroute bench: {}\n", run.error().message);
    return 2;
  }
  SummaryOptions so;
  so.block_size = f.block_size;
  so.capacity_blocks = f.capacity_blocks;
  const Summary s = summarize(f.load.url, *wl, *run, so);
  std::fputs(text_report(s).c_str(), stdout);
  if (!f.records_path.empty() &&
      !write_file(f.records_path, records_csv(f.load.url, *run, true, &s))) {
    fmt::print(stderr, "kvroute bench: cannot write {}\n", f.records_path);
    return 2;
  }
  if (!f.json_path.empty() && !write_file(f.json_path, summaries_json({s}))) {
    fmt::print(stderr, "kvroute bench: cannot write {}\n", f.json_path);
    return 2;
  }
  if (!f.json_path.empty() && !f.no_plots) {
    // TTFT CDF, hit rate against the bounds, and load per engine over time, beside the JSON.
    const std::vector<PlotInput> in{{s, &*run}};
    auto pngs = write_plots(plots_beside(f.json_path), in);
    if (!pngs) {
      fmt::print(stderr, "kvroute bench: plots: {}\n", pngs.error().message);
    } else {
      for (const auto& p : *pngs) fmt::print(stderr, "wrote {}\n", p);
    }
  }
  if (s.completed == 0) {
    fmt::print(stderr, "kvroute bench: no request completed\n");
    return 2;
  }
  if (check) {
    const auto failures = check_thresholds(s, checks);
    for (const auto& m : failures) fmt::print(stderr, "CHECK FAILED: {}\n", m);
    if (!failures.empty()) return 1;
    fmt::print(stderr, "check passed\n");
  }
  return 0;
}

// Rows printed (and the JSON rewritten) as each policy completes, so that a long comparison shows
// its results as they come, on a terminal or not. Only for single runs: pooled repeats are known
// at the end.
struct RowStream {
  bool enabled = false;
  std::vector<Summary> rows;
  std::string json_path;
  std::string extra_json;

  void reset(std::string json, std::string extra) {
    rows.clear();
    json_path = std::move(json);
    extra_json = std::move(extra);
  }
  void add(const Summary& s) {
    if (!enabled) return;
    const bool oracle = s.bounds.engines > 0;
    if (rows.empty()) std::fputs(markdown_header(oracle).c_str(), stdout);
    std::fputs(markdown_row(s, oracle).c_str(), stdout);
    std::fflush(stdout);
    rows.push_back(s);
    if (!json_path.empty()) {
      // Complete once the last policy's row is in; the final write replaces this one.
      const std::string extra =
          extra_json + (extra_json.empty() ? "" : ",") + R"("complete":false)";
      if (!write_file(json_path, summaries_json(rows, extra)))
        fmt::print(stderr, "cannot write {}\n", json_path);
    }
  }
};

}  // namespace

int print_compare(const std::vector<CompareRun>& runs, const std::string& json_path,
                  const std::string& plots_dir, const std::string& extra_json,
                  const std::string& records_path, const std::string& label_suffix,
                  bool rows_printed) {
  std::vector<Summary> sums;
  int rc = 0;
  for (const auto& r : runs) {
    if (!r.error.empty()) {
      fmt::print(stderr, "policy {}: {}\n", r.policy, r.error);
      rc = 2;
      continue;
    }
    sums.push_back(r.summary);
  }
  if (!rows_printed) std::fputs(markdown_table(sums).c_str(), stdout);
  for (const auto& sum : sums) {
    if (const auto line = hit_loss_line(sum); !line.empty()) fmt::print("{}\n", line);
  }
  for (const auto& sum : sums) std::fputs(class_lines(sum.label, sum.classes).c_str(), stdout);
  for (const auto& sum : sums) {
    for (const auto& w : sum.warnings) fmt::print("warning ({}): {}\n", sum.label, w);
  }
  if (!sums.empty() && sums[0].repeats > 1) {
    fmt::print(
        "(each row: {} runs, policies interleaved; latency percentiles are the median of the "
        "runs', hit "
        "rate and load are pooled)\n",
        sums[0].repeats);
  }
  if (!records_path.empty()) {
    // One CSV for the whole command: appended per comparison, the header written once.
    const bool fresh =
        !std::filesystem::exists(records_path) || std::filesystem::file_size(records_path) == 0;
    std::ofstream out(records_path, std::ios::binary | std::ios::app);
    bool header = fresh;
    for (const auto& r : runs) {
      if (!r.error.empty()) continue;
      out << records_csv(r.policy + label_suffix, r.run, header, &r.summary);
      header = false;
    }
    if (!out) {
      fmt::print(stderr, "cannot write {}\n", records_path);
      return 2;
    }
  }
  if (!json_path.empty() && !write_file(json_path, summaries_json(sums, extra_json))) {
    fmt::print(stderr, "cannot write {}\n", json_path);
    return 2;
  }
  if (!plots_dir.empty()) {
    std::vector<PlotInput> in;
    for (const auto& r : runs) {
      if (r.error.empty()) in.push_back({r.summary, &r.run});
    }
    auto pngs = write_plots(plots_dir, in);
    if (!pngs) {
      fmt::print(stderr, "plots: {}\n", pngs.error().message);
      return 2;
    }
    for (const auto& p : *pngs) fmt::print(stderr, "wrote {}\n", p);
  }
  return rc;
}

namespace {

// `bench compare --load-fractions`: measures capacity, then one comparison per fraction (open
// loop).
int run_fractions(const WorkloadOptions& wopts, const Workload& wl, CompareOptions co,
                  const std::string& list, int saturation, bool steady, double known_capacity,
                  const std::string& json_path, const std::string& plots_dir,
                  const std::string& records_path, RowStream& stream) {
  std::vector<double> fs;
  for (const auto& item : split_list(list)) {
    char* end = nullptr;
    const double f = std::strtod(item.c_str(), &end);
    if (end == item.c_str() || *end != '\0' || !(f > 0) || f > 4) {
      fmt::print(stderr,
                 "kvroute bench compare: bad --load-fractions item '{}' (want numbers in (0, 4])\n",
                 item);
      return 2;
    }
    fs.push_back(f);
  }
  Result<double> capacity = known_capacity;
  if (known_capacity > 0) {
    fmt::print("capacity: {:.1f} req/s (--capacity)\n\n", known_capacity);
  } else {
    WorkloadOptions sat_opts = wopts;
    sat_opts.mt_think_s = 0;  // capacity is what the engines sustain, not what think time allows
    auto sat_wl = make_workload(sat_opts);
    if (!sat_wl) {
      fmt::print(stderr, "kvroute bench compare: {}\n", sat_wl.error().message);
      return 2;
    }
    capacity = measure_capacity(*sat_wl, co, saturation, steady);
    if (!capacity) {
      fmt::print(stderr, "kvroute bench compare: {}\n", capacity.error().message);
      return 2;
    }
    fmt::print("capacity: {:.1f} req/s ({}, closed loop, {} users, no think time{})\n\n", *capacity,
               co.targets.empty() ? std::string("round-robin") : co.targets[0].name, saturation,
               steady ? ", steady state" : "");
  }
  int rc = 0;
  for (double f : fs) {
    co.load.concurrency = 0;
    co.load.rate = session_rate_for(wl, *capacity, f);
    fmt::print("### {:.0f}% of capacity: {:.1f} req/s offered ({:.2f} sessions/s)\n\n", f * 100,
               *capacity * f, co.load.rate);
    std::fflush(stdout);
    const std::string suffix = fmt::format("-{:.0f}", f * 100);
    std::string jp = json_path;
    if (!jp.empty()) {
      const auto dot = jp.rfind('.');
      jp = dot == std::string::npos || dot == 0 ? jp + suffix
                                                : jp.substr(0, dot) + suffix + jp.substr(dot);
    }
    const std::string extra =
        fmt::format(R"("workload":"{}","load_fraction":{},"capacity_rps":{:.2f},"rate":{:.4f})",
                    wopts.name, f, *capacity, co.load.rate);
    stream.reset(jp, extra);
    auto runs = run_compare(wl, co);
    if (!runs) {
      fmt::print(stderr, "kvroute bench compare: {}\n", runs.error().message);
      return 2;
    }
    rc = std::max(rc, print_compare(*runs, jp, plots_dir.empty() ? plots_dir : plots_dir + suffix,
                                    extra, records_path, fmt::format("@{}", f), stream.enabled));
    fmt::print("\n");
  }
  return rc;
}

}  // namespace

void add_bench_command(CLI::App& app, int& exit_code) {
  auto f = std::make_shared<CommonFlags>();
  auto metrics = std::make_shared<std::vector<std::string>>();
  auto checks = std::make_shared<CheckOptions>();
  auto check = std::make_shared<bool>(false);
  auto min_hit = std::make_shared<double>(0.7);
  auto max_ttft = std::make_shared<std::string>("2s");
  auto max_imb = std::make_shared<double>(1.3);
  auto max_err = std::make_shared<double>(0.0);

  auto* cmd = app.add_subcommand(
      "bench", "Benchmark a router or engine URL (or compare policies: bench compare)");
  cmd->require_subcommand(0, 1);
  cmd->add_option("--url", f->load.url, "Base URL of the router or engine (http://host:port)");
  add_common_flags(cmd, *f);
  cmd->add_option("--backend-metrics", *metrics,
                  "Engine base URL whose /metrics to scrape (repeatable)");
  cmd->add_flag("--check", *check, "Gate on thresholds: exit 1 if one fails");
  auto* o_hit =
      cmd->add_option("--min-hit-rate", *min_hit, "With --check: minimum prefix-cache hit rate")
          ->capture_default_str();
  auto* o_ttft = cmd->add_option("--max-ttft-p99", *max_ttft,
                                 "With --check: maximum TTFT p99 (e.g. 2s, 500ms)")
                     ->capture_default_str();
  auto* o_imb = cmd->add_option("--max-imbalance", *max_imb,
                                "With --check: maximum max/mean requests per backend")
                    ->capture_default_str();
  auto* o_err = cmd->add_option("--max-error-rate", *max_err,
                                "With --check: maximum fraction of failed requests");

  auto cf = std::make_shared<CommonFlags>();
  auto cmp_policies = std::make_shared<std::string>();
  auto plots = std::make_shared<std::string>();
  auto sim = std::make_shared<sim::SimOptions>();
  sim->engines = 4;
  auto* cmp = cmd->add_subcommand(
      "compare", "Run one workload through each routing policy on fresh simulated engines");
  cmp->add_option("--policies", *cmp_policies, "Comma-separated policies (default: all)");
  auto policy_configs = std::make_shared<std::vector<std::string>>();
  cmp->add_option(
      "--policy-config", *policy_configs,
      "NAME=FILE: also compare the scheduler defined by FILE's plugins and schedulingProfiles (the "
      "kvroute serve --config shape) under NAME (repeatable)");
  cmp->add_option("--engines", sim->engines, "Simulated engines")->capture_default_str();
  cmp->add_option("--preset", sim->preset,
                  "Engine cost model (llama-3.1-8b-h100, llama-3.2-1b-h100, none)")
      ->capture_default_str();
  cmp->add_option("--time-scale", sim->time_scale,
                  "Run the engines this many times faster than real time")
      ->capture_default_str();
  cmp->add_option("--num-gpu-blocks", sim->engine.num_gpu_blocks,
                  "KV blocks per engine, each of --engine-block-size tokens")
      ->capture_default_str();
  cmp->add_option("--engine-block-size", sim->engine.block_size,
                  "Tokens per KV block of the simulated engines (vLLM's --block-size)")
      ->capture_default_str();
  cmp->add_option("--plots", *plots,
                  "Write PNG plots (gnuplot) into DIR (default with --json: beside it)");
  auto targets = std::make_shared<std::vector<std::string>>();
  auto engine_urls = std::make_shared<std::vector<std::string>>();
  auto no_reset = std::make_shared<bool>(false);
  cmp->add_option(
      "--target", *targets,
      "A running router to measure instead of in-process policies: NAME=URL or URL (repeatable)");
  cmp->add_option("--engine-url,--backend-metrics", *engine_urls,
                  "With --target: an engine behind the routers (its /metrics give hit rate and "
                  "load; repeatable)");
  cmp->add_flag("--no-reset-prefix-cache", *no_reset,
                "With --target: do not POST /reset_prefix_cache to the engines before each target");
  auto fractions = std::make_shared<std::string>();
  auto saturation = std::make_shared<int>(256);
  cmp->add_option("--load-fractions", *fractions,
                  "Open-loop runs at these fractions of the engines' capacity, e.g. 0.5,0.9 "
                  "(capacity: round-robin's "
                  "closed-loop throughput at --saturation-concurrency users, no think time)");
  cmp->add_option("--saturation-concurrency", *saturation, "Users of the capacity run")
      ->capture_default_str();
  auto known_capacity = std::make_shared<double>(0);
  cmp->add_option("--capacity", *known_capacity,
                  "With --load-fractions: the capacity in requests/s (skips the capacity run, so "
                  "several invocations share one figure)");
  auto steady = std::make_shared<bool>(false);
  cmp->add_flag("--steady-capacity", *steady,
                "Capacity from the completions while every user had work, not the drain at the end "
                "(use with --output-len-dist: a long tail of outputs stretches the drain)");
  auto capacity_only = std::make_shared<bool>(false);
  cmp->add_flag("--capacity-only", *capacity_only,
                "Measure and print the capacity (as --load-fractions does), run nothing else");
  auto repeat = std::make_shared<int>(1);
  cmp->add_option("--repeat", *repeat,
                  "Run the comparison N times (policies interleaved) and pool each policy's "
                  "requests into one row")
      ->capture_default_str();
  auto simultaneous = std::make_shared<bool>(false);
  cmp->add_flag("--simultaneous", *simultaneous,
                "Run all policies at the same time, each on its own engines and router (a stall of "
                "the machine "
                "then hits all alike; needs CPU for all of them)");
  auto replicas = std::make_shared<int>(1);
  cmp->add_option("--replicas", *replicas,
                  "Run N routers per policy in front of its engines (active-active replicas); "
                  "requests spread over them per --replica-spread")
      ->capture_default_str();
  auto spread = std::make_shared<std::string>("round-robin");
  cmp->add_option("--replica-spread", *spread,
                  "How requests spread over the replicas: round-robin or random (per request, as "
                  "a Service balancing requests would)")
      ->check(CLI::IsMember({"round-robin", "random"}))
      ->capture_default_str();
  auto exchange = std::make_shared<std::string>("on");
  cmp->add_option("--replica-exchange", *exchange,
                  "With --replicas N > 1: on (replicas exchange decisions and load, row \"P xN\"), "
                  "off (uncoordinated, \"P xN uncoord\") or both (two rows per policy)")
      ->check(CLI::IsMember({"on", "off", "both"}))
      ->capture_default_str();
  add_common_flags(cmp, *cf);

  cmp->callback([cf, cmp_policies, policy_configs, repeat, simultaneous, plots, sim, targets,
                 engine_urls, no_reset, fractions, saturation, steady, known_capacity,
                 capacity_only, replicas, spread, exchange, &exit_code] {
    if (!finish_common(*cf)) {
      exit_code = 2;
      return;
    }
    set_log_level("warn");
    auto wl = make_workload(cf->wl);
    if (!wl) {
      fmt::print(stderr, "kvroute bench compare: {}\n", wl.error().message);
      exit_code = 2;
      return;
    }
    CompareOptions co;
    co.policies = split_list(*cmp_policies);
    co.repeat = *repeat;
    co.simultaneous = *simultaneous;
    co.replicas = *replicas;
    co.spread_random = *spread == "random";
    co.exchange = *exchange;
    if (!policy_configs->empty() && co.policies.empty()) co.policies = routing::policy_names();
    for (const auto& spec : *policy_configs) {
      const auto eq = spec.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size()) {
        fmt::print(stderr, "kvroute bench compare: --policy-config wants NAME=FILE, got '{}'\n",
                   spec);
        exit_code = 2;
        return;
      }
      std::string name = spec.substr(0, eq);
      co.policy_configs.emplace_back(name, spec.substr(eq + 1));
      if (std::find(co.policies.begin(), co.policies.end(), name) == co.policies.end())
        co.policies.push_back(name);
    }
    for (const auto& spec : *targets) {
      auto t = parse_target(spec);
      if (!t) {
        fmt::print(stderr, "kvroute bench compare: {}\n", t.error().message);
        exit_code = 2;
        return;
      }
      co.targets.push_back(std::move(*t));
    }
    co.engine_urls = *engine_urls;
    co.reset_prefix_cache = !*no_reset;
    co.sim = *sim;
    co.load = cf->load;
    co.summary.block_size = cf->block_size;
    co.summary.capacity_blocks = cf->capacity_blocks;
    auto stream = std::make_shared<RowStream>();
    stream->enabled = co.repeat == 1;
    co.on_done = [stream](const std::string& p, const Summary& s, double secs) {
      fmt::print(stderr, "{:<20} done in {:.1f} s ({} requests)\n", p, secs, s.completed);
      stream->add(s);
    };
    if (!fractions->empty() || *capacity_only) {
      if (!cf->records_path.empty()) std::filesystem::remove(cf->records_path);
      const std::string plots_dir =
          !plots->empty() || cf->no_plots ? *plots : plots_beside(cf->json_path);
      exit_code = run_fractions(cf->wl, *wl, co, *capacity_only ? std::string() : *fractions,
                                *saturation, *steady, *known_capacity, cf->json_path, plots_dir,
                                cf->records_path, *stream);
      return;
    }
    const std::string extra =
        co.targets.empty()
            ? fmt::format(
                  R"("workload":"{}","engines":{},"preset":"{}","time_scale":{},"num_gpu_blocks":{},"engine_block_size":{})",
                  cf->wl.name, sim->engines, sim->preset, sim->time_scale,
                  sim->engine.num_gpu_blocks, sim->engine.block_size)
            : fmt::format(R"("workload":"{}","engines":{},"targets":{})", cf->wl.name,
                          engine_urls->size(), co.targets.size());
    stream->reset(cf->json_path, extra);
    auto runs = run_compare(*wl, co);
    if (!runs) {
      fmt::print(stderr, "kvroute bench compare: {}\n", runs.error().message);
      exit_code = 2;
      return;
    }
    if (!cf->records_path.empty()) std::filesystem::remove(cf->records_path);
    const std::string plots_dir =
        !plots->empty() || cf->no_plots ? *plots : plots_beside(cf->json_path);
    exit_code = print_compare(*runs, cf->json_path, plots_dir, extra, cf->records_path, {},
                              stream->enabled);
  });

  cmd->callback([cmd, cmp, f, metrics, checks, check, min_hit, max_ttft, max_imb, max_err, o_hit,
                 o_ttft, o_imb, o_err, &exit_code] {
    if (cmp->parsed()) return;
    CheckOptions c;
    const bool any = o_hit->count() + o_ttft->count() + o_imb->count() + o_err->count() > 0;
    // --check alone applies the defaults; an explicit threshold turns the check on.
    if (*check || any) {
      if (!any || o_hit->count() > 0) c.min_hit_rate = *min_hit;
      if (!any || o_ttft->count() > 0) {
        auto d = config::parse_duration(*max_ttft);
        if (!d) {
          fmt::print(stderr, "kvroute bench: bad --max-ttft-p99 '{}'\n", *max_ttft);
          exit_code = 2;
          return;
        }
        c.max_ttft_p99_s = static_cast<double>(d->count()) / 1000.0;
      }
      if (!any || o_imb->count() > 0) c.max_imbalance = *max_imb;
      if (o_err->count() > 0) c.max_error_rate = *max_err;
    }
    (void)cmd;
    exit_code = run_bench(*f, *metrics, c, *check || any);
  });
}

}  // namespace kvroute::bench
