// `kvroute demo`: the README's main job (ADR 0203). Measures the simulated engines' capacity, then
// offers every policy the same open-loop load (a fraction of that capacity) at the same time, each
// on its own engines and router, and prints the comparison and a verdict line.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <thread>

#include "bench/bench_command.h"
#include "bench/internal/compare.h"
#include "bench/internal/report.h"
#include "bench/internal/workload.h"
#include "common/log.h"
#include "routing/policy.h"

namespace kvroute::bench {

namespace {

// The policies a newcomer compares: the baselines, the peers' cache-aware presets and kvroute's
// default. kvroute-approx (kvroute without KV events) and the load-only random/least-inflight are
// left to `bench compare`.
std::vector<std::string> demo_policies() {
  std::vector<std::string> out;
  const auto known = routing::policy_names();
  for (const char* p : {"round-robin", "session-affinity", "sglang-cache-aware", "gie-prefix",
                        "dynamo-cost", "kvroute"}) {
    if (std::find(known.begin(), known.end(), p) != known.end()) out.emplace_back(p);
  }
  return out;
}

// CPU the demo may use: cores minus the 1-minute load average, at least half a core.
double free_cores() {
  const double cores = std::max(1u, std::thread::hardware_concurrency());
  double load = 0;
  std::ifstream in("/proc/loadavg");
  if (!(in >> load)) load = 0;
  return std::clamp(cores - load, 0.5, cores);
}

}  // namespace

double demo_time_scale(double free, std::size_t policies) {
  // One policy's engines, router and load generator at 1x real time and 80% load use about
  // kCorePerPolicy of a core (measured: 6 policies at 1x, 0.86 cores; ADR 0203). The demo keeps
  // to about 60% of the free CPU so a stall of the VM stays short against the engines' steps, and
  // runs no slower than 0.5x, where the comparison still has several hundred requests.
  constexpr double kCorePerPolicy = 0.14;
  const double want =
      0.6 * free / (kCorePerPolicy * static_cast<double>(std::max<std::size_t>(1, policies)));
  return std::clamp(std::floor(want * 4) / 4, 0.5, 4.0);
}

int run_demo(const DemoOptions& d) {
  set_log_level("warn");
  const auto t0 = std::chrono::steady_clock::now();
  CompareOptions co;
  co.policies = d.policies.empty() ? demo_policies() : d.policies;
  const double free = free_cores();
  const double time_scale =
      d.time_scale > 0 ? d.time_scale : demo_time_scale(free, co.policies.size());

  // Long shared system prompts (16 groups x 2,048 tokens = 2,048 blocks) and chat sessions over
  // engines of 1,024 blocks: the group prefixes fit in the pooled cache but not in one engine, so
  // spreading a group over every engine (round-robin) evicts what cache-aware routing keeps.
  WorkloadOptions w;
  w.name = "mix";
  w.seed = d.seed;
  w.output_len = 32;
  w.sp_groups = 16;
  w.sp_system_len = 2048;
  w.sp_question_len = 64;
  w.mt_turns = 4;
  w.mt_turn_len = 128;
  w.mt_system_len = 512;
  w.mt_think_s = d.think_s;
  co.sim.engines = d.engines;
  co.sim.preset = "llama-3.1-8b-h100";
  co.sim.time_scale = time_scale;
  co.sim.engine.num_gpu_blocks = 1024;
  co.load.seed = d.seed;
  co.load.progress = false;
  co.simultaneous = true;

  // Capacity: round-robin, closed loop, no think time, a bounded number of requests.
  WorkloadOptions sat = w;
  sat.mt_think_s = 0;
  sat.sp_prompts_per_group = std::max<std::uint32_t>(2, static_cast<std::uint32_t>(24 * d.scale));
  sat.mt_sessions = std::max<std::uint32_t>(2, static_cast<std::uint32_t>(48 * d.scale));
  auto sat_wl = make_workload(sat);
  if (!sat_wl) {
    fmt::print(stderr, "demo: {}\n", sat_wl.error().message);
    return 2;
  }
  fmt::print(
      "kvroute demo: {} simulated engines per policy (Llama-3.1-8B on H100 cost model, {}x real "
      "time, {} KV blocks of 16 tokens each)\n",
      d.engines, time_scale, co.sim.engine.num_gpu_blocks);
  std::fflush(stdout);
  co.load.duration =
      std::chrono::milliseconds(static_cast<long>(1000 * std::max(2.0, d.seconds / 5)));
  auto capacity = measure_capacity(*sat_wl, co, 32 * d.engines);
  if (!capacity) {
    fmt::print(stderr, "demo: {}\n", capacity.error().message);
    return 2;
  }

  // The comparison: sized to last about `seconds` at the offered rate, two thirds of the requests
  // shared-prefix questions, one third chat turns.
  const double rate_rps = *capacity * d.load;
  const double n = std::max(24.0, rate_rps * d.seconds * d.scale);
  w.sp_prompts_per_group =
      std::max<std::uint32_t>(2, static_cast<std::uint32_t>(n * 2 / 3 / w.sp_groups));
  w.mt_sessions = std::max<std::uint32_t>(2, static_cast<std::uint32_t>(n / 3 / w.mt_turns));
  auto wl = make_workload(w);
  if (!wl) {
    fmt::print(stderr, "demo: {}\n", wl.error().message);
    return 2;
  }
  co.load.rate = session_rate_for(*wl, *capacity, d.load);
  // A hard stop well past the expected length (a stalled machine still ends the demo).
  co.load.duration = std::chrono::milliseconds(static_cast<long>(1000 * (3 * d.seconds + 10)));
  co.load.concurrency = 0;
  fmt::print(
      "capacity: {:.0f} requests/s (round-robin, closed loop); offered: {:.0f}% of it, open loop\n"
      "workload: {} requests — {} shared-prefix questions ({} groups, {}-token system prompts) and "
      "{} chat sessions of {} turns\n"
      "policies, all at once, each on its own engines: {}\n\n",
      *capacity, d.load * 100, wl->num_requests(), w.sp_groups * w.sp_prompts_per_group,
      w.sp_groups, w.sp_system_len, w.mt_sessions, w.mt_turns, fmt::join(co.policies, ", "));
  std::fflush(stdout);
  auto runs = run_compare(*wl, co);
  if (!runs) {
    fmt::print(stderr, "demo: {}\n", runs.error().message);
    return 2;
  }
  const int rc = print_compare(*runs, "", "", "");
  std::vector<Summary> sums;
  for (const auto& r : *runs) {
    if (r.error.empty()) sums.push_back(r.summary);
  }
  fmt::print("\n{}\n", demo_verdict(sums, "kvroute", kDemoBalanced));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fmt::print(
      "\nhit rate = prompt tokens served from the engines' prefix caches (their /metrics); bound = "
      "the same requests on one pooled LRU cache of all engines' KV blocks; oracle = a "
      "longest-prefix router held to {:.1f}x mean load.\n"
      "TTFT/e2e = time to first/last token in wall-clock time at {}x real time; imbalance = "
      "max/mean requests per engine (1.00 = even); req/s = completed requests per second.\n"
      "Finished in {:.1f} s. Your own workload: kvroute bench compare --help\n",
      co.summary.oracle_load_cap, time_scale, secs);
  return rc;
}

std::string demo_verdict(const std::vector<Summary>& sums, const std::string& policy,
                         double max_imbalance) {
  const auto mine =
      std::find_if(sums.begin(), sums.end(), [&](const Summary& s) { return s.label == policy; });
  if (mine == sums.end() || mine->ttft.n == 0) return policy + ": no result";
  const Summary* p50_rival = nullptr;
  const Summary* p99_rival = nullptr;
  for (const auto& s : sums) {
    if (s.label == policy || s.ttft.n == 0 || s.imbalance <= 0 || s.imbalance > max_imbalance)
      continue;
    if (!p50_rival || s.ttft.p50 < p50_rival->ttft.p50) p50_rival = &s;
    if (!p99_rival || s.ttft.p99 < p99_rival->ttft.p99) p99_rival = &s;
  }
  const auto ms = [](double s) { return fmt::format("{:.1f} ms", s * 1000); };
  if (!p50_rival)
    return fmt::format("{}: the only policy with imbalance <= {:.2f}", policy, max_imbalance);
  const bool balanced = mine->imbalance > 0 && mine->imbalance <= max_imbalance;
  const bool best =
      balanced && mine->ttft.p50 < p50_rival->ttft.p50 && mine->ttft.p99 < p99_rival->ttft.p99;
  return fmt::format(
      "{}: {} among policies with imbalance <= {:.2f} (its own {:.2f}): TTFT p50 {} (next best "
      "{} {}), p99 {} (next best {} {}); hit rate {:.1f}%",
      policy, best ? "lowest TTFT p50 and p99" : "NOT the lowest TTFT p50 and p99", max_imbalance,
      mine->imbalance, ms(mine->ttft.p50), p50_rival->label, ms(p50_rival->ttft.p50),
      ms(mine->ttft.p99), p99_rival->label, ms(p99_rival->ttft.p99), mine->hit_rate * 100);
}

void add_demo_command(CLI::App& app, int& exit_code) {
  auto* cmd =
      app.add_subcommand("demo", "Compare routing policies on simulated engines (no setup needed)");
  auto opts = std::make_shared<DemoOptions>();
  cmd->add_option("--load", opts->load, "Offered load, a fraction of the measured capacity")
      ->check(CLI::Range(0.1, 2.0))
      ->capture_default_str();
  cmd->add_option("--time-scale", opts->time_scale,
                  "Simulated engines' speed, x real time (0: chosen from the free CPU)")
      ->check(CLI::Range(0.0, 100.0))
      ->capture_default_str();
  cmd->add_option("--seconds", opts->seconds, "Approximate length of the comparison")
      ->check(CLI::Range(2.0, 600.0))
      ->capture_default_str();
  cmd->add_option("--seed", opts->seed, "Workload and arrival seed")->capture_default_str();
  cmd->callback([&exit_code, opts] { exit_code = run_demo(*opts); });
}

}  // namespace kvroute::bench
