#include "sim/sim_command.h"

#include <CLI/CLI.hpp>

#include "common/log.h"
#include "sim/server.h"

namespace kvroute::sim {

void add_sim_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<SimOptions>();
  auto log_level = std::make_shared<std::string>("info");
  auto no_chunked = std::make_shared<bool>(false);
  auto no_prefix = std::make_shared<bool>(false);
  auto* cmd =
      app.add_subcommand("sim", "Run simulated vLLM engines (HTTP API, /metrics, KV events)");
  cmd->add_option("--engines", o->engines, "Number of engines (engine i serves on port+i)")
      ->capture_default_str();
  cmd->add_option("--host", o->host, "Address to bind")->capture_default_str();
  cmd->add_option("--port", o->port, "HTTP port of engine 0")->capture_default_str();
  cmd->add_option("--kv-events-port", o->kv_events_port,
                  "ZMQ PUB port of engine 0 (0: no KV events)")
      ->capture_default_str();
  cmd->add_option("--kv-replay-port", o->kv_replay_port,
                  "ZMQ replay port of engine 0 (0: kv-events-port + engines)");
  cmd->add_flag("--kv-events-map", o->kv_events_map_encoding, "Map-encoded events (vLLM v0.26+)");
  cmd->add_option("--model", o->model, "Served model name")->capture_default_str();
  cmd->add_option("--preset", o->preset, "Cost model: llama-3.1-8b-h100, llama-3.2-1b-h100, none")
      ->capture_default_str();
  cmd->add_option("--tokenizer", o->tokenizer,
                  "HF tokenizer directory (default: a word tokenizer)");
  cmd->add_option("--num-gpu-blocks", o->engine.num_gpu_blocks, "KV cache blocks per engine")
      ->capture_default_str();
  cmd->add_option("--block-size", o->engine.block_size, "Tokens per KV block")
      ->capture_default_str();
  cmd->add_option("--max-num-seqs", o->engine.max_num_seqs, "Max running requests")
      ->capture_default_str();
  cmd->add_option("--max-num-batched-tokens", o->engine.max_num_batched_tokens,
                  "Token budget per step")
      ->capture_default_str();
  cmd->add_flag("--no-chunked-prefill", *no_chunked, "Disable chunked prefill");
  cmd->add_flag("--no-prefix-caching", *no_prefix, "Disable prefix caching");
  cmd->add_option("--kv-connector", o->engine.kv_connector,
                  "Act as if vLLM ran a KV-transfer connector that bypasses the local prefix cache "
                  "(e.g. NixlConnector): prefix caching reports enabled but finds nothing");
  cmd->add_option("--vllm-version", o->vllm_version, "Version GET /version reports")
      ->capture_default_str();
  cmd->add_option("--hash-seed", o->engine.hash_seed,
                  "Block-hash root as a different PYTHONHASHSEED gives (0: the model's)")
      ->capture_default_str();
  cmd->add_option("--clock-skew", o->clock_skew_s, "Seconds the engine's Date header is off")
      ->capture_default_str();
  cmd->add_option("--seed", o->engine.seed, "Output-token seed")->capture_default_str();
  cmd->add_option("--time-scale", o->time_scale, "Run this many times faster than real time")
      ->capture_default_str();
  cmd->add_option("--default-max-tokens", o->default_max_tokens,
                  "max_tokens when a request has none")
      ->capture_default_str();
  cmd->add_option("--log-level", *log_level, "trace, debug, info, warn, error, off");
  cmd->callback([o, log_level, no_chunked, no_prefix, &exit_code] {
    set_log_level(*log_level);
    o->engine.enable_chunked_prefill = !*no_chunked;
    o->engine.enable_prefix_caching = !*no_prefix;
    exit_code = run_sim(*o);
  });
}

}  // namespace kvroute::sim
