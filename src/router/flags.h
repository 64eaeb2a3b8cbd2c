// File: router/flags.h
//
// The command-line flags of the routing core, shared by `kvroute serve` and `kvroute epp` so both
// front doors take the same backends, policy, tokenizers and KV-event endpoints the same way. A
// flag overrides the --config file's value; each flag's help names its default.
//
// Thread-safety: start-up only (CLI parsing).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"
#include "config/config.h"

namespace CLI {
class App;
}

namespace kvroute::router {

struct RoutingFlags {
  std::string config_file;
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
  // discovery
  std::string endpoints_file;
  std::string pool_name;
  std::string pool_namespace;
  std::string kubeconfig;
  std::string kube_api_server;
  std::string pool_group;
  std::uint32_t max_endpoints = 0;
  // active-active replicas
  std::string replicas_listen;             // replicas.listen
  std::vector<std::string> replica_peers;  // replicas.peers (repeatable)
  std::string replica_peers_dns;           // replicas.peersDns
  bool check = false;                      // --check: validate and exit
  // security
  std::string tls_cert, tls_key, tls_client_ca;
  std::string upstream_ca, upstream_cert, upstream_key;
  bool upstream_insecure_skip_verify = false;
  std::string api_keys_file, upstream_authorization, upstream_api_key_file;
  std::string admin_address;
  int admin_port = -2;  // -2: not given
  std::string admin_token_file;
};

// Adds --config, --backend, --kv-events, --kv-events-replay, --policy, --log-level,
// --session-header, --tokenizer, --model-tokenizer, --kv-events-template and
// --kv-events-replay-template, and discovery's --endpoints-file, --pool-name, --pool-namespace,
// --kubeconfig, --kube-api-server and --max-endpoints, and security's --tls-*, --upstream-*,
// --api-keys-file and --admin-* to `cmd`, writing into `flags` (which must
// outlive parsing).
void add_routing_flags(CLI::App& cmd, RoutingFlags& flags);

// --check: builds the routing core from `cfg` (tokenizers, KV-event endpoints, discovery
// credentials and the endpoints file) without serving, prints the outcome and returns the exit code
// (0 valid, 2 not).
int check_config(const config::Config& cfg);

// Loads --config (when given) and applies the flags over it; errors name the file or the flag.
Result<config::Config> routing_config(const RoutingFlags& flags);

}  // namespace kvroute::router
