// Discovery: the Kubernetes objects as the API server sends them, the endpoints file reloaded on
// change, and the router following a pool whose backends come and go (in-flight requests finish,
// a removed backend's index entries go, sessions of the others stay put). The list-and-watch
// protocol against a fake API server is tested end to end in tests/e2e/kube_discovery.test.mjs.
#include "discovery/discovery.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "discovery/internal/kube_http.h"
#include "discovery/internal/kube_objects.h"
#include "router/router.h"
#include "testing/fake_kube_api.h"
#include "testing/wait.h"

namespace kvroute::discovery {
namespace {

using namespace internal;

TEST(KubeObjects, PoolV1SelectorAndTargetPorts) {
  auto p = parse_pool(R"({"apiVersion":"inference.networking.k8s.io/v1","kind":"InferencePool",
    "metadata":{"name":"pool","resourceVersion":"7"},
    "spec":{"selector":{"matchLabels":{"app":"vllm","llm-d.ai/inferenceServing":"true"}},
            "targetPorts":[{"number":8000},{"number":8001}],
            "endpointPickerRef":{"name":"epp","port":{"number":9002}}}})");
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(p->selector.at("app"), "vllm");
  EXPECT_EQ(p->selector.size(), 2u);
  EXPECT_EQ(p->target_ports, (std::vector<std::uint16_t>{8000, 8001}));
  EXPECT_EQ(label_selector_query(p->selector), "app%3Dvllm%2Cllm-d.ai%2FinferenceServing%3Dtrue");
}

TEST(KubeObjects, PoolV1Alpha2AndInvalidPools) {
  auto p = parse_pool(R"({"spec":{"selector":{"app":"vllm"},"targetPortNumber":8000}})");
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(p->target_ports, std::vector<std::uint16_t>{8000});
  EXPECT_FALSE(
      parse_pool(R"({"spec":{"selector":{"matchLabels":{}},"targetPorts":[{"number":1}]}})"));
  EXPECT_FALSE(parse_pool(R"({"spec":{"selector":{"matchLabels":{"a":"b"}}}})"));
  EXPECT_FALSE(parse_pool(
      R"({"spec":{"selector":{"matchLabels":{"a":"b"}},"targetPorts":[{"number":70000}]}})"));
  EXPECT_FALSE(
      parse_pool(R"({"spec":{"selector":{"matchLabels":{"a":1}},"targetPorts":[{"number":1}]}})"));
  EXPECT_FALSE(parse_pool("[]"));
  EXPECT_FALSE(parse_pool("{"));
}

std::string pod_json(const std::string& name, const std::string& ip, bool ready,
                     bool deleting = false, const std::string& phase = "Running") {
  return R"({"metadata":{"name":")" + name + R"(","resourceVersion":"5")" +
         (deleting ? R"(,"deletionTimestamp":"2026-12-06T00:00:00Z")" : "") +
         R"(},"status":{"phase":")" + phase + R"(","podIP":")" + ip +
         R"(","conditions":[{"type":"PodScheduled","status":"True"},{"type":"Ready","status":")" +
         (ready ? "True" : "False") + R"("}]}})";
}

TEST(KubeObjects, PodReadyOnlyWhenRunningReadyWithIpAndNotDeleting) {
  EXPECT_TRUE(parse_pod(pod_json("a", "10.0.0.1", true))->ready);
  EXPECT_FALSE(parse_pod(pod_json("a", "10.0.0.1", false))->ready);
  EXPECT_FALSE(parse_pod(pod_json("a", "10.0.0.1", true, true))->ready);
  EXPECT_FALSE(parse_pod(pod_json("a", "", true))->ready);
  EXPECT_FALSE(parse_pod(pod_json("a", "10.0.0.1", true, false, "Pending"))->ready);
  auto pending = parse_pod(R"({"metadata":{"name":"p"}})");  // not scheduled: no status
  ASSERT_TRUE(pending);
  EXPECT_FALSE(pending->ready);
  EXPECT_FALSE(parse_pod(R"({"metadata":{}})"));
}

TEST(KubeObjects, ListAndWatchEvents) {
  auto l = parse_pod_list(R"({"kind":"PodList","metadata":{"resourceVersion":"42"},"items":[)" +
                          pod_json("a", "10.0.0.1", true) + "," + pod_json("b", "10.0.0.2", false) +
                          "]}");
  ASSERT_TRUE(l) << l.error().message;
  EXPECT_EQ(l->second, "42");
  ASSERT_EQ(l->first.size(), 2u);
  EXPECT_FALSE(parse_pod_list(R"({"items":[]})"));  // no resourceVersion: cannot watch from it
  auto empty = parse_pod_list(R"({"metadata":{"resourceVersion":"1"},"items":null})");
  ASSERT_TRUE(empty) << empty.error().message;
  EXPECT_TRUE(empty->first.empty());

  auto added =
      parse_event(R"({"type":"ADDED","object":)" + pod_json("c", "10.0.0.3", true) + "}", true);
  ASSERT_TRUE(added) << added.error().message;
  EXPECT_EQ(added->type, EventType::kAdded);
  EXPECT_EQ(added->resource_version, "5");
  EXPECT_EQ(added->pod->name, "c");
  auto bm = parse_event(
      R"({"type":"BOOKMARK","object":{"kind":"Pod","metadata":{"resourceVersion":"99"}}})", true);
  ASSERT_TRUE(bm);
  EXPECT_EQ(bm->type, EventType::kBookmark);
  EXPECT_EQ(bm->resource_version, "99");
  auto gone = parse_event(
      R"({"type":"ERROR","object":{"kind":"Status","status":"Failure","reason":"Expired","code":410}})",
      true);
  ASSERT_TRUE(gone);
  EXPECT_EQ(gone->type, EventType::kError);
  EXPECT_EQ(gone->error_code, 410);
  EXPECT_FALSE(parse_event(R"({"type":"WHAT","object":{}})", true));
  EXPECT_FALSE(parse_event(R"({"type":"ADDED"})", true));
}

TEST(KubeObjects, BackendsOfAPoolOnePerReadyPodAndPort) {
  PoolSpec one{{{"app", "vllm"}}, {8000}};
  std::vector<Pod> pods = {{"b", "10.0.0.2", true},
                           {"a", "10.0.0.1", true},
                           {"c", "10.0.0.3", false},
                           {"d", "fd00::4", true}};
  auto bs = backends_of(one, pods);
  ASSERT_EQ(bs.size(), 3u);
  EXPECT_EQ(bs[0].name, "a");
  EXPECT_EQ(bs[0].url, "http://10.0.0.1:8000");
  EXPECT_EQ(bs[2].url, "http://[fd00::4]:8000");
  PoolSpec two{{{"app", "vllm"}}, {8000, 8001}};
  bs = backends_of(two, pods);
  ASSERT_EQ(bs.size(), 6u);
  EXPECT_EQ(bs[0].name, "a:8000");
  EXPECT_EQ(bs[1].url, "http://10.0.0.1:8001");
}

TEST(KubeHttp, LocatesTheApiServerFromAKubeconfig) {
  const auto dir = std::filesystem::temp_directory_path() / "kvroute-kubeconfig-test";
  std::filesystem::create_directories(dir);
  const auto path = (dir / "config").string();
  std::ofstream(path) << R"(apiVersion: v1
kind: Config
current-context: dev
clusters:
- name: other
  cluster: {server: "https://10.9.9.9:6443"}
- name: kind
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority-data: LS0tLS1CRUdJTg==
contexts:
- name: dev
  context: {cluster: kind, user: admin, namespace: llm}
users:
- name: admin
  user: {token: abc}
)";
  auto s = locate_api_server(path, "");
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_TRUE(s->tls);
  EXPECT_EQ(s->host, "127.0.0.1");
  EXPECT_EQ(s->port, 6443);
  EXPECT_EQ(s->ca_pem, "-----BEGIN");
  EXPECT_EQ(s->token, "abc");
  EXPECT_EQ(s->default_namespace, "llm");
  auto o = locate_api_server(path, "http://localhost:8080");
  ASSERT_TRUE(o);
  EXPECT_FALSE(o->tls);
  EXPECT_EQ(o->port, 8080);
  EXPECT_FALSE(locate_api_server((dir / "missing").string(), ""));
  std::filesystem::remove_all(dir);
}

// --- the router following a changing pool -----------------------------------------------------

config::BackendConfig backend(const std::string& name, int port) {
  config::BackendConfig b;
  b.url = "http://127.0.0.1:" + std::to_string(port);
  b.name = name;
  b.models = {"m"};
  return b;
}

class DynamicPool : public ::testing::Test {
 protected:
  void make(std::string policy, std::uint32_t slots = 4) {
    config::Config c;
    c.log_level = "warn";
    c.policy = std::move(policy);
    c.pool_name = "test";  // dynamic (the source is never started here)
    c.kube_api_server = "http://127.0.0.1:1";
    c.max_endpoints = slots;
    auto r = router::Router::create(std::move(c), reg_);
    ASSERT_TRUE(r) << r.error().message;
    router_ = std::move(*r);
  }
  // Routes one request and keeps its assignment in flight until released.
  router::Assignment route(const std::string& body, const std::string& session = "") {
    prepared_.push_back(
        std::make_unique<router::Prepared>(router_->prepare(openai::Endpoint::kCompletions, body)));
    auto& p = *prepared_.back();
    EXPECT_TRUE(p.parsed);
    rrs_.push_back(std::make_unique<routing::RouteRequest>());
    auto& rr = *rrs_.back();
    router_->route_request(p, session, rr);
    router::Candidates c;
    if (router_->select_candidates(*p.parsed, routing::steady_now_ms(), c)) return {};
    return router_->pick(rr, c);
  }
  std::vector<std::string> names() {
    std::vector<std::string> out;
    for (auto* b : router_->backend_list()) out.push_back(b->name);
    return out;
  }
  metrics::Registry reg_;
  std::unique_ptr<router::Router> router_;
  std::vector<std::unique_ptr<router::Prepared>> prepared_;
  std::vector<std::unique_ptr<routing::RouteRequest>> rrs_;
};

TEST_F(DynamicPool, StartsEmptyThenFollowsAdditionsAndRemovals) {
  make("round-robin");
  EXPECT_TRUE(names().empty());
  EXPECT_FALSE(route(R"({"model":"m","prompt":"x"})"));  // no backend: 404 from candidates
  ASSERT_TRUE(router_->set_backends({backend("a", 1001), backend("b", 1002)}));
  EXPECT_EQ(names(), (std::vector<std::string>{"a", "b"}));
  ASSERT_TRUE(router_->set_backends({backend("b", 1002), backend("c", 1003)}));
  EXPECT_EQ(names(), (std::vector<std::string>{"c", "b"}));  // c took a's free slot
  std::set<std::string> picked;
  for (int i = 0; i < 20; ++i) {
    auto a = route(R"({"model":"m","prompt":"x"})");
    ASSERT_TRUE(a);
    picked.insert(a.backend()->name);
  }
  EXPECT_EQ(picked, (std::set<std::string>{"b", "c"}));
  // The gauges of a removed backend stop being exported.
  router_->update_gauges();
  EXPECT_EQ(reg_.render().find("backend=\"a\""), std::string::npos);
  EXPECT_NE(reg_.render().find("backend=\"c\""), std::string::npos);
  EXPECT_FALSE(router_->set_backends({backend("x", 1), backend("y", 1)}));  // same URL twice
}

TEST_F(DynamicPool, InFlightRequestsFinishAndTheirSlotWaits) {
  make("least-inflight", 2);
  ASSERT_TRUE(router_->set_backends({backend("a", 1001)}));
  auto held = route(R"({"model":"m","prompt":"x"})");
  ASSERT_TRUE(held);
  routing::Backend* a = held.backend();
  ASSERT_TRUE(router_->set_backends({backend("b", 1002)}));
  EXPECT_TRUE(a->removed.load());
  EXPECT_EQ(a->inflight.load(), 1);  // still in flight on the removed engine
  // Both slots are taken (b, and a's draining): a third backend must wait for a's request.
  EXPECT_FALSE(router_->set_backends({backend("b", 1002), backend("c", 1003)}));
  EXPECT_EQ(names(), (std::vector<std::string>{"b"}));
  held.first_byte();
  held.succeeded();
  held.release();
  EXPECT_EQ(a->inflight.load(), 0);
  ASSERT_TRUE(router_->resync());  // what the health loop does every interval
  EXPECT_EQ(names(), (std::vector<std::string>{"c", "b"}));  // c in a's drained slot
  ASSERT_TRUE(router_->resync());                            // nothing pending: no-op
  for (int i = 0; i < 10; ++i) {
    auto x = route(R"({"model":"m","prompt":"x"})");
    ASSERT_TRUE(x);
    EXPECT_NE(x.backend(), a);
  }
}

TEST_F(DynamicPool, ARemovedBackendsPrefixEntriesGoWithIt) {
  make("kvroute", 3);
  ASSERT_TRUE(router_->set_backends({backend("a", 1001), backend("b", 1002)}));
  const std::string prompt(4000, 'p');
  const std::string body = R"({"model":"m","prompt":")" + prompt + R"(","max_tokens":1})";
  std::string first;
  {
    auto x = route(body);
    ASSERT_TRUE(x);
    first = x.backend()->name;
    x.first_byte();
    x.succeeded();
  }
  {
    auto again = route(body);
    ASSERT_TRUE(again);
    EXPECT_EQ(again.backend()->name, first);  // the prefix sends it back
    EXPECT_EQ(again.decision().reason.find("prefix") != std::string::npos, true)
        << again.decision().reason;
  }
  // The engine that held it goes; a new one takes its slot and must not inherit its entries.
  const std::string other = first == "a" ? "b" : "a";
  ASSERT_TRUE(
      router_->set_backends({backend(other, other == "a" ? 1001 : 1002), backend("n", 1009)}));
  for (int i = 0; i < 4; ++i) {
    auto x = route(body);
    ASSERT_TRUE(x);
    EXPECT_EQ(x.decision().reason.find("prefix"), std::string::npos)
        << "request " << i << " went to " << x.backend()->name << " for " << x.decision().reason;
    break;
  }
}

TEST_F(DynamicPool, SessionsOfRemainingBackendsStayPut) {
  make("session-affinity", 8);
  ASSERT_TRUE(router_->set_backends(
      {backend("a", 1001), backend("b", 1002), backend("c", 1003), backend("d", 1004)}));
  std::map<std::string, std::string> where;
  for (int s = 0; s < 200; ++s) {
    auto x = route(R"({"model":"m","prompt":"x"})", "session-" + std::to_string(s));
    ASSERT_TRUE(x);
    where["session-" + std::to_string(s)] = x.backend()->name;
  }
  ASSERT_TRUE(router_->set_backends(
      {backend("a", 1001), backend("b", 1002), backend("c", 1003), backend("e", 1005)}));
  // Rendezvous hashing: d's sessions spread over the rest; of the others, only those the new
  // backend e now wins move, and only to e.
  int to_e = 0, on_d = 0, elsewhere = 0;
  for (const auto& [s, b] : where) {
    auto x = route(R"({"model":"m","prompt":"x"})", s);
    ASSERT_TRUE(x);
    if (b == "d") {
      ++on_d;
    } else if (x.backend()->name == "e") {
      ++to_e;
    } else if (x.backend()->name != b) {
      ++elsewhere;
    }
  }
  EXPECT_GT(on_d, 20);  // d had its share
  EXPECT_EQ(elsewhere, 0);
  EXPECT_GT(to_e, 10);  // e takes about a quarter of the others'
  EXPECT_LT(to_e, 80);
}

// The InferencePool source against a fake API server: list, then watch; pods turning Ready and
// NotReady and going; a dropped watch resumes from its version (events replayed, no new list);
// after compaction the watch gets 410 and the source lists again.
TEST(InferencePoolSource, FollowsPodsThroughWatchDropsAndCompaction) {
  kvroute::testing::FakeKubeApi api(
      R"({"kind":"InferencePool","metadata":{"name":"pool","resourceVersion":"3"},)"
      R"("spec":{"selector":{"matchLabels":{"app":"vllm"}},"targetPorts":[{"number":8000}]}})");
  api.set_pod("a", "10.0.0.1", true);
  api.set_pod("b", "10.0.0.2", false);
  config::Config c;
  c.pool_name = "pool";
  c.pool_namespace = "llm";
  c.kube_api_server = api.url();
  Mutex mu;
  std::vector<std::string> current;
  int updates = 0;
  auto src = make_source(c, [&](std::vector<config::BackendConfig> l) {
    std::vector<std::string> names;
    for (auto& b : l) names.push_back(b.name + "=" + b.url);
    MutexLock lk(mu);
    current = names;
    ++updates;
  });
  ASSERT_TRUE(src) << src.error().message;
  (*src)->start();
  auto is = [&](std::vector<std::string> want) {
    return kvroute::testing::wait_until(
        [&] {
          MutexLock lk(mu);
          return current == want;
        },
        std::chrono::seconds(10));
  };
  EXPECT_TRUE(is({"a=http://10.0.0.1:8000"}));
  api.set_pod("b", "10.0.0.2", true);
  EXPECT_TRUE(is({"a=http://10.0.0.1:8000", "b=http://10.0.0.2:8000"}));
  api.remove_pod("a");
  EXPECT_TRUE(is({"b=http://10.0.0.2:8000"}));
  const int lists = api.lists();
  api.drop_watches();
  api.set_pod("c", "10.0.0.3", true);  // while the watch is down: replayed on reconnect
  EXPECT_TRUE(is({"b=http://10.0.0.2:8000", "c=http://10.0.0.3:8000"}));
  EXPECT_EQ(api.lists(), lists) << "a dropped watch resumes from its version";
  api.compact();
  api.drop_watches();
  api.set_pod("b", "10.0.0.2", false);
  EXPECT_TRUE(is({"c=http://10.0.0.3:8000"}));
  EXPECT_GT(api.lists(), lists) << "410 Gone: listed again";
  (*src)->stop();
  MutexLock lk(mu);
  EXPECT_GE(updates, 5);
}

TEST(EndpointsFile, ReloadedWhenItChangesAndKeptWhenBroken) {
  const auto dir = std::filesystem::temp_directory_path() / "kvroute-endpoints-test";
  std::filesystem::create_directories(dir);
  const auto path = (dir / "endpoints.yaml").string();
  std::ofstream(path) << "backends:\n  - url: http://127.0.0.1:1001\n    name: a\n";
  config::Config c;
  c.endpoints_file = path;
  c.discovery_poll_interval = std::chrono::milliseconds(20);
  Mutex mu;
  std::vector<std::vector<std::string>> seen;
  auto src = make_source(c, [&](std::vector<config::BackendConfig> l) {
    std::vector<std::string> names;
    for (auto& b : l) names.push_back(b.name);
    MutexLock lk(mu);
    seen.push_back(names);
  });
  ASSERT_TRUE(src) << src.error().message;
  ASSERT_TRUE(*src);
  {
    MutexLock lk(mu);
    ASSERT_EQ(seen.size(), 1u);  // the first load happens at once
    EXPECT_EQ(seen[0], std::vector<std::string>{"a"});
  }
  (*src)->start();
  std::ofstream(path) << "backends:\n  - http://127.0.0.1:1001\n  - {url: http://127.0.0.1:1002, "
                         "name: b}\n";
  EXPECT_TRUE(kvroute::testing::wait_until([&] {
    MutexLock lk(mu);
    return seen.size() == 2;
  }));
  std::ofstream(path) << "backends: [\n";  // broken: the pool stays
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::ofstream(path) << "backends: []\n";
  EXPECT_TRUE(kvroute::testing::wait_until([&] {
    MutexLock lk(mu);
    return seen.size() == 3;
  }));
  (*src)->stop();
  {
    MutexLock lk(mu);
    EXPECT_EQ(seen[1], (std::vector<std::string>{"http://127.0.0.1:1001", "b"}));
    EXPECT_TRUE(seen[2].empty());
  }
  // A broken file at start-up fails with file and line.
  std::ofstream(path) << "backends:\n  - {url: http://x:1, bogus: 1}\n";
  auto bad = make_source(c, [](std::vector<config::BackendConfig>) {});
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find(path + ":2"), std::string::npos) << bad.error().message;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kvroute::discovery
