// File: bench/internal/loadgen.h
//
// The load generator of `kvroute bench`: sends a Workload to an OpenAI-compatible URL (the router
// or one engine) and records what each request saw. Asynchronous on one thread (Boost.Asio
// coroutines over http::ConnectionPool); open loop (Poisson session starts at `rate`, or the
// trace's timestamps divided by `speed`) or closed loop (`concurrency` users, each running one
// session after the other). A session's turns go one after the other: the next turn is sent after
// the previous answer plus the turn's think time, with the session header set.
// Every request streams ("stream":true with usage) and records TTFT (first event carrying text),
// inter-token latencies (between text events), end-to-end latency, usage (prompt, completion and
// cached tokens) and the backend named by an `x-kvroute-backend` response header.
// The run is bounded by max_requests and by `duration`: at the deadline, waiting sessions stop and
// in-flight requests are cancelled (recorded as cancelled).
// With backend metrics URLs, each engine's /metrics is scraped before and after (vLLM names);
// optionally each engine's prefix cache is reset first (vLLM's POST /reset_prefix_cache, dev mode
// in vLLM).
//
// Thread-safety: run_load() blocks the calling thread and owns everything it uses.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "bench/internal/workload.h"
#include "common/result.h"

namespace kvroute::bench {

struct LoadOptions {
  std::string url;  // http://host:port of the router or an engine
  // Replicas of the router (bench compare --replicas): when set, each request goes to one of
  // these, in turn (round-robin) or at random, as a Service balancing per request would.
  std::vector<std::string> replica_urls;
  bool spread_random = false;
  std::string model;             // empty: the first id of GET /v1/models (omitted if none)
  double rate = 0;               // > 0: open loop, sessions start as a Poisson process (per second)
  int concurrency = 0;           // closed loop users (used when rate == 0 and no timestamps)
  bool use_timestamps = true;    // trace workloads: replay arrival times (when rate == 0)
  double speed = 1.0;            // trace time is divided by this
  std::size_t max_requests = 0;  // 0: the whole workload
  std::chrono::milliseconds duration{600000};  // hard stop
  std::uint64_t seed = 1;                      // arrival process
  std::vector<std::string> backend_metrics;    // engine base URLs to scrape /metrics from
  bool reset_prefix_cache =
      false;  // POST /reset_prefix_cache to each backend_metrics URL before the run
  std::string session_header = "x-session-id";
  bool progress = true;  // progress on stderr: a bar on a terminal, else a line per progress_every
  std::chrono::milliseconds progress_every{10000};
  std::string progress_label;  // shown before the bar
};

enum class Outcome { kOk, kHttpError, kTransportError, kCancelled };
std::string_view to_string(Outcome o);

struct RequestRecord {
  std::size_t session = 0;  // index in Workload::sessions
  std::size_t turn = 0;
  double start_s = 0;  // since the run started
  double ttft_s = -1;  // -1: no text event
  double e2e_s = -1;
  std::vector<float> itl_s;  // between consecutive text events
  std::uint32_t prompt_tokens = 0;
  std::uint32_t cached_tokens = 0;
  std::uint32_t output_tokens = 0;     // usage.completion_tokens, else the text events
  bool usage = false;                  // a usage object was received
  std::string backend;                 // x-kvroute-backend, if any
  std::string reason;                  // x-kvroute-reason, if any
  std::int64_t predicted_tokens = -1;  // x-kvroute-predicted-tokens (-1: none)
  double queue_ms = -1;                // x-kvroute-queue-ms: time in the router's flow control
  std::string cls;                     // the session's traffic class (--class), if any
  int status = 0;
  Outcome outcome = Outcome::kOk;
  std::string error;
};

// Counters scraped from one engine (sums over label sets).
struct EngineCounters {
  std::string url;
  bool ok = false;
  std::string error;
  double prefix_cache_queries = 0;
  double prefix_cache_hits = 0;
  double request_success = 0;
  double num_gpu_blocks = 0;  // from vllm:cache_config_info (0: unknown)
  double block_size = 0;
};

struct EngineDelta {
  std::string url;
  bool ok = false;
  std::string error;
  double queries = 0;
  double hits = 0;
  double requests = 0;
  double num_gpu_blocks = 0;
  double block_size = 0;
};

struct RunResult {
  std::vector<RequestRecord> records;  // in the order the requests were sent
  std::vector<EngineDelta> engines;    // one per backend metrics URL
  std::string model;
  double wall_s = 0;
  bool hit_deadline = false;
  std::vector<std::string> warnings;  // e.g. an engine that refused /reset_prefix_cache
};

// Runs the workload. Errors only for unusable options (bad URL); failed requests are records.
Result<RunResult> run_load(const Workload& workload, const LoadOptions& options);

// Parses Prometheus text exposition for the counters above (missing ones stay 0).
EngineCounters parse_engine_metrics(std::string_view text);

}  // namespace kvroute::bench
