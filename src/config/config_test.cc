#include "config/config.h"

#include <gtest/gtest.h>

namespace kvroute::config {
namespace {

TEST(Config, LoadsEverySection) {
  auto c = load_yaml(R"(
server: {address: 127.0.0.1, port: 9000, threads: 2, maxBodyBytes: 1024, requestTimeout: 5s}
upstream: {connectTimeout: 250ms, maxRetries: 1}
health: {interval: 1s, failureThreshold: 2}
routing: {policy: least-inflight, sessionHeader: x-sess, debugHeaders: true}
backends:
  - http://127.0.0.1:8001
  - {url: "http://127.0.0.1:8002", name: b, models: [m1]}
log: {level: debug}
)",
                     "t.yaml");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->port, 9000);
  EXPECT_EQ(c->threads, 2);
  EXPECT_EQ(c->request_timeout, Duration(5000));
  EXPECT_EQ(c->connect_timeout, Duration(250));
  EXPECT_EQ(c->max_retries, 1);
  EXPECT_EQ(c->policy, "least-inflight");
  EXPECT_TRUE(c->debug_headers);
  ASSERT_EQ(c->backends.size(), 2u);
  EXPECT_EQ(c->backends[0].name, "http://127.0.0.1:8001");
  EXPECT_EQ(c->backends[1].models, std::vector<std::string>{"m1"});
  EXPECT_TRUE(validate(*c));
}

TEST(Config, ErrorsNameFileLineAndField) {
  auto c = load_yaml("server:\n  port: 80\n  treads: 2\n", "cfg.yaml");
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("cfg.yaml:3:"), std::string::npos) << c.error().message;
  EXPECT_NE(c.error().message.find("server.treads"), std::string::npos) << c.error().message;

  c = load_yaml("server:\n  port: notaport\n", "cfg.yaml");
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("cfg.yaml:2:"), std::string::npos) << c.error().message;
  EXPECT_NE(c.error().message.find("server.port"), std::string::npos);

  c = load_yaml("backends:\n  - url: ftp://x:1\n", "cfg.yaml");
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("backends[0].url"), std::string::npos) << c.error().message;

  c = load_yaml("upstream: {idleTimeout: 5 parsecs}\n", "cfg.yaml");
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("upstream.idleTimeout"), std::string::npos);

  c = load_yaml("server: [1\n", "cfg.yaml");
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("cfg.yaml:"), std::string::npos);

  EXPECT_FALSE(validate(Config{}));
  EXPECT_FALSE(load_file("/nonexistent/kvroute.yaml"));
}

TEST(Config, PerModelTokenizersAndKvEventTemplates) {
  auto c = load_yaml(R"(
routing:
  tokenizer: /tok/llama3
  models:
    - {name: Qwen/Qwen2.5-7B-Instruct, tokenizer: /tok/qwen2.5}
    - {name: tiny, tokenizer: word}
  kvEventsTemplate: tcp://{host}:5557
  kvEventsReplayTemplate: tcp://{host}:{port}9
backends:
  - http://10.0.0.5:8000
  - {url: "http://10.0.0.6:8000", kvEvents: "tcp://10.0.0.6:6000"}
)",
                     "t.yaml");
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_EQ(c->models.size(), 2u);
  EXPECT_EQ(c->models[0].name, "Qwen/Qwen2.5-7B-Instruct");
  EXPECT_EQ(c->models[0].tokenizer, "/tok/qwen2.5");
  EXPECT_EQ(c->models[1].tokenizer, "word");
  ASSERT_TRUE(resolve(*c));
  EXPECT_EQ(c->backends[0].kv_events_endpoint, "tcp://10.0.0.5:5557");
  EXPECT_EQ(c->backends[0].kv_events_replay, "tcp://10.0.0.5:80009");
  EXPECT_EQ(c->backends[1].kv_events_endpoint, "tcp://10.0.0.6:6000");  // explicit wins
  EXPECT_EQ(c->backends[1].kv_events_replay, "");
  ASSERT_TRUE(resolve(*c));  // idempotent
  EXPECT_EQ(c->backends[0].kv_events_endpoint, "tcp://10.0.0.5:5557");
  EXPECT_TRUE(validate(*c));

  auto dup = load_yaml(
      "routing:\n  models:\n    - {name: a, tokenizer: x}\n    - {name: a, tokenizer: y}\n",
      "d.yaml");
  ASSERT_FALSE(dup);
  EXPECT_NE(dup.error().message.find("d.yaml:4:"), std::string::npos) << dup.error().message;
  EXPECT_NE(dup.error().message.find("routing.models[1].name"), std::string::npos)
      << dup.error().message;
  auto missing = load_yaml("routing:\n  models:\n    - {name: a}\n", "m.yaml");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("routing.models[0].tokenizer"), std::string::npos);
  auto bad = load_yaml("routing: {kvEventsTemplate: 'http://{host}:1'}\nbackends: [http://h:1]\n",
                       "b.yaml");
  ASSERT_TRUE(bad);
  EXPECT_FALSE(validate(*bad));
}

TEST(Config, SchedulerPluginsAndProfiles) {
  auto c = load_yaml(R"(
plugins:
  - type: prefix-cache-scorer
    parameters: {blockSize: 16}
  - {type: load-aware-scorer, name: load}
schedulingProfiles:
  - name: default
    plugins: [{pluginRef: prefix-cache-scorer, weight: 3}, {pluginRef: load}]
)",
                     "s.yaml");
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_EQ(c->plugins.size(), 2u);
  EXPECT_EQ(c->plugins[0].name, "prefix-cache-scorer");
  ASSERT_EQ(c->profiles.size(), 1u);
  EXPECT_EQ(c->profiles[0].plugins[0].weight, 3);
  auto bad = load_yaml(
      "plugins: [{type: a}]\nschedulingProfiles: [{name: p, plugins: [{pluginRef: zzz}]}]\n",
      "s.yaml");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("pluginRef"), std::string::npos);
}

TEST(Config, SecuritySections) {
  auto c = load_yaml(R"(
backends: [http://a:1, https://engine.ns.svc]
tls: {certFile: /t/tls.crt, keyFile: /t/tls.key, clientCAFile: /t/ca.crt, reloadInterval: 5s}
auth: {apiKeysFile: /t/keys}
admin: {address: 127.0.0.1, port: 9091, tokenFile: /t/token}
upstream: {caFile: /t/engines-ca.crt, certFile: /t/c.crt, keyFile: /t/c.key, authorization: key,
           apiKeyFile: /t/engine-key}
)",
                     "cfg.yaml");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->tls_cert_file, "/t/tls.crt");
  EXPECT_EQ(c->tls_client_ca_file, "/t/ca.crt");
  EXPECT_EQ(c->tls_reload_interval, std::chrono::seconds(5));
  EXPECT_EQ(c->api_keys_file, "/t/keys");
  EXPECT_EQ(c->admin_port, 9091);
  EXPECT_EQ(c->admin_token_file, "/t/token");
  EXPECT_EQ(c->upstream_ca_file, "/t/engines-ca.crt");
  EXPECT_EQ(c->effective_upstream_authorization(), "key");
  EXPECT_TRUE(validate(*c));

  config::Config d;
  EXPECT_EQ(d.effective_upstream_authorization(), "forward");
  d.api_keys_file = "k";
  EXPECT_EQ(d.effective_upstream_authorization(), "none");
  d.upstream_api_key_file = "e";
  EXPECT_EQ(d.effective_upstream_authorization(), "key");

  auto bad = load_yaml("upstream:\n  authorization: sometimes\n", "cfg.yaml");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("cfg.yaml:2:"), std::string::npos) << bad.error().message;
  EXPECT_NE(bad.error().message.find("upstream.authorization"), std::string::npos);
  bad = load_yaml("admin:\n  port: -7\n", "cfg.yaml");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("admin.port"), std::string::npos);
  bad = load_yaml("tls:\n  certFile: a\n  keyfile: b\n", "cfg.yaml");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("keyfile"), std::string::npos) << bad.error().message;

  config::Config half;
  half.backends.push_back({"http://a:1", "a", {}, {}, {}, {}});
  half.tls_cert_file = "x";
  EXPECT_FALSE(validate(half));
  half.tls_key_file = "y";
  EXPECT_TRUE(validate(half));
  half.upstream_authorization = "key";
  EXPECT_FALSE(validate(half));
}

TEST(Config, FlowControl) {
  auto c = load_yaml(R"(flowControl:
  enabled: true
  defaultRequestTTL: 5s
  maxRequests: 100
  fairness: vtc
  pickAmong: all
  saturationDetector: {queueDepthThreshold: 3, kvCacheUtilThreshold: 0.9,
                       metricsStalenessThreshold: 500ms, headroom: 0.1, maxConcurrency: 8,
                       engineMaxRunning: 256}
  objectives:
    - {name: critical, priority: 100}
    - {name: batch, priority: -1}
  tenants: [{name: acme, priority: 50}]
  models: [{name: llama-batch, priority: -5}]
  rateLimits:
    default: {requestsPerSecond: 5}
    tenants:
      - {name: acme, tokensPerSecond: 50000, burst: 2s}
)",
                     "cfg.yaml");
  ASSERT_TRUE(c) << c.error().message;
  const auto& f = c->flow_control;
  EXPECT_TRUE(f.enabled);
  EXPECT_EQ(f.default_request_ttl, Duration(5000));
  EXPECT_EQ(f.max_requests, 100u);
  EXPECT_EQ(f.fairness, "vtc");
  EXPECT_EQ(f.pick_among, "all");
  EXPECT_EQ(Config{}.flow_control.pick_among, "best");
  EXPECT_EQ(f.queue_depth_threshold, 3);
  EXPECT_EQ(f.kv_cache_util_threshold, 0.9);
  EXPECT_EQ(f.metrics_staleness, Duration(500));
  EXPECT_EQ(f.max_concurrency, 8);
  EXPECT_EQ(f.engine_max_running, 256);
  ASSERT_EQ(f.objectives.size(), 2u);
  EXPECT_EQ(f.objectives[1].name, "batch");
  EXPECT_EQ(f.objectives[1].priority, -1);
  ASSERT_EQ(f.tenant_priorities.size(), 1u);
  EXPECT_EQ(f.tenant_priorities[0].priority, 50);
  ASSERT_EQ(f.model_priorities.size(), 1u);
  EXPECT_EQ(f.model_priorities[0].name, "llama-batch");
  EXPECT_EQ(f.default_rate_limit.requests_per_second, 5);
  ASSERT_EQ(f.tenant_rate_limits.size(), 1u);
  EXPECT_EQ(f.tenant_rate_limits[0].name, "acme");
  EXPECT_EQ(f.tenant_rate_limits[0].tokens_per_second, 50000);
  EXPECT_EQ(f.tenant_rate_limits[0].burst, Duration(2000));
  EXPECT_FALSE(Config{}.flow_control.enabled);

  for (const char* bad :
       {"flowControl: {fairness: lottery}\n", "flowControl: {pickAmong: first}\n",
        "flowControl: {saturationDetector: {kvCacheUtilThreshold: 2}}\n",
        "flowControl: {saturationDetector: {queueDepth: 2}}\n",
        "flowControl: {saturationDetector: {engineMaxRunning: -1}}\n",
        "flowControl: {objectives: [{name: a, priority: 1}, {name: a, priority: 2}]}\n",
        "flowControl: {rateLimits: {tenants: [{requestsPerSecond: 1}]}}\n",
        "flowControl: {rateLimits: {default: {requestsPerSecond: -1}}}\n"}) {
    auto e = load_yaml(bad, "cfg.yaml");
    ASSERT_FALSE(e) << bad;
    EXPECT_NE(e.error().message.find("cfg.yaml:1:"), std::string::npos) << e.error().message;
    EXPECT_NE(e.error().message.find("flowControl."), std::string::npos) << e.error().message;
  }
}

TEST(ParseDuration, Units) {
  EXPECT_EQ(*parse_duration("250ms"), Duration(250));
  EXPECT_EQ(*parse_duration("2s"), Duration(2000));
  EXPECT_EQ(*parse_duration("1.5m"), Duration(90000));
  EXPECT_EQ(*parse_duration("100"), Duration(100));
  EXPECT_FALSE(parse_duration("x"));
  EXPECT_FALSE(parse_duration("5 days"));
}

}  // namespace
}  // namespace kvroute::config
