#include "config/config.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <charconv>
#include <fstream>
#include <set>
#include <span>
#include <sstream>
#include <vector>

#include "http/endpoint.h"

namespace kvroute::config {

Result<Duration> parse_duration(std::string_view s) {
  double v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || v < 0)
    return fail(Error::invalid(fmt::format("'{}' is not a duration", s)));
  std::string_view unit(ptr, static_cast<std::size_t>(s.data() + s.size() - ptr));
  double ms;
  if (unit.empty() || unit == "ms")
    ms = v;
  else if (unit == "s")
    ms = v * 1000;
  else if (unit == "m")
    ms = v * 60000;
  else if (unit == "h")
    ms = v * 3600000;
  else if (unit == "us")
    ms = v / 1000;
  else
    return fail(Error::invalid(fmt::format("'{}': unknown duration unit '{}'", s, unit)));
  return Duration(static_cast<std::int64_t>(ms));
}

namespace {

class Reader {
 public:
  explicit Reader(std::string source) : source_(std::move(source)) {}

  std::string where(const YAML::Node& n, std::string_view field) const {
    auto m = n.Mark();
    return fmt::format("{}:{}:{}: field '{}'", source_, m.line + 1, m.column + 1, field);
  }
  Error err(const YAML::Node& n, std::string_view field, std::string_view msg) const {
    return Error::invalid(fmt::format("{}: {}", where(n, field), msg));
  }

  // Rejects keys not in `allowed`.
  Status keys(const YAML::Node& map, std::string_view field,
              std::initializer_list<std::string_view> allowed) const {
    return keys(map, field, std::span<const std::string_view>(allowed.begin(), allowed.size()));
  }
  Status keys(const YAML::Node& map, std::string_view field,
              std::span<const std::string_view> allowed) const {
    if (!map.IsMap()) return fail(err(map, field, "must be a mapping"));
    for (auto it = map.begin(); it != map.end(); ++it) {
      auto key = it->first.as<std::string>();
      bool ok = false;
      for (auto a : allowed) ok = ok || a == key;
      if (!ok) {
        std::string list;
        for (auto a : allowed) list += std::string(list.empty() ? "" : ", ") + std::string(a);
        return fail(err(it->first, std::string(field) + "." + key,
                        "unknown key (expected one of: " + list + ")"));
      }
    }
    return {};
  }

  template <typename T>
  Status scalar(const YAML::Node& map, const char* key, std::string_view path, T& out) const {
    auto n = map[key];
    if (!n) return {};
    if (!n.IsScalar()) return fail(err(n, fmt::format("{}.{}", path, key), "must be a scalar"));
    try {
      out = n.as<T>();
    } catch (const YAML::Exception&) {
      return fail(
          err(n, fmt::format("{}.{}", path, key), fmt::format("invalid value '{}'", n.Scalar())));
    }
    return {};
  }

  Status duration(const YAML::Node& map, const char* key, std::string_view path,
                  Duration& out) const {
    auto n = map[key];
    if (!n) return {};
    if (!n.IsScalar()) return fail(err(n, fmt::format("{}.{}", path, key), "must be a duration"));
    auto d = parse_duration(n.Scalar());
    if (!d) return fail(err(n, fmt::format("{}.{}", path, key), d.error().message));
    out = *d;
    return {};
  }

  const std::string& source() const { return source_; }

 private:
  std::string source_;
};

// One row per plain field of a section: its YAML key and how it is read into Config. Fields that
// need more than a read (lists, cross-checks) are handled by code after the section's rows.
using FieldReader = Status (*)(const Reader&, const YAML::Node&, const char* key,
                               std::string_view section, Config&);
template <auto Member>
Status read_scalar(const Reader& r, const YAML::Node& n, const char* key, std::string_view section,
                   Config& c) {
  return r.scalar(n, key, section, c.*Member);
}
template <auto Member>
Status read_duration(const Reader& r, const YAML::Node& n, const char* key,
                     std::string_view section, Config& c) {
  return r.duration(n, key, section, c.*Member);
}
struct Field {
  const char* key;
  FieldReader read;  // null: a key this section accepts but code after the rows reads
};
struct Section {
  const char* name;
  std::span<const Field> fields;
};

constexpr Field kServerFields[] = {
    {"address", read_scalar<&Config::address>},
    {"port", read_scalar<&Config::port>},
    {"threads", read_scalar<&Config::threads>},
    {"maxBodyBytes", read_scalar<&Config::max_body_bytes>},
    {"maxHeaderBytes", read_scalar<&Config::max_header_bytes>},
    {"maxConnections", read_scalar<&Config::max_connections>},
    {"requestTimeout", read_duration<&Config::request_timeout>},
    {"keepaliveTimeout", read_duration<&Config::keepalive_timeout>},
    {"shutdownGracePeriod", read_duration<&Config::shutdown_grace>},
};
constexpr Field kUpstreamFields[] = {
    {"connectTimeout", read_duration<&Config::connect_timeout>},
    {"firstByteTimeout", read_duration<&Config::first_byte_timeout>},
    {"idleTimeout", read_duration<&Config::idle_timeout>},
    {"maxRetries", read_scalar<&Config::max_retries>},
    {"maxIdlePerBackend", read_scalar<&Config::max_idle_per_backend>},
    {"caFile", read_scalar<&Config::upstream_ca_file>},
    {"certFile", read_scalar<&Config::upstream_cert_file>},
    {"keyFile", read_scalar<&Config::upstream_key_file>},
    {"insecureSkipVerify", read_scalar<&Config::upstream_insecure_skip_verify>},
    {"authorization", read_scalar<&Config::upstream_authorization>},
    {"apiKeyFile", read_scalar<&Config::upstream_api_key_file>},
};
constexpr Field kTlsFields[] = {
    {"certFile", read_scalar<&Config::tls_cert_file>},
    {"keyFile", read_scalar<&Config::tls_key_file>},
    {"clientCAFile", read_scalar<&Config::tls_client_ca_file>},
    {"reloadInterval", read_duration<&Config::tls_reload_interval>},
};
constexpr Field kAuthFields[] = {
    {"apiKeysFile", read_scalar<&Config::api_keys_file>},
};
constexpr Field kAdminFields[] = {
    {"address", read_scalar<&Config::admin_address>},
    {"port", read_scalar<&Config::admin_port>},
    {"tokenFile", read_scalar<&Config::admin_token_file>},
};
constexpr Field kHealthFields[] = {
    {"interval", read_duration<&Config::health_interval>},
    {"timeout", read_duration<&Config::health_timeout>},
    {"path", read_scalar<&Config::health_path>},
    {"failureThreshold", read_scalar<&Config::failure_threshold>},
    {"ejectionTime", read_duration<&Config::ejection_time>},
    {"metricsScrapeInterval", read_duration<&Config::metrics_scrape_interval>},
};
constexpr Field kRoutingFields[] = {
    {"policy", read_scalar<&Config::policy>},
    {"sessionHeader", read_scalar<&Config::session_header>},
    {"debugHeaders", read_scalar<&Config::debug_headers>},
    {"tokenizer", read_scalar<&Config::tokenizer>},
    {"blockSize", read_scalar<&Config::block_size>},
    {"models", nullptr},
    {"kvEventsTemplate", read_scalar<&Config::kv_events_template>},
    {"kvEventsReplayTemplate", read_scalar<&Config::kv_events_replay_template>},
};
constexpr Field kDiscoveryFields[] = {
    {"endpointsFile", read_scalar<&Config::endpoints_file>},
    {"pollInterval", read_duration<&Config::discovery_poll_interval>},
    {"maxEndpoints", read_scalar<&Config::max_endpoints>},
    {"poolName", read_scalar<&Config::pool_name>},
    {"poolNamespace", read_scalar<&Config::pool_namespace>},
    {"poolGroup", read_scalar<&Config::pool_group>},
    {"apiServer", read_scalar<&Config::kube_api_server>},
    {"kubeconfig", read_scalar<&Config::kubeconfig>},
};
constexpr Field kLogFields[] = {
    {"level", read_scalar<&Config::log_level>},
};
constexpr Section kSections[] = {
    {"server", kServerFields},   {"upstream", kUpstreamFields}, {"health", kHealthFields},
    {"routing", kRoutingFields}, {"log", kLogFields},           {"discovery", kDiscoveryFields},
    {"tls", kTlsFields},         {"auth", kAuthFields},         {"admin", kAdminFields},
};

// Checks a section's keys against its rows, then reads every row's field.
Status read_section(const Reader& r, const YAML::Node& node, const Section& section, Config& c) {
  std::vector<std::string_view> allowed;
  for (const Field& f : section.fields) allowed.push_back(f.key);
  KVROUTE_TRY(r.keys(node, section.name, allowed));
  for (const Field& f : section.fields) {
    if (f.read != nullptr) KVROUTE_TRY(f.read(r, node, f.key, section.name, c));
  }
  return {};
}

Result<std::vector<BackendConfig>> read_backends(const Reader& r, const YAML::Node& bs) {
  std::vector<BackendConfig> out;
  if (!bs.IsSequence()) return fail(r.err(bs, "backends", "must be a list"));
  for (std::size_t i = 0; i < bs.size(); ++i) {
    auto b = bs[i];
    const std::string path = fmt::format("backends[{}]", i);
    BackendConfig bc;
    if (b.IsScalar()) {
      bc.url = b.Scalar();
    } else {
      KVROUTE_TRY(
          r.keys(b, path, {"url", "name", "models", "kvEvents", "kvEventsReplay", "numGpuBlocks"}));
      KVROUTE_TRY(r.scalar(b, "url", path, bc.url));
      KVROUTE_TRY(r.scalar(b, "name", path, bc.name));
      KVROUTE_TRY(r.scalar(b, "kvEvents", path, bc.kv_events_endpoint));
      KVROUTE_TRY(r.scalar(b, "kvEventsReplay", path, bc.kv_events_replay));
      if (auto nb = b["numGpuBlocks"]) {
        std::uint32_t v = 0;
        KVROUTE_TRY(r.scalar(b, "numGpuBlocks", path, v));
        bc.num_gpu_blocks = v;
      }
      if (auto ms = b["models"]) {
        if (!ms.IsSequence()) return fail(r.err(ms, path + ".models", "must be a list of names"));
        for (auto m : ms) bc.models.push_back(m.as<std::string>());
      }
    }
    if (bc.url.empty()) return fail(r.err(b, path + ".url", "is required"));
    if (auto ep = http::parse_http_url(bc.url); !ep)
      return fail(r.err(b, path + ".url", ep.error().message));
    if (bc.name.empty()) bc.name = bc.url;
    out.push_back(std::move(bc));
  }
  return out;
}

Status read_flow_control(const Reader& r, const YAML::Node& n, FlowControlConfig& f) {
  const std::string path = "flowControl";
  KVROUTE_TRY(
      r.keys(n, path,
             {"enabled", "saturationDetector", "defaultRequestTTL", "maxRequests", "maxBytes",
              "bandMaxRequests", "bandMaxBytes", "fairness", "shedSheddable", "objectiveHeader",
              "fairnessHeader", "objectives", "tenants", "models", "rateLimits", "pickAmong"}));
  KVROUTE_TRY(r.scalar(n, "enabled", path, f.enabled));
  KVROUTE_TRY(r.duration(n, "defaultRequestTTL", path, f.default_request_ttl));
  KVROUTE_TRY(r.scalar(n, "maxRequests", path, f.max_requests));
  KVROUTE_TRY(r.scalar(n, "maxBytes", path, f.max_bytes));
  KVROUTE_TRY(r.scalar(n, "bandMaxRequests", path, f.band_max_requests));
  KVROUTE_TRY(r.scalar(n, "bandMaxBytes", path, f.band_max_bytes));
  KVROUTE_TRY(r.scalar(n, "fairness", path, f.fairness));
  KVROUTE_TRY(r.scalar(n, "pickAmong", path, f.pick_among));
  if (f.pick_among != "all" && f.pick_among != "with-room" && f.pick_among != "best")
    return fail(r.err(n["pickAmong"], path + ".pickAmong", "must be best, with-room or all"));
  KVROUTE_TRY(r.scalar(n, "shedSheddable", path, f.shed_sheddable));
  KVROUTE_TRY(r.scalar(n, "objectiveHeader", path, f.objective_header));
  KVROUTE_TRY(r.scalar(n, "fairnessHeader", path, f.fairness_header));
  if (f.fairness != "round-robin" && f.fairness != "vtc" && f.fairness != "global-strict")
    return fail(
        r.err(n["fairness"], path + ".fairness", "must be round-robin, vtc or global-strict"));
  if (f.band_max_requests == 0)
    return fail(r.err(n["bandMaxRequests"], path + ".bandMaxRequests", "must be positive"));
  if (auto sd = n["saturationDetector"]) {
    const std::string sp = path + ".saturationDetector";
    KVROUTE_TRY(r.keys(sd, sp,
                       {"queueDepthThreshold", "kvCacheUtilThreshold", "metricsStalenessThreshold",
                        "headroom", "maxConcurrency", "engineMaxRunning"}));
    KVROUTE_TRY(r.scalar(sd, "queueDepthThreshold", sp, f.queue_depth_threshold));
    KVROUTE_TRY(r.scalar(sd, "kvCacheUtilThreshold", sp, f.kv_cache_util_threshold));
    KVROUTE_TRY(r.duration(sd, "metricsStalenessThreshold", sp, f.metrics_staleness));
    KVROUTE_TRY(r.scalar(sd, "headroom", sp, f.headroom));
    KVROUTE_TRY(r.scalar(sd, "maxConcurrency", sp, f.max_concurrency));
    KVROUTE_TRY(r.scalar(sd, "engineMaxRunning", sp, f.engine_max_running));
    if (!(f.queue_depth_threshold > 0))
      return fail(
          r.err(sd["queueDepthThreshold"], sp + ".queueDepthThreshold", "must be positive"));
    if (!(f.kv_cache_util_threshold > 0 && f.kv_cache_util_threshold <= 1))
      return fail(
          r.err(sd["kvCacheUtilThreshold"], sp + ".kvCacheUtilThreshold", "must be in (0, 1]"));
    if (f.headroom < 0) return fail(r.err(sd["headroom"], sp + ".headroom", "must be >= 0"));
    if (f.max_concurrency < 0)
      return fail(r.err(sd["maxConcurrency"], sp + ".maxConcurrency", "must be >= 0"));
    if (f.engine_max_running < 0)
      return fail(r.err(sd["engineMaxRunning"], sp + ".engineMaxRunning", "must be >= 0"));
  }
  auto read_limit = [&](const YAML::Node& m, const std::string& lp, bool named,
                        TenantRateLimit& out) -> Status {
    if (named) {
      KVROUTE_TRY(r.keys(m, lp, {"name", "requestsPerSecond", "tokensPerSecond", "burst"}));
      KVROUTE_TRY(r.scalar(m, "name", lp, out.name));
      if (out.name.empty()) return fail(r.err(m, lp + ".name", "is required"));
    } else {
      KVROUTE_TRY(r.keys(m, lp, {"requestsPerSecond", "tokensPerSecond", "burst"}));
    }
    KVROUTE_TRY(r.scalar(m, "requestsPerSecond", lp, out.requests_per_second));
    KVROUTE_TRY(r.scalar(m, "tokensPerSecond", lp, out.tokens_per_second));
    KVROUTE_TRY(r.duration(m, "burst", lp, out.burst));
    if (out.requests_per_second < 0 || out.tokens_per_second < 0)
      return fail(r.err(m, lp, "rates must be >= 0"));
    if (out.burst.count() <= 0) return fail(r.err(m["burst"], lp + ".burst", "must be positive"));
    return {};
  };
  if (auto rl = n["rateLimits"]) {
    const std::string rp = path + ".rateLimits";
    KVROUTE_TRY(r.keys(rl, rp, {"default", "tenants"}));
    if (auto d = rl["default"])
      KVROUTE_TRY(read_limit(d, rp + ".default", false, f.default_rate_limit));
    if (auto ts = rl["tenants"]) {
      if (!ts.IsSequence()) return fail(r.err(ts, rp + ".tenants", "must be a list"));
      for (std::size_t i = 0; i < ts.size(); ++i) {
        TenantRateLimit t;
        KVROUTE_TRY(read_limit(ts[i], fmt::format("{}.tenants[{}]", rp, i), true, t));
        f.tenant_rate_limits.push_back(std::move(t));
      }
    }
  }
  auto read_priorities = [&](const char* key, std::vector<ObjectivePriority>& out) -> Status {
    auto os = n[key];
    if (!os) return {};
    const std::string lp = path + "." + key;
    if (!os.IsSequence()) return fail(r.err(os, lp, "must be a list of {name, priority}"));
    std::set<std::string> seen;
    for (std::size_t i = 0; i < os.size(); ++i) {
      const std::string op = fmt::format("{}[{}]", lp, i);
      KVROUTE_TRY(r.keys(os[i], op, {"name", "priority"}));
      ObjectivePriority o;
      KVROUTE_TRY(r.scalar(os[i], "name", op, o.name));
      KVROUTE_TRY(r.scalar(os[i], "priority", op, o.priority));
      if (o.name.empty()) return fail(r.err(os[i], op + ".name", "is required"));
      if (!seen.insert(o.name).second)
        return fail(r.err(os[i]["name"], op + ".name", "duplicate name '" + o.name + "'"));
      out.push_back(std::move(o));
    }
    return {};
  };
  KVROUTE_TRY(read_priorities("objectives", f.objectives));
  KVROUTE_TRY(read_priorities("tenants", f.tenant_priorities));
  KVROUTE_TRY(read_priorities("models", f.model_priorities));
  return {};
}

Status read_replicas(const Reader& r, const YAML::Node& n, ReplicasConfig& rc) {
  const std::string path = "replicas";
  KVROUTE_TRY(r.keys(n, path,
                     {"listen", "peers", "loadInterval", "peerTimeout", "peersDns", "dnsInterval",
                      "warmupTimeout", "snapshotBlocks"}));
  KVROUTE_TRY(r.scalar(n, "listen", path, rc.listen));
  KVROUTE_TRY(r.scalar(n, "peersDns", path, rc.peers_dns));
  KVROUTE_TRY(r.duration(n, "dnsInterval", path, rc.dns_interval));
  KVROUTE_TRY(r.duration(n, "warmupTimeout", path, rc.warmup_timeout));
  KVROUTE_TRY(r.scalar(n, "snapshotBlocks", path, rc.snapshot_blocks));
  if (!rc.peers_dns.empty()) {
    const auto colon = rc.peers_dns.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == rc.peers_dns.size())
      return fail(r.err(n["peersDns"], path + ".peersDns",
                        "must be host:port (a headless Service's name and the replicas' port)"));
    if (rc.listen.empty())
      return fail(r.err(n["peersDns"], path + ".peersDns", "needs replicas.listen"));
  }
  if (rc.dns_interval.count() <= 0)
    return fail(r.err(n["dnsInterval"], path + ".dnsInterval", "must be positive"));
  if (rc.warmup_timeout.count() < 0)
    return fail(r.err(n["warmupTimeout"], path + ".warmupTimeout", "must not be negative"));
  KVROUTE_TRY(r.duration(n, "loadInterval", path, rc.load_interval));
  KVROUTE_TRY(r.duration(n, "peerTimeout", path, rc.peer_timeout));
  const auto zmq_endpoint = [](std::string_view e) {
    return e.starts_with("tcp://") || e.starts_with("ipc://") || e.starts_with("inproc://");
  };
  if (!rc.listen.empty() && !zmq_endpoint(rc.listen))
    return fail(r.err(n["listen"], path + ".listen", "must be a tcp:// or ipc:// endpoint"));
  if (auto ps = n["peers"]) {
    if (!ps.IsSequence()) return fail(r.err(ps, path + ".peers", "must be a list of endpoints"));
    for (std::size_t i = 0; i < ps.size(); ++i) {
      const std::string pp = fmt::format("{}.peers[{}]", path, i);
      if (!ps[i].IsScalar() || !zmq_endpoint(ps[i].Scalar()))
        return fail(r.err(ps[i], pp, "must be a tcp:// or ipc:// endpoint"));
      rc.peers.push_back(ps[i].Scalar());
    }
    if (rc.listen.empty() && !rc.peers.empty())
      return fail(r.err(ps, path + ".peers", "needs replicas.listen (peers connect to it)"));
  }
  if (rc.load_interval.count() <= 0)
    return fail(r.err(n["loadInterval"], path + ".loadInterval", "must be positive"));
  if (rc.peer_timeout < 2 * rc.load_interval)
    return fail(r.err(n["peerTimeout"] ? n["peerTimeout"] : n, path + ".peerTimeout",
                      "must be at least twice replicas.loadInterval"));
  return {};
}

Result<Config> parse_root(const YAML::Node& root, const Reader& r) {
  Config c;
  if (!root || root.IsNull()) return c;
  KVROUTE_TRY(r.keys(
      root, "",
      {"server", "upstream", "health", "routing", "backends", "discovery", "log", "tls", "auth",
       "admin", "plugins", "schedulingProfiles", "flowControl", "replicas", "apiVersion", "kind"}));
  for (const Section& section : kSections) {
    if (auto node = root[section.name]) KVROUTE_TRY(read_section(r, node, section, c));
  }
  if (auto s = root["server"]; s && (c.threads < 1 || c.threads > 256)) {
    return fail(r.err(s["threads"], "server.threads", "must be 1..256"));
  }
  if (auto u = root["upstream"]; u && (c.max_retries < 0 || c.max_retries > 10)) {
    return fail(r.err(u["maxRetries"], "upstream.maxRetries", "must be 0..10"));
  }
  if (auto rt = root["routing"]) {
    if (auto ms = rt["models"]) {
      if (!ms.IsSequence())
        return fail(r.err(ms, "routing.models", "must be a list of {name, tokenizer}"));
      std::set<std::string> seen;
      for (std::size_t i = 0; i < ms.size(); ++i) {
        auto m = ms[i];
        const std::string path = fmt::format("routing.models[{}]", i);
        if (!m.IsMap()) return fail(r.err(m, path, "must be a map with name and tokenizer"));
        KVROUTE_TRY(r.keys(m, path, {"name", "tokenizer"}));
        ModelConfig mc;
        KVROUTE_TRY(r.scalar(m, "name", path, mc.name));
        KVROUTE_TRY(r.scalar(m, "tokenizer", path, mc.tokenizer));
        if (mc.name.empty()) return fail(r.err(m, path + ".name", "is required"));
        if (mc.tokenizer.empty()) return fail(r.err(m, path + ".tokenizer", "is required"));
        if (!seen.insert(mc.name).second)
          return fail(r.err(m["name"], path + ".name", "duplicate model '" + mc.name + "'"));
        c.models.push_back(std::move(mc));
      }
    }
    if (c.block_size == 0)
      return fail(r.err(rt["blockSize"], "routing.blockSize", "must be positive"));
  }
  if (auto bs = root["backends"]) {
    KVROUTE_TRY(c.backends, read_backends(r, bs));
  }
  if (auto fc = root["flowControl"]) KVROUTE_TRY(read_flow_control(r, fc, c.flow_control));
  if (auto rp = root["replicas"]) KVROUTE_TRY(read_replicas(r, rp, c.replicas));
  if (auto u = root["upstream"]; u && u["authorization"]) {
    const auto& a = c.upstream_authorization;
    if (a != "forward" && a != "none" && a != "key")
      return fail(
          r.err(u["authorization"], "upstream.authorization", "must be forward, none or key"));
  }
  if (auto a = root["admin"]; a && a["port"] && (c.admin_port < -1 || c.admin_port > 65535)) {
    return fail(r.err(a["port"], "admin.port", "must be -1 (off), 0 (any) or a port"));
  }
  if (auto d = root["discovery"]) {
    if (c.max_endpoints > 4096)
      return fail(r.err(d["maxEndpoints"], "discovery.maxEndpoints", "must be 0..4096"));
    if (!c.endpoints_file.empty() && !c.pool_name.empty())
      return fail(r.err(d, "discovery", "endpointsFile and poolName exclude each other"));
  }
  if (auto ps = root["plugins"]) {
    if (!ps.IsSequence()) return fail(r.err(ps, "plugins", "must be a list"));
    std::set<std::string> names;
    for (std::size_t i = 0; i < ps.size(); ++i) {
      auto p = ps[i];
      const std::string path = fmt::format("plugins[{}]", i);
      KVROUTE_TRY(r.keys(p, path, {"type", "name", "parameters"}));
      PluginConfig pc;
      KVROUTE_TRY(r.scalar(p, "type", path, pc.type));
      KVROUTE_TRY(r.scalar(p, "name", path, pc.name));
      if (pc.type.empty()) return fail(r.err(p, path + ".type", "is required"));
      if (pc.name.empty()) pc.name = pc.type;
      if (!names.insert(pc.name).second)
        return fail(r.err(p, path + ".name", "duplicate plugin name '" + pc.name + "'"));
      YAML::Emitter e;
      e << YAML::Flow << (p["parameters"] ? p["parameters"] : YAML::Node(YAML::NodeType::Map));
      pc.parameters_yaml = e.c_str();
      pc.line = p.Mark().line + 1;
      c.plugins.push_back(std::move(pc));
    }
  }
  if (auto sp = root["schedulingProfiles"]) {
    if (!sp.IsSequence()) return fail(r.err(sp, "schedulingProfiles", "must be a list"));
    for (std::size_t i = 0; i < sp.size(); ++i) {
      auto p = sp[i];
      const std::string path = fmt::format("schedulingProfiles[{}]", i);
      KVROUTE_TRY(r.keys(p, path, {"name", "plugins"}));
      SchedulingProfile prof;
      KVROUTE_TRY(r.scalar(p, "name", path, prof.name));
      if (auto refs = p["plugins"]) {
        if (!refs.IsSequence()) return fail(r.err(refs, path + ".plugins", "must be a list"));
        for (std::size_t j = 0; j < refs.size(); ++j) {
          auto ref = refs[j];
          const std::string rpath = fmt::format("{}.plugins[{}]", path, j);
          KVROUTE_TRY(r.keys(ref, rpath, {"pluginRef", "weight"}));
          ProfilePluginRef pr;
          KVROUTE_TRY(r.scalar(ref, "pluginRef", rpath, pr.plugin_ref));
          KVROUTE_TRY(r.scalar(ref, "weight", rpath, pr.weight));
          bool known = false;
          for (const auto& pc : c.plugins) known = known || pc.name == pr.plugin_ref;
          if (!known)
            return fail(
                r.err(ref, rpath + ".pluginRef", "no plugin named '" + pr.plugin_ref + "'"));
          prof.plugins.push_back(pr);
        }
      }
      c.profiles.push_back(std::move(prof));
    }
  }
  return c;
}

}  // namespace

Result<Config> load_yaml(const std::string& text, const std::string& source) {
  Reader r(source);
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    return fail(Error::invalid(
        fmt::format("{}:{}:{}: {}", source, e.mark.line + 1, e.mark.column + 1, e.msg)));
  }
  try {
    return parse_root(root, r);
  } catch (const YAML::Exception& e) {
    return fail(Error::invalid(
        fmt::format("{}:{}:{}: {}", source, e.mark.line + 1, e.mark.column + 1, e.msg)));
  }
}

Result<std::vector<BackendConfig>> load_backends_yaml(const std::string& text,
                                                      const std::string& source) {
  Reader r(source);
  try {
    YAML::Node root = YAML::Load(text);
    if (!root || root.IsNull()) return std::vector<BackendConfig>{};
    if (root.IsMap()) {
      KVROUTE_TRY(r.keys(root, "", {"backends"}));
      if (!root["backends"]) return std::vector<BackendConfig>{};
      return read_backends(r, root["backends"]);
    }
    return read_backends(r, root);
  } catch (const YAML::Exception& e) {
    return fail(Error::invalid(
        fmt::format("{}:{}:{}: {}", source, e.mark.line + 1, e.mark.column + 1, e.msg)));
  }
}

Result<Config> load_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) return fail(Error::not_found(fmt::format("{}: cannot open the config file", path)));
  std::stringstream ss;
  ss << f.rdbuf();
  return load_yaml(ss.str(), path);
}

namespace {
std::string expand_template(std::string_view tmpl, const http::Endpoint& ep) {
  std::string out(tmpl);
  for (std::size_t p; (p = out.find("{host}")) != std::string::npos;) out.replace(p, 6, ep.host);
  for (std::size_t p; (p = out.find("{port}")) != std::string::npos;)
    out.replace(p, 6, std::to_string(ep.port));
  return out;
}
}  // namespace

Status resolve_backend(const Config& c, BackendConfig& b) {
  auto ep = http::parse_http_url(b.url);
  if (!ep) return fail(Error::invalid("backend " + b.url + ": " + ep.error().message));
  if (b.name.empty()) b.name = b.url;
  if (b.kv_events_endpoint.empty() && !c.kv_events_template.empty()) {
    b.kv_events_endpoint = expand_template(c.kv_events_template, *ep);
    if (b.kv_events_replay.empty() && !c.kv_events_replay_template.empty()) {
      b.kv_events_replay = expand_template(c.kv_events_replay_template, *ep);
    }
  }
  return {};
}

Status resolve(Config& c) {
  for (auto& b : c.backends) KVROUTE_TRY(resolve_backend(c, b));
  return {};
}

Status validate(const Config& c) {
  if (c.backends.empty() && !c.dynamic_discovery()) {
    return fail(Error::invalid(
        "no backends: give --backend URL, a 'backends' list in the config file, --endpoints-file "
        "or --pool-name"));
  }
  if (!c.endpoints_file.empty() && !c.pool_name.empty()) {
    return fail(Error::invalid("--endpoints-file and --pool-name exclude each other"));
  }
  if (c.dynamic_discovery() && !c.backends.empty()) {
    return fail(Error::invalid(
        "static backends and discovery exclude each other: list them in the endpoints file"));
  }
  std::set<std::string> names;
  for (const auto& b : c.backends) {
    if (auto ep = http::parse_http_url(b.url); !ep) return fail(ep.error());
    if (!names.insert(b.name).second)
      return fail(Error::invalid("duplicate backend name '" + b.name + "'"));
  }
  if (c.threads < 1) return fail(Error::invalid("threads must be at least 1"));
  if (c.flow_control.enabled) {
    // Saturation reads the scraped metrics and counts stale ones as full: without scrapes, or
    // with scrapes rarer than the staleness threshold, every request would queue.
    if (c.metrics_scrape_interval.count() <= 0 ||
        c.flow_control.metrics_staleness <= c.metrics_scrape_interval)
      return fail(
          Error::invalid("flowControl needs health.metricsScrapeInterval > 0 and below "
                         "flowControl.saturationDetector.metricsStalenessThreshold"));
  }
  for (const auto* t : {&c.kv_events_template, &c.kv_events_replay_template}) {
    if (!t->empty() && t->rfind("tcp://", 0) != 0 && t->rfind("ipc://", 0) != 0) {
      return fail(Error::invalid("KV-event endpoint template '" + *t +
                                 "' must start with tcp:// or ipc://"));
    }
  }
  if (!c.kv_events_replay_template.empty() && c.kv_events_template.empty()) {
    return fail(Error::invalid("kvEventsReplayTemplate needs kvEventsTemplate"));
  }
  if (c.tls_cert_file.empty() != c.tls_key_file.empty())
    return fail(Error::invalid("TLS: give both tls.certFile and tls.keyFile"));
  if (!c.tls_client_ca_file.empty() && c.tls_cert_file.empty())
    return fail(Error::invalid("TLS: tls.clientCAFile needs tls.certFile and tls.keyFile"));
  if (c.upstream_cert_file.empty() != c.upstream_key_file.empty())
    return fail(Error::invalid("TLS: give both upstream.certFile and upstream.keyFile"));
  if (const auto mode = c.effective_upstream_authorization();
      mode != "forward" && mode != "none" && mode != "key") {
    return fail(Error::invalid("upstream.authorization must be forward, none or key"));
  } else if (mode == "key" && c.upstream_api_key_file.empty()) {
    return fail(Error::invalid("upstream.authorization: key needs upstream.apiKeyFile"));
  }
  if (c.admin_port < -1 || c.admin_port > 65535)
    return fail(Error::invalid("admin port must be -1 (off), 0 (any) or a port"));
  if (c.max_body_bytes == 0 || c.max_header_bytes < 1024) {
    return fail(Error::invalid("limits: maxBodyBytes must be > 0 and maxHeaderBytes >= 1024"));
  }
  return {};
}

}  // namespace kvroute::config
