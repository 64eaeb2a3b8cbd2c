// File: sim/server.h
//
// SimCluster: N simulated vLLM engines in one process (`kvroute sim`). Engine i serves vLLM's HTTP
// API on port+i (completions and chat, streaming or not, /v1/models, /tokenize, /health,
// /reset_prefix_cache, /metrics with vLLM's names) and publishes KV events on kv_events_port+i
// (replay ROUTER on kv_replay_port+i). Each engine runs on its own thread: its HTTP handlers and
// its step loop share one io_context, so the engine model needs no locks.
//
// Thread-safety: start()/stop() from one controlling thread. cached_block_hashes() and stats()
// may be called from any thread but an engine's own: they post to the engine's thread and wait.
// The engines' publishers share one PublisherHub, whose I/O thread owns the ZMQ sockets.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "sim/internal/engine.h"

namespace kvroute::sim {

struct SimOptions {
  int engines = 1;
  std::string host = "127.0.0.1";
  std::uint16_t port = 8001;            // 0: OS-picked ports (tests)
  std::uint16_t kv_events_port = 0;     // 0: no KV events; else PUB on kv_events_port + i
  std::uint16_t kv_replay_port = 0;     // 0: kv_events_port + engines
  bool kv_events_ephemeral = false;     // tests: bind tcp://127.0.0.1:* for each engine
  bool kv_events_map_encoding = false;  // v0.26+ map-encoded events
  std::string model = "meta-llama/Llama-3.1-8B-Instruct";
  std::string preset = "llama-3.1-8b-h100";  // cost model; "none": steps take no time
  std::string tokenizer;                     // HF tokenizer dir; empty: the word tokenizer
  double time_scale = 1.0;                   // >1 runs faster than real time
  std::uint32_t default_max_tokens = 16;
  std::string vllm_version = "0.11.0";  // GET /version
  double clock_skew_s = 0;              // the Date header of /health is this far off (doctor tests)
  EngineConfig engine;                  // model/cost are filled from the fields above
};

// Engines for tests and tools that drive a cluster in-process: HTTP and KV events on loopback
// ports the OS picks, steps that take no simulated time ("none"), `num_gpu_blocks` blocks each.
SimOptions loopback_options(int engines, std::string model, std::uint32_t num_gpu_blocks);

struct EngineEndpoints {
  std::string url;        // http://host:port
  std::string kv_events;  // tcp://host:port or ""
  std::string kv_replay;  // tcp://host:port or ""
};

class SimCluster {
 public:
  explicit SimCluster(SimOptions options);
  ~SimCluster();
  SimCluster(const SimCluster&) = delete;
  SimCluster& operator=(const SimCluster&) = delete;

  Status start();
  void stop();
  const std::vector<EngineEndpoints>& endpoints() const;
  // Ground truth for tests (runs on the engine's thread and waits for it).
  std::vector<std::uint64_t> cached_block_hashes(int engine);
  EngineStats stats(int engine);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// `kvroute sim` entry point: runs until SIGINT/SIGTERM.
int run_sim(SimOptions options);

}  // namespace kvroute::sim
