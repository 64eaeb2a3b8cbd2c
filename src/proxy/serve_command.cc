#include "proxy/serve_command.h"

#include <fmt/format.h>

#include <CLI/CLI.hpp>

#include "common/log.h"
#include "proxy/proxy.h"

namespace kvroute::proxy {

namespace {
struct ServeFlags {
  std::string config_file;
  std::string address;
  int port = -1;
  int threads = 0;
  std::vector<std::string> backends;
  std::vector<std::string> kv_events;
  std::vector<std::string> kv_replay;
  std::string policy;
  std::string log_level;
  std::string session_header;
  std::string tokenizer;
  std::vector<std::string> model_tokenizers;
  std::string kv_events_template;
  std::string kv_replay_template;
  bool debug_headers = false;
  int max_retries = -1;
};
}  // namespace

void add_serve_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<ServeFlags>();
  auto* cmd = app.add_subcommand("serve", "Run the OpenAI-compatible routing proxy");
  // Every flag's help names its default: the values of a default-constructed config::Config, so the
  // help cannot drift from the code.
  const config::Config d;
  const auto ms = [](std::chrono::milliseconds v) { return std::to_string(v.count()) + "ms"; };
  cmd->add_option("--config", flags->config_file,
                  "YAML config file (docs/config.md); flags override it");
  cmd->add_option("--address", flags->address, "Listen address")->default_str(d.address);
  cmd->add_option("--port", flags->port, "Listen port (0 lets the OS pick)")
      ->default_str(std::to_string(d.port));
  cmd->add_option("--threads", flags->threads, "Worker threads")
      ->default_str(std::to_string(d.threads));
  cmd->add_option("--backend", flags->backends, "Backend URL, repeatable (http://host:port)");
  cmd->add_option("--kv-events", flags->kv_events,
                  "KV-event PUB endpoint of the n-th --backend, repeatable (tcp://host:port)");
  cmd->add_option("--kv-events-replay", flags->kv_replay,
                  "Replay endpoint of the n-th --backend, repeatable");
  cmd->add_option(
         "--policy", flags->policy,
         "Routing policy: kvroute (cache- and load-aware), round-robin, random, least-inflight, "
         "session-affinity, sglang-cache-aware, gie-prefix, dynamo-cost")
      ->default_str(d.policy);
  cmd->add_option("--log-level", flags->log_level, "trace, debug, info, warn, error, off")
      ->default_str(d.log_level);
  cmd->add_option("--session-header", flags->session_header, "Header carrying the session key")
      ->default_str(d.session_header);
  cmd->add_option(
         "--tokenizer", flags->tokenizer,
         "HF tokenizer directory for token-block routing, or \"word\" (empty: 64-character blocks)")
      ->default_str("\"\"");
  cmd->add_option("--model-tokenizer", flags->model_tokenizers,
                  "MODEL=DIR: the tokenizer of one model (repeatable; others use --tokenizer)");
  cmd->add_option("--kv-events-template", flags->kv_events_template,
                  "KV-event endpoint of backends without --kv-events, e.g. tcp://{host}:5557")
      ->default_str("\"\" (none)");
  cmd->add_option("--kv-events-replay-template", flags->kv_replay_template,
                  "Replay endpoint template, e.g. tcp://{host}:5558")
      ->default_str("\"\" (none)");
  cmd->add_option("--max-retries", flags->max_retries, "Retries on another backend before any byte")
      ->default_str(std::to_string(d.max_retries));
  cmd->add_flag("--debug-headers", flags->debug_headers,
                "Add x-kvroute-backend/x-kvroute-reason headers")
      ->default_str(d.debug_headers ? "true" : "false");
  cmd->footer(fmt::format(
      "Config-file defaults (docs/config.md): maxBodyBytes {}, maxConnections {}, requestTimeout "
      "{}, "
      "keepaliveTimeout {}, shutdownGracePeriod {}, connectTimeout {}, firstByteTimeout {}, "
      "idleTimeout {}, "
      "maxIdlePerBackend {}, health interval {}, timeout {}, path {}, failureThreshold {}, "
      "ejectionTime {}, "
      "metricsScrapeInterval {}, blockSize {}.",
      d.max_body_bytes, d.max_connections, ms(d.request_timeout), ms(d.keepalive_timeout),
      ms(d.shutdown_grace), ms(d.connect_timeout), ms(d.first_byte_timeout), ms(d.idle_timeout),
      d.max_idle_per_backend, ms(d.health_interval), ms(d.health_timeout), d.health_path,
      d.failure_threshold, ms(d.ejection_time), ms(d.metrics_scrape_interval), d.block_size));
  cmd->callback([flags, &exit_code] {
    config::Config cfg;
    if (!flags->config_file.empty()) {
      auto loaded = config::load_file(flags->config_file);
      if (!loaded) {
        spdlog::error("{}", loaded.error().message);
        exit_code = 2;
        return;
      }
      cfg = std::move(*loaded);
    }
    if (!flags->address.empty()) cfg.address = flags->address;
    if (flags->port >= 0) cfg.port = static_cast<std::uint16_t>(flags->port);
    if (flags->threads > 0) cfg.threads = flags->threads;
    if (!flags->policy.empty()) cfg.policy = flags->policy;
    if (!flags->log_level.empty()) cfg.log_level = flags->log_level;
    if (!flags->session_header.empty()) cfg.session_header = flags->session_header;
    if (!flags->tokenizer.empty()) cfg.tokenizer = flags->tokenizer;
    for (const auto& spec : flags->model_tokenizers) {
      const auto eq = spec.rfind('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size()) {
        spdlog::error("--model-tokenizer '{}': expected MODEL=DIR", spec);
        exit_code = 2;
        return;
      }
      std::erase_if(cfg.models,
                    [&](const config::ModelConfig& m) { return m.name == spec.substr(0, eq); });
      cfg.models.push_back({spec.substr(0, eq), spec.substr(eq + 1)});
    }
    if (!flags->kv_events_template.empty()) cfg.kv_events_template = flags->kv_events_template;
    if (!flags->kv_replay_template.empty())
      cfg.kv_events_replay_template = flags->kv_replay_template;
    if (flags->debug_headers) cfg.debug_headers = true;
    if (flags->max_retries >= 0) cfg.max_retries = flags->max_retries;
    if (flags->kv_events.size() > flags->backends.size() ||
        flags->kv_replay.size() > flags->kv_events.size()) {
      spdlog::error(
          "--kv-events and --kv-events-replay pair with --backend by position: give at most one "
          "each per backend");
      exit_code = 2;
      return;
    }
    for (std::size_t i = 0; i < flags->backends.size(); ++i) {
      config::BackendConfig b;
      b.url = flags->backends[i];
      b.name = b.url;
      if (i < flags->kv_events.size()) b.kv_events_endpoint = flags->kv_events[i];
      if (i < flags->kv_replay.size()) b.kv_events_replay = flags->kv_replay[i];
      cfg.backends.push_back(std::move(b));
    }
    if (auto ok = config::validate(cfg); !ok) {
      spdlog::error("{}", ok.error().message);
      exit_code = 2;
      return;
    }
    exit_code = run_serve(std::move(cfg));
  });
}

}  // namespace kvroute::proxy
