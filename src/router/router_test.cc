// Router::pick_with_room under each flowControl.pickAmong (ADR 0027), on two engines with fresh
// metrics of which only the second has room (the first reports a queue; the round-robin policy's
// first pick is the first engine); and two replicas exchanging decisions and load (issue 17).
#include "router/router.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <deque>
#include <set>
#include <string>
#include <thread>

#include "metrics/registry.h"

namespace kvroute::router {
namespace {

std::unique_ptr<Router> two_engines(metrics::Registry& reg, const std::string& pick_among) {
  config::Config c;
  c.log_level = "warn";
  c.policy = "round-robin";
  c.flow_control.enabled = true;
  c.flow_control.pick_among = pick_among;
  c.flow_control.metrics_staleness = std::chrono::milliseconds(60000);
  for (int i = 0; i < 2; ++i) {
    config::BackendConfig b;
    b.url = "http://10.0.0." + std::to_string(i + 1) + ":8000";
    b.name = "e" + std::to_string(i);
    b.models = {"m"};
    c.backends.push_back(b);
  }
  auto r = Router::create(std::move(c), reg);
  EXPECT_TRUE(r) << r.error().message;
  if (!r) return nullptr;
  for (auto* b : (*r)->backend_list()) b->scraped_at_ms.store(routing::steady_now_ms());
  (*r)->backend_list()[0]->scraped_waiting.store(10);  // e0: a queue over the threshold
  return std::move(*r);
}

struct Try {
  std::string engine;  // "" when the request waits
  std::size_t candidates_left = 0;
};

Try try_once(Router& r, std::int64_t waited_ms = -1) {
  routing::RouteRequest rr;
  const auto list = r.backend_list();
  Candidates cs(list.begin(), list.end());
  const auto now = routing::steady_now_ms();
  Assignment a = r.pick_with_room(rr, cs, now, waited_ms >= 0 ? now - waited_ms : -1);
  return {a ? a.backend()->name : "", cs.size()};
}

TEST(PickAmong, BestWaitsForThePoliciesPickWithRoomSpillsAllJoinsTheQueue) {
  metrics::Registry reg_best, reg_room, reg_all;
  auto best = two_engines(reg_best, "best");
  auto room = two_engines(reg_room, "with-room");
  auto all = two_engines(reg_all, "all");
  ASSERT_TRUE(best && room && all);
  // best: the policy wants e0, which has no room: the request waits, nothing is taken.
  const Try b = try_once(*best);
  EXPECT_EQ(b.engine, "");
  EXPECT_EQ(b.candidates_left, 2u);
  EXPECT_EQ(best->backend_list()[0]->inflight.load(), 0);
  // with-room: only e1 is offered to the policy.
  const Try w = try_once(*room);
  EXPECT_EQ(w.engine, "e1");
  EXPECT_EQ(w.candidates_left, 1u);
  // all: e1 has room, so the pool is not saturated, and the policy's e0 wins though full.
  const Try a = try_once(*all);
  EXPECT_EQ(a.engine, "e0");
  // None has room: every mode waits.
  for (auto* r : {best.get(), room.get(), all.get()}) {
    r->backend_list()[1]->scraped_waiting.store(10);
    EXPECT_EQ(try_once(*r).engine, "");
  }
}

TEST(PickAmong, BestSpillsAfterItsLongestWaitAndNeverWaitsForAStaleEngine) {
  metrics::Registry reg;
  auto best = two_engines(reg, "best");
  ASSERT_TRUE(best);
  // Waited less than the bound: still waits for e0 (the round-robin pick; each try advances it,
  // so each case starts from a fresh router).
  EXPECT_EQ(try_once(*best, Router::kBestMaxWaitMs - 100).engine, "");
  metrics::Registry reg2;
  auto waited = two_engines(reg2, "best");
  ASSERT_TRUE(waited);
  EXPECT_EQ(try_once(*waited, Router::kBestMaxWaitMs).engine, "e1");  // then as with-room
  // An engine never scraped (just discovered, or its /metrics fails) is not waited for.
  metrics::Registry reg3;
  auto stale = two_engines(reg3, "best");
  ASSERT_TRUE(stale);
  stale->backend_list()[0]->scraped_at_ms.store(-1);
  stale->backend_list()[0]->scraped_waiting.store(0);
  EXPECT_EQ(try_once(*stale).engine, "e1");
}

// --- Active-active replicas (issue 17) ---------------------------------------------------------

std::unique_ptr<Router> replica(metrics::Registry& reg, bool replicated,
                                std::vector<std::string> peers = {}) {
  config::Config c;
  c.replicas.peers = std::move(peers);
  c.log_level = "warn";
  c.policy = "kvroute";
  if (replicated) {
    c.replicas.listen = "tcp://127.0.0.1:*";
    c.replicas.load_interval = std::chrono::milliseconds(20);
    c.replicas.peer_timeout = std::chrono::milliseconds(500);
  }
  for (int i = 0; i < 4; ++i) {
    config::BackendConfig b;
    b.url = "http://10.0.1." + std::to_string(i + 1) + ":8000";
    b.name = "e" + std::to_string(i);
    b.models = {"m"};
    c.backends.push_back(b);
  }
  auto r = Router::create(std::move(c), reg);
  EXPECT_TRUE(r) << r.error().message;
  return r ? std::move(*r) : nullptr;
}

// One request routed by `r`; the Assignment (and the RouteRequest it points to) live in `held`.
struct Held {
  Prepared p;
  routing::RouteRequest rr;
  Assignment a;
};
std::string route(Router& r, int conversation, std::deque<Held>& held) {
  std::string content;
  for (int i = 0; i < 60; ++i)
    content += fmt::format("conversation {} sentence {}. ", conversation, i);
  Held& h = held.emplace_back();
  h.p = r.prepare(
      openai::Endpoint::kChatCompletions,
      fmt::format(R"({{"model":"m","messages":[{{"role":"user","content":"{}"}}]}})", content));
  EXPECT_TRUE(h.p.parsed);
  r.route_request(h.p, "", h.rr);
  Candidates cs;
  EXPECT_FALSE(r.select_candidates(*h.p.parsed, routing::steady_now_ms(), cs));
  h.a = r.pick(h.rr, cs);
  return h.a ? h.a.backend()->name : "";
}

int peer_inflight(Router& r) {
  int sum = 0;
  for (auto* b : r.backend_list()) sum += b->peer_inflight.load();
  return sum;
}

double received_routed(Router& r, metrics::Registry& reg) {
  r.update_gauges();
  const std::string text = reg.render();
  const std::string key =
      R"(kvroute_replication_messages_total{direction="received",type="routed"} )";
  const auto at = text.find(key);
  return at == std::string::npos ? 0 : std::stod(text.substr(at + key.size()));
}

template <typename P>
bool eventually(P pred) {
  for (int i = 0; i < 1000 && !pred(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return pred();
}

TEST(Replicas, APeersDecisionsAndLoadSteerTheOtherReplica) {
  metrics::Registry ra, rb;
  auto a = replica(ra, true);
  auto b = replica(rb, true);
  ASSERT_TRUE(a && b);
  a->add_replica_peer(b->replicas_endpoint());
  b->add_replica_peer(a->replicas_endpoint());
  constexpr int kConversations = 8;
  // A routes eight conversations and holds them in flight: its load spreads them over engines.
  std::deque<Held> held_a;
  std::vector<std::string> engine_of;
  for (int i = 0; i < kConversations; ++i) engine_of.push_back(route(*a, i, held_a));
  ASSERT_GE(std::set<std::string>(engine_of.begin(), engine_of.end()).size(), 2u);
  // B hears A's load (8 in flight) and A's decisions; nothing of its own yet.
  ASSERT_TRUE(eventually([&] { return peer_inflight(*b) == kConversations; })) << peer_inflight(*b);
  // (The SUB side may join after A's first decisions went out: A routes them again, as a
  // conversation's next turn would, until B has heard all of them.)
  ASSERT_TRUE(eventually([&] {
    if (received_routed(*b, rb) >= kConversations) return true;
    for (int i = 0; i < kConversations; ++i) route(*a, i, held_a);
    return false;
  }));
  held_a.clear();
  ASSERT_TRUE(eventually([&] { return peer_inflight(*b) == 0; }));  // A's requests finished
  // Each conversation's next turn on B goes where A sent it: B's index learned A's decisions.
  std::deque<Held> held_b;
  for (int i = 0; i < kConversations; ++i) {
    EXPECT_EQ(route(*b, i, held_b), engine_of[static_cast<std::size_t>(i)]) << "conversation " << i;
    held_b.clear();
  }
  // And A hears B's load in turn.
  route(*b, 0, held_b);
  EXPECT_TRUE(eventually([&] { return peer_inflight(*a) == 1; }));
  // A replica that stops takes its load with it.
  held_b.clear();
  route(*b, 1, held_b);
  EXPECT_TRUE(eventually([&] { return peer_inflight(*a) == 1; }));
  b->stop();
  EXPECT_TRUE(eventually([&] { return peer_inflight(*a) == 0; }));
  held_b.clear();
}

TEST(Replicas, AJoiningReplicaWarmsFromAPeerAndRoutesAsItWould) {
  metrics::Registry ra, rc;
  auto a = replica(ra, true);
  ASSERT_TRUE(a);
  constexpr int kConversations = 8;
  std::deque<Held> held;
  std::vector<std::string> engine_of;
  for (int i = 0; i < kConversations; ++i) engine_of.push_back(route(*a, i, held));
  ASSERT_GE(std::set<std::string>(engine_of.begin(), engine_of.end()).size(), 2u);
  held.clear();
  // C joins later, told of A: not ready until A's snapshot arrived.
  auto c = replica(rc, true, {a->replicas_endpoint()});
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->replicas_warming());
  ASSERT_TRUE(eventually([&] { return !c->replicas_warming(); }));
  c->update_gauges();
  EXPECT_NE(
      rc.render().find(R"(kvroute_replication_snapshot_records_total{direction="received"} 8)"),
      std::string::npos)
      << rc.render();
  // Every conversation's next turn on C goes where A sent it, without C having heard the stream.
  for (int i = 0; i < kConversations; ++i) {
    EXPECT_EQ(route(*c, i, held), engine_of[static_cast<std::size_t>(i)]) << "conversation " << i;
    held.clear();
  }
}

TEST(Replicas, ReplicasConfigIsValidated) {
  auto bad =
      config::load_yaml("backends: [http://a:1]\nreplicas:\n  peers: [tcp://b:5570]\n", "r.yaml");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("replicas.peers"), std::string::npos) << bad.error().message;
  EXPECT_NE(bad.error().message.find("r.yaml:3"), std::string::npos) << bad.error().message;
  auto http = config::load_yaml("replicas:\n  listen: http://0.0.0.0:1\n", "r.yaml");
  ASSERT_FALSE(http);
  EXPECT_NE(http.error().message.find("replicas.listen"), std::string::npos);
  auto ok = config::load_yaml(
      "replicas:\n  listen: tcp://0.0.0.0:5570\n  peers: [tcp://r1:5570, tcp://r2:5570]\n"
      "  loadInterval: 100ms\n  peerTimeout: 2s\n",
      "r.yaml");
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(ok->replicas.peers.size(), 2u);
  EXPECT_EQ(ok->replicas.load_interval.count(), 100);
  EXPECT_EQ(ok->replicas.peer_timeout.count(), 2000);
  auto slow =
      config::load_yaml("replicas:\n  listen: tcp://0.0.0.0:5570\n  peerTimeout: 60ms\n", "r.yaml");
  EXPECT_FALSE(slow);
  auto dns = config::load_yaml(
      "replicas:\n  listen: tcp://0.0.0.0:5570\n  peersDns: kvroute-replicas.ns.svc\n", "r.yaml");
  ASSERT_FALSE(dns);
  EXPECT_NE(dns.error().message.find("replicas.peersDns"), std::string::npos);
  auto dns_ok = config::load_yaml(
      "replicas:\n  listen: tcp://0.0.0.0:5570\n  peersDns: kvroute-replicas.ns.svc:5570\n"
      "  warmupTimeout: 10s\n",
      "r.yaml");
  ASSERT_TRUE(dns_ok) << dns_ok.error().message;
  EXPECT_EQ(dns_ok->replicas.peers_dns, "kvroute-replicas.ns.svc:5570");
  EXPECT_EQ(dns_ok->replicas.warmup_timeout.count(), 10000);
}

}  // namespace
}  // namespace kvroute::router
