// File: bench/internal/compare.h
//
// `kvroute bench compare` and `kvroute demo`: for each routing policy, start a fresh in-process
// SimCluster (same options, empty caches) and a Proxy with that policy in front of it, run the same
// workload through the proxy, and summarize (the engines' /metrics are scraped before and after,
// so hit rates and load are ground truth from the engines).
// Or, with `targets`, run the workload through routers that are already running (any
// OpenAI-compatible URL: kvroute, llm-d's gateway, another router) one after the other, in front of
// engines given by URL: each engine's prefix cache is reset before each target (POST
// /reset_prefix_cache) so every router starts cold, and the engines' counters give hit rate and
// load per target. Thread-safety: run_compare() blocks the calling thread; the cluster and proxy
// run their own.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "bench/internal/loadgen.h"
#include "bench/internal/report.h"
#include "bench/internal/workload.h"
#include "common/result.h"
#include "sim/server.h"

namespace kvroute::bench {

// A router to measure, given by URL ("name=http://host:port" on the command line).
struct CompareTarget {
  std::string name;
  std::string url;
};

// Parses "name=url" or a bare "url" (then the name is the URL's host:port).
Result<CompareTarget> parse_target(std::string_view spec);

struct CompareOptions {
  std::vector<std::string> policies;  // empty: every routing::policy_names()
  // Policies defined by a router config file (its `plugins` and `schedulingProfiles`), by name:
  // `bench compare --policy-config NAME=FILE`. A name here overrides a preset of the same name.
  std::vector<std::pair<std::string, std::string>> policy_configs;
  // External routers: when non-empty, no engine or router is started; `policies` must be empty.
  std::vector<CompareTarget> targets;
  std::vector<std::string> engine_urls;  // the targets' engines (/metrics, /reset_prefix_cache)
  bool reset_prefix_cache = true;  // targets: reset every engine's prefix cache before each target
  sim::SimOptions sim;             // ports and KV-event endpoints are forced to OS-picked ones
  bool kv_events = true;           // engines publish KV events; backends get their endpoints
  LoadOptions load;                // url and backend_metrics are set per run
  SummaryOptions summary;
  int proxy_threads = 1;
  // Run the whole comparison this many times (policies interleaved: A B C, A B C, ...) and pool
  // each policy's runs into one summary (summarize_pooled); the machine's noise then averages out.
  int repeat = 1;
  // Run every policy at the same time, each with its own engines and router (one thread per load
  // generator), instead of one after the other: a stall of a shared machine then delays all
  // policies alike, and the comparison takes the time of one run. Each policy's engines still see
  // only its load.
  bool simultaneous = false;
  std::string proxy_log_level = "warn";
  // Active-active replicas (issue 17): each policy runs `replicas` routers in front of its
  // engines and the load spreads requests over them (spread_random: at random, else in turn).
  // `exchange`: "on" (the replicas exchange decisions and load: row "POLICY xN"), "off"
  // (uncoordinated: "POLICY xN uncoord"), or "both" (two rows per policy).
  int replicas = 1;
  bool spread_random = false;
  std::string exchange = "on";
  // Called before and after each policy's run (for progress lines).
  std::function<void(const std::string& policy)> on_start;
  std::function<void(const std::string& policy, const Summary& s, double seconds)> on_done;
};

struct CompareRun {
  std::string policy;  // or the target's name
  std::string error;   // the run could not start (policy unknown or misconfigured)
  Summary summary;
  RunResult run;
};

// Errors only for an invalid option; a policy that fails to start is a CompareRun with `error`.
Result<std::vector<CompareRun>> run_compare(const Workload& workload,
                                            const CompareOptions& options);

// The engines' capacity for a workload, in completed requests per second: the closed-loop
// throughput of round-robin (or, with targets, of the first target) with `concurrency` users and no
// think time. Used to run the comparison at fixed fractions of capacity (open loop), where policies
// are judged at equal load.
// `steady`: count only the completions while every user had work (from a fifth of the way to the
// last request sent until it), not the drain at the end, where a long tail of output lengths
// stretches the wall clock; else completed requests over the whole run.
Result<double> measure_capacity(const Workload& saturating_workload, const CompareOptions& options,
                                int concurrency, bool steady = false);

// The Poisson session rate that offers `fraction` x `capacity_rps` requests per second on this
// workload (a session of k turns brings k requests).
double session_rate_for(const Workload& workload, double capacity_rps, double fraction);

// Prints a comparison to stdout: the table (unless `rows_printed`), where each policy's hits went,
// its warnings; a policy that could not run is named on stderr (exit code 2). Non-empty paths:
// the JSON summaries, the per-request records CSV (appended, labels + `label_suffix`) and plots.
// Returns the exit code (bench_command.cc).
int print_compare(const std::vector<CompareRun>& runs, const std::string& json_path,
                  const std::string& plots_dir, const std::string& extra_json,
                  const std::string& records_path = {}, const std::string& label_suffix = {},
                  bool rows_printed = false);

// Splits "a,b,c" (spaces trimmed, empties dropped).
std::vector<std::string> split_list(std::string_view s);

}  // namespace kvroute::bench
