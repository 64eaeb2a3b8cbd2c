// File: config/config.h
//
// The router's configuration: one schema for the YAML file (`kvroute serve --config FILE`) and the
// command-line flags (flags override the file). docs/config.md documents every key. Errors name the
// file, line and field and fail start-up; nothing runs half-configured.
//
// Thread-safety: plain values, not synchronized: a Config is built and resolved on one thread at
// start-up, then only read (any number of threads may read it). The functions keep no state.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace kvroute::config {

using Duration = std::chrono::milliseconds;

struct BackendConfig {
  std::string url;                  // http://host:port
  std::string name;                 // defaults to the URL
  std::vector<std::string> models;  // optional: otherwise learned from GET /v1/models
  std::string kv_events_endpoint;   // optional ZMQ PUB endpoint of the engine (precise routing)
  std::string kv_events_replay;     // optional ZMQ ROUTER replay endpoint
  std::optional<std::uint32_t> num_gpu_blocks;  // optional KV capacity (else scraped)
};

// A scheduler plugin instance (llm-d style): a type, a unique name and its parameters as YAML text.
struct PluginConfig {
  std::string type;
  std::string name;
  std::string parameters_yaml;  // "{}" when absent
  int line = 0;
};
struct ProfilePluginRef {
  std::string plugin_ref;
  double weight = 1.0;
};
struct SchedulingProfile {
  std::string name;
  std::vector<ProfilePluginRef> plugins;
};

// A model with its own tokenizer (and chat template): the router must compute the ids that the
// engines serving it compute, model by model.
struct ModelConfig {
  std::string name;       // the OpenAI `model` of requests
  std::string tokenizer;  // HF tokenizer directory, or "word"
};

// `flowControl` (issue 18, docs/design/flow-control.md): admission, priority bands and fairness
// when the engines are saturated. Names follow llm-d's flow control where it has them.
struct ObjectivePriority {
  std::string name;  // the objective header's value
  int priority = 0;  // higher dispatches first; negative is sheddable
};
struct TenantRateLimit {
  std::string name;                // the tenant (fairness id); empty for the default
  double requests_per_second = 0;  // 0: unlimited
  double tokens_per_second = 0;    // prompt + expected output tokens; 0: unlimited
  Duration burst{1000};            // the buckets hold this long of their rates
};
struct FlowControlConfig {
  bool enabled = false;
  // saturationDetector
  double queue_depth_threshold = 5;
  double kv_cache_util_threshold = 0.8;
  Duration metrics_staleness{3000};
  double headroom = 0;
  int max_concurrency = 0;     // per engine, this router's requests in flight (0: no cap)
  int engine_max_running = 0;  // the engines' max_num_seqs (0: learned from their metrics)
  // queues
  Duration default_request_ttl{60000};
  std::size_t max_requests = 0;  // all bands (0: none)
  std::size_t max_bytes = 0;
  std::size_t band_max_requests = 5000;
  std::size_t band_max_bytes = std::size_t{1} << 30;
  std::string fairness = "round-robin";  // round-robin | vtc | global-strict
  // "best" (default, ADR 0027): the scheduler picks among all candidates and its pick goes if it
  // has room, else the request waits for room; "with-room": among those with room (a request
  // spills off a full prefix holder); "all": among all once any has room (llm-d's semantics: a
  // request may join a full engine's queue).
  std::string pick_among = "best";
  bool shed_sheddable = true;  // negative priority: 429 under saturation
  // classification
  std::string objective_header = "x-gateway-inference-objective";
  std::string fairness_header = "x-gateway-inference-fairness-id";
  std::vector<ObjectivePriority> objectives;
  // Bands of requests without a listed objective: by API-key tenant, then by model.
  std::vector<ObjectivePriority> tenant_priorities;
  std::vector<ObjectivePriority> model_priorities;
  // rateLimits: token buckets per tenant, 429 with Retry-After.
  TenantRateLimit default_rate_limit;
  std::vector<TenantRateLimit> tenant_rate_limits;
};

// replicas (issue 17, docs/adr/0280): active-active replicas exchange routing decisions and
// in-flight load over ZMQ. Off while `listen` is empty.
struct ReplicasConfig {
  std::string listen;              // this replica's ZMQ endpoint, e.g. tcp://0.0.0.0:5570
  std::vector<std::string> peers;  // the others' (the same list on every replica is fine)
  Duration load_interval{50};      // how often this replica's in-flight load is sent
  Duration peer_timeout{1000};     // a peer silent this long is forgotten (its load taken back)
  // peersDns: host:port of a headless Service (publishNotReadyAddresses: true); every address
  // is a peer, re-resolved every dnsInterval.
  std::string peers_dns;
  Duration dns_interval{5000};
  // warmupTimeout: a replica with peers reports not ready until a peer's snapshot arrived, or
  // this long (0: no warm-up).
  Duration warmup_timeout{5000};
  std::size_t snapshot_blocks = 1u << 20;  // snapshotBlocks: the decision log peers warm from
  bool enabled() const { return !listen.empty(); }
};

struct Config {
  // server
  std::string address = "0.0.0.0";
  std::uint16_t port = 8080;
  int threads = 1;
  std::size_t max_body_bytes = 32u << 20;
  std::size_t max_header_bytes = 64u << 10;
  std::size_t max_connections = 100000;
  Duration request_timeout{30000};
  Duration keepalive_timeout{120000};
  Duration shutdown_grace{30000};
  // upstream
  Duration connect_timeout{2000};
  Duration first_byte_timeout{300000};
  Duration idle_timeout{60000};
  int max_retries = 2;
  std::size_t max_idle_per_backend = 256;
  // health
  Duration health_interval{2000};
  Duration health_timeout{1000};
  std::string health_path = "/health";
  int failure_threshold = 3;               // consecutive failures that eject a backend
  Duration ejection_time{10000};           // before an ejected backend is probed again
  Duration metrics_scrape_interval{1000};  // engines' /metrics; 0 disables
  // routing
  std::string policy = "kvroute";  // cache-aware by default (docs/adr/0015)
  std::string session_header = "x-session-id";
  bool debug_headers = false;       // x-kvroute-backend / x-kvroute-reason response headers
  std::string tokenizer;            // path of a HF tokenizer directory; empty: character blocks
  std::vector<ModelConfig> models;  // per-model tokenizers; models not listed use `tokenizer`
  // KV-event endpoints of backends that name none, from their URL: "{host}" and "{port}" (the
  // backend's HTTP port) are substituted, e.g. tcp://{host}:5557 as llm-d configures vLLM pods.
  std::string kv_events_template;
  std::string kv_events_replay_template;
  std::uint32_t block_size = 16;
  std::vector<PluginConfig> plugins;
  std::vector<SchedulingProfile> profiles;
  // backends: the static list, and discovery adding and removing backends while running
  // (docs/adr/0021). At most one dynamic source: a file of endpoints, or an InferencePool.
  std::vector<BackendConfig> backends;
  std::string endpoints_file;              // YAML file of `backends`, reloaded when it changes
  Duration discovery_poll_interval{1000};  // how often the file is checked
  std::uint32_t max_endpoints = 0;  // backend slots; 0: the static count, or 64 with discovery
  std::string pool_name;            // InferencePool (inference.networking.k8s.io/v1)
  std::string pool_namespace;       // "": the pod's own namespace in a cluster, else "default"
  std::string pool_group = "inference.networking.k8s.io";
  std::string kube_api_server;  // "": in-cluster (KUBERNETES_SERVICE_HOST), else the kubeconfig's
  std::string kubeconfig;       // kubeconfig file outside the cluster
  bool dynamic_discovery() const { return !endpoints_file.empty() || !pool_name.empty(); }
  // security (docs/adr/0022, 0023)
  std::string tls_cert_file;           // TLS for clients: the certificate chain (PEM)
  std::string tls_key_file;            // and its key
  std::string tls_client_ca_file;      // mTLS: clients must present a certificate chaining to it
  Duration tls_reload_interval{1000};  // how often the files are checked for a rotation
  std::string upstream_ca_file;        // https engines: the CA ("": the system store)
  std::string upstream_cert_file;      // client certificate to engines (mTLS)
  std::string upstream_key_file;
  bool upstream_insecure_skip_verify = false;  // explicit opt-out of verification
  std::string api_keys_file;  // clients' API keys, one per line with an optional tenant
  // What reaches the engines in Authorization: "forward" (the client's), "none", "key" (the
  // router's own, from upstream_api_key_file). "": forward without API keys, else none (or key
  // when a key file is set).
  std::string upstream_authorization;
  std::string upstream_api_key_file;
  // The admin listener (/metrics, /health, /ready): off (-1) serves them on the data port; 0: the
  // OS picks. Its bearer token (a file), when set, guards everything but /health and /ready.
  std::string admin_address = "0.0.0.0";
  int admin_port = -1;
  std::string admin_token_file;
  // The upstream_authorization mode in effect.
  std::string effective_upstream_authorization() const {
    if (!upstream_authorization.empty()) return upstream_authorization;
    if (!upstream_api_key_file.empty()) return "key";
    return api_keys_file.empty() ? "forward" : "none";
  }
  // logging
  std::string log_level = "info";
  FlowControlConfig flow_control;
  ReplicasConfig replicas;
};

// Loads a YAML file. Unknown keys are errors (typos must not pass silently).
Result<Config> load_file(const std::string& path);
// Parses YAML text; `source` names it in error messages.
Result<Config> load_yaml(const std::string& text, const std::string& source);
// Fills what the config derives: backends' KV-event endpoints from the templates. Idempotent.
Status resolve(Config& c);
// The same for one backend found by discovery (the templates of `c`); fills its name too.
Status resolve_backend(const Config& c, BackendConfig& b);
// An endpoints file: `backends:` with the config file's backend schema (or the bare list).
Result<std::vector<BackendConfig>> load_backends_yaml(const std::string& text,
                                                      const std::string& source);
// Checks cross-field rules (at least one backend, valid URLs, positive limits).
Status validate(const Config& c);
// Parses "250ms", "2s", "1m", "1h" or a bare number of milliseconds.
Result<Duration> parse_duration(std::string_view s);

}  // namespace kvroute::config
