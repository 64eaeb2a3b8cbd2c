// kvroute doctor against simulated engines, each misconfigured the way a real deployment was:
// every check must pass on a healthy deployment and fail (or warn) on its own misconfiguration.
#include "doctor/doctor.h"

#include <gtest/gtest.h>

#include <functional>
#include <memory>

#include "proxy/proxy.h"
#include "sim/server.h"

namespace kvroute::doctor {
namespace {

using namespace std::chrono_literals;

// One simulated engine with `tweak` applied to its options.
std::unique_ptr<sim::SimCluster> engine(const std::function<void(sim::SimOptions&)>& tweak = {}) {
  auto o = sim::loopback_options(1, "m", 512);
  o.kv_events_ephemeral = false;
  if (tweak) tweak(o);
  auto c = std::make_unique<sim::SimCluster>(o);
  EXPECT_TRUE(c->start());
  return c;
}

Options options_for(const std::vector<sim::SimCluster*>& engines) {
  Options o;
  for (auto* e : engines) o.engines.push_back(e->endpoints().front().url);
  o.timeout = 5s;
  return o;
}

Severity severity_of(const Report& r, std::string_view check, std::string_view target = {}) {
  Severity worst = Severity::kOk;
  bool found = false;
  for (const auto* f : r.of(check)) {
    if (!target.empty() && f->target != target) continue;
    found = true;
    if (f->severity == Severity::kFail ||
        (f->severity == Severity::kWarn && worst == Severity::kOk))
      worst = f->severity;
  }
  EXPECT_TRUE(found) << "no finding for " << check << " " << target << "\n" << to_text(r);
  return worst;
}

TEST(Doctor, AHealthyDeploymentPassesEveryCheck) {
  auto a = engine();
  auto b = engine();
  const auto r = diagnose(options_for({a.get(), b.get()}));
  EXPECT_FALSE(r.failed()) << to_text(r);
  EXPECT_EQ(r.of("reachable").size(), 2u);
  EXPECT_EQ(r.of("prefix-caching-effective").size(), 2u);
  EXPECT_EQ(severity_of(r, "prefix-caching-effective"), Severity::kOk);
  EXPECT_EQ(severity_of(r, "block-size"), Severity::kOk);
  EXPECT_EQ(severity_of(r, "same-model"), Severity::kOk);
  EXPECT_EQ(severity_of(r, "version"), Severity::kOk);
  const std::string json = to_json(r);
  EXPECT_NE(json.find(R"("failed":false)"), std::string::npos) << json;
}

TEST(Doctor, PrefixCachingDisabled) {
  auto a = engine();
  auto off = engine([](sim::SimOptions& o) { o.engine.enable_prefix_caching = false; });
  const auto r = diagnose(options_for({a.get(), off.get()}));
  EXPECT_TRUE(r.failed());
  EXPECT_EQ(severity_of(r, "prefix-caching", off->endpoints().front().url), Severity::kFail);
  EXPECT_EQ(severity_of(r, "prefix-caching", a->endpoints().front().url), Severity::kOk);
}

// The story users tell: a KV-transfer connector disabled local caching while everything said it
// was on; the hit rate stayed at 0%.
TEST(Doctor, AKvTransferConnectorThatBypassesTheLocalCache) {
  auto a = engine();
  auto pd = engine([](sim::SimOptions& o) { o.engine.kv_connector = "NixlConnector"; });
  const auto r = diagnose(options_for({a.get(), pd.get()}));
  EXPECT_TRUE(r.failed());
  EXPECT_EQ(severity_of(r, "prefix-caching", pd->endpoints().front().url), Severity::kOk);
  EXPECT_EQ(severity_of(r, "prefix-caching-effective", pd->endpoints().front().url),
            Severity::kFail);
  EXPECT_EQ(severity_of(r, "prefix-caching-effective", a->endpoints().front().url), Severity::kOk);
  const auto f = r.of("prefix-caching-effective");
  const bool names_connector = std::any_of(f.begin(), f.end(), [](const Finding* x) {
    return x->message.find("kv-transfer-config") != std::string::npos;
  });
  EXPECT_TRUE(names_connector) << to_text(r);
}

TEST(Doctor, BlockSizesThatDifferFromEachOtherOrFromTheRouter) {
  auto a = engine();
  auto b32 = engine([](sim::SimOptions& o) { o.engine.block_size = 32; });
  auto r = diagnose(options_for({a.get(), b32.get()}));
  EXPECT_EQ(severity_of(r, "block-size"), Severity::kFail);
  // Engines agree, the router does not.
  auto c32 = engine([](sim::SimOptions& o) { o.engine.block_size = 32; });
  r = diagnose(options_for({b32.get(), c32.get()}));
  EXPECT_EQ(severity_of(r, "block-size"), Severity::kWarn);
  EXPECT_NE(r.of("block-size").front()->fix.find("routing.blockSize: 32"), std::string::npos);
  auto o = options_for({b32.get(), c32.get()});
  o.block_size = 32;  // the router's, given to the doctor
  EXPECT_EQ(severity_of(diagnose(o), "block-size"), Severity::kOk);
}

TEST(Doctor, VersionsAndModelsUnderOneName) {
  auto a = engine();
  auto newer = engine([](sim::SimOptions& o) {
    o.vllm_version = "0.12.0";
    o.engine.max_model_len = 1024;  // another model under the same name
  });
  const auto r = diagnose(options_for({a.get(), newer.get()}));
  EXPECT_EQ(severity_of(r, "version"), Severity::kWarn);
  EXPECT_EQ(severity_of(r, "same-model", "m"), Severity::kFail);
}

// An engine that publishes KV events (on an OS-picked port) with `tweak` applied.
std::unique_ptr<sim::SimCluster> publishing(
    const std::function<void(sim::SimOptions&)>& tweak = {}) {
  auto o = sim::loopback_options(1, "m", 512);
  if (tweak) tweak(o);
  auto c = std::make_unique<sim::SimCluster>(o);
  EXPECT_TRUE(c->start());
  return c;
}

TEST(Doctor, KvEventsArriveAndHashAlike) {
  auto a = publishing();
  auto b = publishing();
  auto o = options_for({a.get(), b.get()});
  o.kv_events = {a->endpoints().front().kv_events, b->endpoints().front().kv_events};
  auto r = diagnose(o);
  EXPECT_EQ(severity_of(r, "kv-events"), Severity::kOk) << to_text(r);
  EXPECT_EQ(severity_of(r, "hash-seed"), Severity::kOk) << to_text(r);
  EXPECT_FALSE(r.failed()) << to_text(r);
}

// Engines started with different PYTHONHASHSEED values name one prefix differently.
TEST(Doctor, HashSeedsThatDiffer) {
  auto a = publishing();
  auto b = publishing([](sim::SimOptions& o) { o.engine.hash_seed = 42; });
  auto o = options_for({a.get(), b.get()});
  o.kv_events = {a->endpoints().front().kv_events, b->endpoints().front().kv_events};
  const auto r = diagnose(o);
  EXPECT_EQ(severity_of(r, "kv-events"), Severity::kOk) << to_text(r);
  EXPECT_EQ(severity_of(r, "hash-seed"), Severity::kFail) << to_text(r);
}

// KV events configured (the router is told an endpoint) but the engine publishes nothing there.
TEST(Doctor, KvEventsConfiguredButSilent) {
  auto quiet = engine();  // no KV events
  auto o = options_for({quiet.get()});
  o.kv_events = {"tcp://127.0.0.1:1"};
  const auto r = diagnose(o);
  EXPECT_EQ(severity_of(r, "kv-events", quiet->endpoints().front().url), Severity::kFail)
      << to_text(r);
}

TEST(Doctor, ClockSkew) {
  auto a = engine();
  auto late = engine([](sim::SimOptions& o) { o.clock_skew_s = -120; });
  const auto r = diagnose(options_for({a.get(), late.get()}));
  EXPECT_EQ(severity_of(r, "clock", a->endpoints().front().url), Severity::kOk);
  EXPECT_EQ(severity_of(r, "clock", late->endpoints().front().url), Severity::kWarn);
  EXPECT_NE(r.of("clock").back()->message.find("behind"), std::string::npos) << to_text(r);
}

TEST(Doctor, UnreachableEnginesAreNamed) {
  auto a = engine();
  auto o = options_for({a.get()});
  o.engines.push_back("http://127.0.0.1:1");
  o.timeout = 2s;
  const auto r = diagnose(o);
  EXPECT_TRUE(r.failed());
  EXPECT_EQ(severity_of(r, "reachable", "http://127.0.0.1:1"), Severity::kFail);
}

// Through a router: a session stays on one engine and a repeated prompt returns to its engine with
// kvroute's default policy; round-robin fails both.
TEST(Doctor, SessionStickinessAndPrefixRoutingThroughTheRouter) {
  auto a = engine();
  auto b = engine();
  for (const std::string policy : {"kvroute", "round-robin"}) {
    config::Config c;
    c.address = "127.0.0.1";
    c.port = 0;
    c.log_level = "warn";
    c.policy = policy;
    for (auto* e : {a.get(), b.get()}) {
      config::BackendConfig bc;
      bc.url = e->endpoints().front().url;
      bc.name = bc.url;
      bc.models = {"m"};
      c.backends.push_back(bc);
    }
    proxy::Proxy p(c);
    auto port = p.start();
    ASSERT_TRUE(port) << port.error().message;
    auto o = options_for({a.get(), b.get()});
    o.router = "http://127.0.0.1:" + std::to_string(*port);
    const auto r = diagnose(o);
    const Severity want = policy == "kvroute" ? Severity::kOk : Severity::kFail;
    EXPECT_EQ(severity_of(r, "session-stickiness"), want) << policy << "\n" << to_text(r);
    EXPECT_EQ(severity_of(r, "prefix-routing"), want) << policy << "\n" << to_text(r);
    // kvroute predicts the hits the engines find; round-robin does not predict (a warning).
    EXPECT_EQ(severity_of(r, "predicted-hits"),
              policy == "kvroute" ? Severity::kOk : Severity::kWarn)
        << policy << "\n"
        << to_text(r);
    p.stop(1s);
  }
}

// The router predicts hits that the engines never find: their connector bypasses the local cache.
TEST(Doctor, PredictedHitsTheEnginesDoNotFind) {
  auto a = engine([](sim::SimOptions& o) { o.engine.kv_connector = "LMCacheConnectorV1"; });
  auto b = engine([](sim::SimOptions& o) { o.engine.kv_connector = "LMCacheConnectorV1"; });
  config::Config c;
  c.address = "127.0.0.1";
  c.port = 0;
  c.log_level = "warn";
  c.admin_port = 0;
  c.admin_address = "127.0.0.1";
  for (auto* e : {a.get(), b.get()}) {
    config::BackendConfig bc;
    bc.url = e->endpoints().front().url;
    bc.name = bc.url;
    bc.models = {"m"};
    c.backends.push_back(bc);
  }
  proxy::Proxy p(c);
  auto port = p.start();
  ASSERT_TRUE(port) << port.error().message;
  auto o = options_for({a.get(), b.get()});
  o.router = "http://127.0.0.1:" + std::to_string(*port);
  // The metrics live on the admin port: without --router-metrics the doctor says so.
  auto r = diagnose(o);
  EXPECT_EQ(severity_of(r, "predicted-hits"), Severity::kWarn) << to_text(r);
  o.router_metrics = "http://127.0.0.1:" + std::to_string(p.admin_port());
  r = diagnose(o);
  EXPECT_EQ(severity_of(r, "predicted-hits"), Severity::kFail) << to_text(r);
  EXPECT_NE(r.of("predicted-hits").front()->message.find("found none"), std::string::npos);
  p.stop(1s);
}

}  // namespace
}  // namespace kvroute::doctor
