// File: sim/internal/engine.h
//
// Engine: a deterministic model of one vLLM V1 engine core (scheduler + paged KV cache with prefix
// caching), for `kvroute sim`. No I/O, threads or clocks: the caller adds requests, calls step()
// once per engine iteration, waits the returned duration (scaled as it likes), then delivers the
// outputs. KV events come out of take_events() once per step; metrics out of stats().
// docs/design/sim-engine.md says what matches vLLM and what is simplified.
//
//   KVROUTE_TRY(auto engine, Engine::create({.model = "meta-llama/Llama-3.1-8B-Instruct"}));
//   KVROUTE_TRY(std::uint64_t id, engine.add_request({.prompt_token_ids = ids, .max_tokens = 16}));
//   while (engine.has_work()) {
//     StepResult r = engine.step(now);
//     auto events = engine.take_events();   // publish one EventBatch when non-empty
//     now += r.duration_s;                  // then deliver r.outputs
//   }
//
// Thread-safety: not synchronized: an Engine (with its BlockPool) belongs to one thread. In
// `kvroute sim` that is its server's single io_context thread, which runs both the HTTP handlers
// and the step loop; other threads reach it by posting there (SimCluster::stats, sim/server.h).
#pragma once

#include <array>
#include <boost/unordered/unordered_flat_map.hpp>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "kv_events/event.h"
#include "sim/block_pool.h"
#include "sim/internal/cost_model.h"

namespace kvroute::sim {

struct EngineConfig {
  std::string model;                    // seeds the block hashes (hash64(model))
  std::uint32_t num_gpu_blocks = 8192;  // all usable (vLLM reserves one more as its null block)
  std::uint32_t block_size = 16;
  std::uint32_t max_num_seqs = 256;
  std::uint32_t max_num_batched_tokens = 8192;
  // 0: num_gpu_blocks * block_size (capped at max_num_batched_tokens when chunked prefill is off).
  std::uint32_t max_model_len = 0;
  bool enable_chunked_prefill = true;
  bool enable_prefix_caching = true;
  // A KV-transfer connector as vLLM's --kv-transfer-config names it (e.g. NixlConnector): set, the
  // local prefix cache finds nothing although prefix caching reports enabled, the misconfiguration
  // `kvroute doctor` finds (docs/doctor.md).
  std::string kv_connector;
  // 0: blocks hash from hash64(model) as every engine of the model does; else a different root, as
  // vLLM engines with different PYTHONHASHSEED values have (`kvroute doctor` finds it).
  std::uint64_t hash_seed = 0;
  bool emit_kv_events = true;         // record events for take_events() (needs prefix caching)
  std::uint64_t seed = 0;             // output-token generator
  std::uint32_t vocab_size = 128256;  // outputs avoid the top 256 ids (special tokens)
  std::optional<CostModel> cost;      // none: every step takes 0 s
};

// One generation request, already tokenized.
struct SimRequest {
  std::vector<std::uint32_t> prompt_token_ids;
  std::optional<std::uint32_t> max_tokens;  // none: up to max_model_len
  std::uint32_t min_tokens = 0;
  std::vector<std::uint32_t> stop_token_ids;  // a generated id in this list finishes with "stop"
  std::optional<std::uint64_t> seed;          // per-request sampling seed (SamplingParams.seed)
};

enum class FinishReason : std::uint8_t { kNone, kStop, kLength, kAbort };
// vLLM's spelling: "stop", "length", "abort" ("" for kNone).
const char* finish_reason_name(FinishReason r);

// What one request produced in a step. A request appears only in steps where it sampled a token
// (a prompt chunk that does not end the prompt produces nothing). One token per step: no
// speculative decoding.
struct RequestOutput {
  std::uint64_t request_id = 0;
  std::uint32_t token_id = 0;
  bool first_token = false;  // first token of the request (ends its first prefill)
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  std::uint32_t prompt_tokens = 0;
  std::uint32_t cached_tokens = 0;  // prefix-cache hit at first admission (usage.*.cached_tokens)
  std::uint32_t num_output_tokens = 0;  // generated so far, this token included
};

struct StepResult {
  StepShape shape;                         // what the step computed (input of the cost model)
  double start_s = 0;                      // the `now` passed to step()
  double duration_s = 0;                   // cost model's estimate; 0 without one
  std::uint32_t num_scheduled_tokens = 0;  // iteration tokens (vllm:iteration_tokens_total)
  std::uint32_t num_preempted = 0;         // requests preempted in this step
  std::vector<RequestOutput> outputs;
};

struct EngineStats {
  std::uint32_t num_requests_running = 0;
  std::uint32_t num_requests_waiting = 0;
  double kv_cache_usage_perc = 0;  // blocks referenced by requests / num_gpu_blocks, 0..1
  std::uint32_t num_used_blocks = 0;
  std::uint32_t num_cached_blocks = 0;           // blocks holding a cached hash (used or free)
  std::uint64_t prefix_cache_queries_total = 0;  // tokens, first lookups of new requests
  std::uint64_t prefix_cache_hits_total = 0;
  std::uint64_t preempted_prefix_cache_queries_total = 0;  // lookups of resumed requests
  std::uint64_t preempted_prefix_cache_hits_total = 0;     // (vLLM does not export these)
  std::uint64_t num_preemptions_total = 0;
  std::uint64_t prompt_tokens_total = 0;         // counted when a request's first token is out
  std::uint64_t prompt_tokens_cached_total = 0;  // their cached_tokens, counted at the same time
  std::uint64_t generation_tokens_total = 0;
  std::uint64_t request_success_stop_total = 0;
  std::uint64_t request_success_length_total = 0;
  std::uint64_t num_aborted_total = 0;     // not in request_success (see the design doc)
  std::uint64_t num_steps_total = 0;       // steps that scheduled something
  std::uint64_t iteration_tokens_sum = 0;  // sum over those steps of num_scheduled_tokens
};

class Engine {
 public:
  // Validates the configuration (vLLM's start-up checks); errors are kInvalidArgument.
  static Result<Engine> create(EngineConfig config);

  Engine(Engine&&) noexcept;
  Engine& operator=(Engine&&) noexcept;
  ~Engine();

  // Queues a request (FCFS). Errors carry vLLM's 400 messages (empty prompt, context too long,
  // max_tokens too large, out-of-vocabulary id, bad min_tokens).
  Result<std::uint64_t> add_request(SimRequest request);
  // Drops a queued or running request (client gone): frees its blocks, no more outputs. False
  // when the id is unknown or already finished.
  bool abort(std::uint64_t request_id);

  bool has_work() const { return !running_.empty() || !waiting_.empty(); }
  // Schedules and runs one iteration. `now_s` is only echoed in the result.
  StepResult step(double now_s = 0);
  // KV events since the last call, in order (empty without prefix caching / with events off).
  std::vector<kv_events::Event> take_events() { return pool_.take_events(); }
  // Drops the prefix cache (AllBlocksCleared). False, and nothing changes, while a request runs.
  bool reset_prefix_cache();

  EngineStats stats() const;
  const EngineConfig& config() const { return config_; }
  std::uint32_t max_model_len() const { return config_.max_model_len; }
  std::uint64_t hash_seed() const { return hash_seed_; }

  // Ground truth for tests: the hash of every cached block, sorted (duplicates kept).
  std::vector<std::uint64_t> cached_block_hashes_for_test() const { return pool_.cached_hashes(); }
  const BlockPool& block_pool_for_test() const { return pool_; }
  // Cross-checks request block lists against the pool's ref counts; false on inconsistency.
  bool check_invariants_for_test() const;

 private:
  struct Request;
  explicit Engine(EngineConfig config);

  void update_block_hashes(Request& r);
  std::uint32_t find_cache_hit(Request& r);  // fills hit_blocks_, returns hit tokens
  bool allocate_slots(Request& r, std::uint32_t num_computed, std::uint32_t num_new);
  void preempt(Request* r);
  std::uint32_t sample_token(const Request& r, std::uint32_t position) const;
  void finish(Request* r);

  EngineConfig config_;
  std::uint64_t hash_seed_ = 0;
  std::uint32_t sample_vocab_ = 0;
  BlockPool pool_;
  boost::unordered_flat_map<std::uint64_t, std::unique_ptr<Request>> requests_;
  std::vector<Request*> running_;  // admission order
  std::deque<Request*> waiting_;
  std::uint64_t next_id_ = 1;
  EngineStats counters_;  // the cumulative fields; gauges are filled in by stats()
  // Scratch reused across steps.
  std::vector<std::uint32_t> hit_blocks_;
  std::vector<std::pair<Request*, std::uint32_t>> scheduled_;
};

}  // namespace kvroute::sim
