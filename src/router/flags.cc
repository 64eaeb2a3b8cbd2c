#include "router/flags.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>

#include "metrics/registry.h"
#include "router/router.h"

namespace kvroute::router {

namespace {
void add_discovery_flags(CLI::App& cmd, RoutingFlags& f) {
  cmd.add_option("--endpoints-file", f.endpoints_file,
                 "YAML file of backends (`backends:` as in --config), reloaded when it changes");
  cmd.add_option("--pool-name", f.pool_name,
                 "InferencePool whose Ready pods are the backends (Kubernetes discovery)");
  cmd.add_option("--pool-namespace", f.pool_namespace,
                 "Namespace of --pool-name (default: the pod's own, else \"default\")");
  cmd.add_option("--kubeconfig", f.kubeconfig,
                 "kubeconfig outside the cluster (default: in-cluster service account)");
  cmd.add_option("--kube-api-server", f.kube_api_server,
                 "Kubernetes API server URL, overriding the kubeconfig's or in-cluster one");
  cmd.add_option("--pool-group", f.pool_group,
                 "API group of --pool-name (inference.networking.x-k8s.io: the v1alpha2 pool)")
      ->default_str(config::Config().pool_group);
  cmd.add_flag("--check", f.check,
               "Validate the configuration (flags, --config, tokenizers, discovery) and exit");
  cmd.add_option("--max-endpoints", f.max_endpoints,
                 "Backend slots with discovery (default 64; the static count without)");
  cmd.add_option("--replicas-listen", f.replicas_listen,
                 "Active-active replicas: this replica's ZMQ endpoint (tcp://0.0.0.0:5570)");
  cmd.add_option("--replica-peer", f.replica_peers,
                 "Active-active replicas: a peer's --replicas-listen endpoint (repeatable)");
  cmd.add_option("--replica-peers-dns", f.replica_peers_dns,
                 "Active-active replicas: host:port of a headless Service whose every address is a "
                 "peer (re-resolved every 5 s)");
}
void add_security_flags(CLI::App& cmd, RoutingFlags& f) {
  cmd.add_option("--tls-cert", f.tls_cert,
                 "TLS for clients: certificate chain (PEM), reloaded when it changes");
  cmd.add_option("--tls-key", f.tls_key, "TLS for clients: the certificate's key (PEM)");
  cmd.add_option("--tls-client-ca", f.tls_client_ca,
                 "mTLS: clients must present a certificate from this CA (PEM)");
  cmd.add_option("--upstream-ca", f.upstream_ca,
                 "https engines: CA file (default: the system store)");
  cmd.add_option("--upstream-cert", f.upstream_cert,
                 "https engines: client certificate (mTLS), with --upstream-key");
  cmd.add_option("--upstream-key", f.upstream_key, "https engines: the client certificate's key");
  cmd.add_flag("--upstream-insecure-skip-verify", f.upstream_insecure_skip_verify,
               "https engines: do not verify their certificates (testing only)");
  cmd.add_option(
      "--api-keys-file", f.api_keys_file,
      "Clients' API keys, one per line with an optional tenant name; reloaded on change");
  cmd.add_option("--upstream-authorization", f.upstream_authorization,
                 "Authorization sent to engines: forward, none or key (default: forward without "
                 "--api-keys-file, else none)");
  cmd.add_option("--upstream-api-key-file", f.upstream_api_key_file,
                 "The router's own key for engines (--upstream-authorization key)");
  cmd.add_option("--admin-address", f.admin_address, "Address of the admin listener")
      ->default_str(config::Config().admin_address);
  cmd.add_option("--admin-port", f.admin_port,
                 "Admin listener port for /metrics, /health and /ready (0: the OS picks); off by "
                 "default for serve, which then serves them on its data port");
  cmd.add_option("--admin-token-file", f.admin_token_file,
                 "Bearer token for the admin listener (all but /health and /ready)");
}
}  // namespace

void add_routing_flags(CLI::App& cmd, RoutingFlags& f) {
  // Defaults named in the help are those of a default-constructed config::Config, so the help
  // cannot drift from the code.
  const config::Config d;
  cmd.add_option("--config", f.config_file, "YAML config file (docs/config.md); flags override it");
  cmd.add_option("--backend", f.backends, "Backend URL, repeatable (http://host:port)");
  cmd.add_option("--kv-events", f.kv_events,
                 "KV-event PUB endpoint of the n-th --backend, repeatable (tcp://host:port)");
  cmd.add_option("--kv-events-replay", f.kv_replay,
                 "Replay endpoint of the n-th --backend, repeatable");
  cmd.add_option("--policy", f.policy,
                 "Routing policy: kvroute (cache- and load-aware), round-robin, random, "
                 "least-inflight, session-affinity, sglang-cache-aware, gie-prefix, dynamo-cost")
      ->default_str(d.policy);
  cmd.add_option("--log-level", f.log_level, "trace, debug, info, warn, error, off")
      ->default_str(d.log_level);
  cmd.add_option("--session-header", f.session_header, "Header carrying the session key")
      ->default_str(d.session_header);
  cmd.add_option(
         "--tokenizer", f.tokenizer,
         "HF tokenizer directory for token-block routing, or \"word\" (empty: 64-character blocks)")
      ->default_str("\"\"");
  cmd.add_option("--model-tokenizer", f.model_tokenizers,
                 "MODEL=DIR: the tokenizer of one model (repeatable; others use --tokenizer)");
  cmd.add_option("--kv-events-template", f.kv_events_template,
                 "KV-event endpoint of backends without --kv-events, e.g. tcp://{host}:5557")
      ->default_str("\"\" (none)");
  cmd.add_option("--kv-events-replay-template", f.kv_replay_template,
                 "Replay endpoint template, e.g. tcp://{host}:5558")
      ->default_str("\"\" (none)");
  add_discovery_flags(cmd, f);
  add_security_flags(cmd, f);
}

int check_config(const config::Config& cfg) {
  metrics::Registry reg;
  auto r = Router::create(cfg, reg);
  if (!r) {
    spdlog::error("{}", r.error().message);
    return 2;
  }
  (*r)->stop();
  fmt::print(
      "configuration OK: policy {}, {} backend(s) now, {} slot(s){}\n", (*r)->policy().name(),
      (*r)->backends()->size(), (*r)->capacity(),
      cfg.pool_name.empty() ? std::string() : fmt::format(", InferencePool {}", cfg.pool_name));
  return 0;
}

Result<config::Config> routing_config(const RoutingFlags& f) {
  config::Config cfg;
  if (!f.config_file.empty()) {
    KVROUTE_TRY(cfg, config::load_file(f.config_file));
  }
  if (!f.policy.empty()) cfg.policy = f.policy;
  if (!f.log_level.empty()) cfg.log_level = f.log_level;
  if (!f.session_header.empty()) cfg.session_header = f.session_header;
  if (!f.tokenizer.empty()) cfg.tokenizer = f.tokenizer;
  for (const auto& spec : f.model_tokenizers) {
    const auto eq = spec.rfind('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size()) {
      return fail(Error::invalid("--model-tokenizer '" + spec + "': expected MODEL=DIR"));
    }
    std::erase_if(cfg.models,
                  [&](const config::ModelConfig& m) { return m.name == spec.substr(0, eq); });
    cfg.models.push_back({spec.substr(0, eq), spec.substr(eq + 1)});
  }
  if (!f.kv_events_template.empty()) cfg.kv_events_template = f.kv_events_template;
  if (!f.kv_replay_template.empty()) cfg.kv_events_replay_template = f.kv_replay_template;
  if (!f.endpoints_file.empty()) cfg.endpoints_file = f.endpoints_file;
  if (!f.pool_name.empty()) cfg.pool_name = f.pool_name;
  if (!f.pool_namespace.empty()) cfg.pool_namespace = f.pool_namespace;
  if (!f.kubeconfig.empty()) cfg.kubeconfig = f.kubeconfig;
  if (!f.kube_api_server.empty()) cfg.kube_api_server = f.kube_api_server;
  if (!f.pool_group.empty()) cfg.pool_group = f.pool_group;
  if (f.max_endpoints != 0) cfg.max_endpoints = f.max_endpoints;
  if (!f.replicas_listen.empty()) cfg.replicas.listen = f.replicas_listen;
  if (!f.replica_peers.empty()) cfg.replicas.peers = f.replica_peers;
  if (!f.replica_peers_dns.empty()) cfg.replicas.peers_dns = f.replica_peers_dns;
  if ((!cfg.replicas.peers.empty() || !cfg.replicas.peers_dns.empty()) &&
      cfg.replicas.listen.empty())
    return fail(Error::invalid(
        "--replica-peer and --replica-peers-dns need --replicas-listen (or replicas.listen)"));
  if (const auto& d = cfg.replicas.peers_dns;
      !d.empty() &&
      (d.rfind(':') == std::string::npos || d.rfind(':') == 0 || d.rfind(':') + 1 == d.size()))
    return fail(Error::invalid("--replica-peers-dns must be host:port, got " + d));
  const auto set = [](std::string& field, const std::string& flag) {
    if (!flag.empty()) field = flag;
  };
  set(cfg.tls_cert_file, f.tls_cert);
  set(cfg.tls_key_file, f.tls_key);
  set(cfg.tls_client_ca_file, f.tls_client_ca);
  set(cfg.upstream_ca_file, f.upstream_ca);
  set(cfg.upstream_cert_file, f.upstream_cert);
  set(cfg.upstream_key_file, f.upstream_key);
  if (f.upstream_insecure_skip_verify) cfg.upstream_insecure_skip_verify = true;
  set(cfg.api_keys_file, f.api_keys_file);
  set(cfg.upstream_authorization, f.upstream_authorization);
  set(cfg.upstream_api_key_file, f.upstream_api_key_file);
  set(cfg.admin_address, f.admin_address);
  if (f.admin_port != -2) cfg.admin_port = f.admin_port;
  set(cfg.admin_token_file, f.admin_token_file);
  if (f.kv_events.size() > f.backends.size() || f.kv_replay.size() > f.kv_events.size()) {
    return fail(Error::invalid(
        "--kv-events and --kv-events-replay pair with --backend by position: give at most one "
        "each per backend"));
  }
  for (std::size_t i = 0; i < f.backends.size(); ++i) {
    config::BackendConfig b;
    b.url = f.backends[i];
    b.name = b.url;
    if (i < f.kv_events.size()) b.kv_events_endpoint = f.kv_events[i];
    if (i < f.kv_replay.size()) b.kv_events_replay = f.kv_replay[i];
    cfg.backends.push_back(std::move(b));
  }
  return cfg;
}

}  // namespace kvroute::router
