// The replication wire format, the sequence window, and two replicators over loopback TCP: routing
// decisions and load reach the peer, a dead peer's load is taken back, a partition counts its loss
// and heals, duplicates and reordered messages are applied once.
#include "replication/replication.h"

#include <gtest/gtest.h>

#include <map>
#include <thread>

#include "common/mutex.h"

namespace kvroute::replication {
namespace {

using namespace std::chrono_literals;

TEST(Codec, RoutedAndLoadRoundTrip) {
  Routed r;
  r.backend = 0x1122334455667788;
  r.token_blocks = true;
  r.tokens_per_block = 16;
  r.output_blocks = 7;
  r.blocks = {1, 2, 0xffffffffffffffff};
  std::string out;
  encode_routed(42, 9, r, out);
  EXPECT_EQ(out.size(), kHeaderBytes + 21 + 3 * 8);
  auto m = decode(out);
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_EQ(m->type, MessageType::kRouted);
  EXPECT_EQ(m->sender, 42u);
  EXPECT_EQ(m->seq, 9u);
  EXPECT_EQ(m->routed.backend, r.backend);
  EXPECT_TRUE(m->routed.token_blocks);
  EXPECT_EQ(m->routed.tokens_per_block, 16u);
  EXPECT_EQ(m->routed.output_blocks, 7u);
  EXPECT_EQ(m->routed.blocks, r.blocks);

  const std::vector<LoadEntry> load = {{5, 3, 1000}, {6, -1, -20}};
  encode_load(1, 2, load, out);
  auto l = decode(out);
  ASSERT_TRUE(l) << l.error().message;
  EXPECT_EQ(l->type, MessageType::kLoad);
  EXPECT_EQ(l->load, load);
}

TEST(Codec, BoundsAndRefusals) {
  Routed big;
  big.blocks.assign(kMaxBlocks + 10, 3);
  std::string out;
  encode_routed(1, 1, big, out);
  auto m = decode(out);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->routed.blocks.size(), kMaxBlocks);  // a longer prompt: its first kMaxBlocks

  Routed r;
  r.blocks = {1, 2};
  encode_routed(1, 1, r, out);
  // Every truncation is refused, and so is a trailing byte.
  for (std::size_t n = 0; n < out.size(); ++n) EXPECT_FALSE(decode(out.substr(0, n))) << n;
  EXPECT_FALSE(decode(out + "x"));
  std::string bad_magic = out;
  bad_magic[0] = 'x';
  EXPECT_EQ(decode(bad_magic).error().message, "malformed: bad magic");
  std::string v2 = out;
  v2[2] = 2;
  EXPECT_EQ(decode(v2).error().message, "version 2");
  std::string type = out;
  type[3] = 9;
  EXPECT_FALSE(decode(type));
  // A count beyond the bound is refused before anything is allocated.
  std::string huge = out;
  const std::size_t count_at = kHeaderBytes + 17;
  huge[count_at + 3] = 0x7f;
  EXPECT_EQ(decode(huge).error().message, "malformed: routed: too many blocks");
}

TEST(Codec, SnapshotChunksRoundTripAndRefuseTruncation) {
  std::vector<Routed> recs(3);
  for (std::size_t i = 0; i < recs.size(); ++i) {
    recs[i].backend = 100 + i;
    recs[i].output_blocks = static_cast<std::uint32_t>(i);
    recs[i].blocks.assign(i + 1, 7 * (i + 1));
  }
  std::string out;
  encode_snapshot(11, 22, 1, 4, recs, out);
  // The frame starts with the topic the requester subscribed to.
  EXPECT_EQ(out.substr(0, kSnapshotTopicBytes), snapshot_topic(11, 22));
  auto m = decode(out);
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_EQ(m->type, MessageType::kSnapshot);
  EXPECT_EQ(m->sender, 22u);
  EXPECT_EQ(m->snapshot.requester, 11u);
  EXPECT_EQ(m->snapshot.index, 1u);
  EXPECT_EQ(m->snapshot.count, 4u);
  ASSERT_EQ(m->snapshot.records.size(), 3u);
  for (std::size_t i = 0; i < recs.size(); ++i) {
    EXPECT_EQ(m->snapshot.records[i].backend, recs[i].backend);
    EXPECT_EQ(m->snapshot.records[i].output_blocks, recs[i].output_blocks);
    EXPECT_EQ(m->snapshot.records[i].blocks, recs[i].blocks);
  }
  for (std::size_t n = 0; n < out.size(); ++n) EXPECT_FALSE(decode(out.substr(0, n))) << n;
  EXPECT_FALSE(decode(out + "x"));
  encode_snapshot(11, 22, 4, 4, recs, out);  // index past the count
  EXPECT_EQ(decode(out).error().message, "malformed: snapshot: chunk index");
}

TEST(SequenceWindow, GapsDuplicatesLateAndTooOld) {
  SequenceWindow w;
  using V = SequenceWindow::Verdict;
  EXPECT_EQ(w.observe(100), V::kNew);  // the first one starts the window: nothing lost before
  EXPECT_EQ(w.lost(), 0u);
  EXPECT_EQ(w.observe(101), V::kNew);
  EXPECT_EQ(w.observe(101), V::kDuplicate);
  EXPECT_EQ(w.observe(105), V::kNew);  // 102..104 missing
  EXPECT_EQ(w.lost(), 3u);
  EXPECT_EQ(w.observe(103), V::kLate);  // a reordered one fills a gap
  EXPECT_EQ(w.lost(), 2u);
  EXPECT_EQ(w.observe(103), V::kDuplicate);
  EXPECT_EQ(w.observe(105 + SequenceWindow::kWindow), V::kNew);
  EXPECT_EQ(w.lost(), 2u + SequenceWindow::kWindow - 1);
  EXPECT_EQ(w.observe(104), V::kTooOld);  // out of the window: not applied
  // Slots reused after the window moved on are not mistaken for seen.
  EXPECT_EQ(w.observe(106 + SequenceWindow::kWindow), V::kNew);
  EXPECT_EQ(w.observe(104 + SequenceWindow::kWindow), V::kLate);
}

// What one replicator's callbacks received.
struct Sink {
  Mutex mu;
  std::vector<Routed> routed GUARDED_BY(mu);
  std::map<std::uint64_t, std::pair<std::int64_t, std::int64_t>> load GUARDED_BY(mu);
  std::vector<LoadEntry> local GUARDED_BY(mu);  // what this replica reports

  ReplicatorCallbacks callbacks() {
    ReplicatorCallbacks cb;
    cb.on_routed = [this](const Routed& r) {
      MutexLock l(mu);
      routed.push_back(r);
    };
    cb.on_load = [this](std::uint64_t b, std::int32_t di, std::int64_t dt) {
      MutexLock l(mu);
      load[b].first += di;
      load[b].second += dt;
    };
    cb.local_load = [this](std::vector<LoadEntry>& out) {
      MutexLock l(mu);
      out = local;
    };
    return cb;
  }
  std::size_t routed_count() {
    MutexLock l(mu);
    return routed.size();
  }
  std::int64_t inflight(std::uint64_t b) {
    MutexLock l(mu);
    return load[b].first;
  }
  void set_local(std::vector<LoadEntry> v) {
    MutexLock l(mu);
    local = std::move(v);
  }
};

// Polls `pred` every 10 ms for at most 10 s.
template <typename P>
bool eventually(P pred) {
  for (int i = 0; i < 1000; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return pred();
}

ReplicatorOptions opts(std::vector<std::string> peers = {}) {
  ReplicatorOptions o;
  o.listen = "tcp://127.0.0.1:*";
  o.peers = std::move(peers);
  o.load_interval = 20ms;
  o.peer_timeout = 300ms;
  return o;
}

Routed routed_to(std::uint64_t backend, std::uint64_t first_block) {
  Routed r;
  r.backend = backend;
  r.blocks = {first_block, first_block + 1};
  r.output_blocks = 1;
  return r;
}

TEST(Replicator, DecisionsAndLoadReachThePeerAndADeadPeersLoadIsTakenBack) {
  Sink sa, sb;
  auto a = std::make_unique<Replicator>(opts(), sa.callbacks());
  ASSERT_TRUE(a->start());
  Replicator b(opts({a->endpoint()}), sb.callbacks());
  ASSERT_TRUE(b.start());
  a->add_peer(b.endpoint());
  a->add_peer(a->endpoint());  // its own endpoint in the list is skipped
  sa.set_local({{7, 3, 300}});
  // The SUB side joins asynchronously: publish until the peer hears (bounded by eventually()).
  ASSERT_TRUE(eventually([&] { return sb.inflight(7) == 3; }));
  std::uint64_t n = 0;
  ASSERT_TRUE(eventually([&] {
    a->publish_routed(routed_to(7, 1000 + n++));
    return sb.routed_count() > 0;
  }));
  {
    MutexLock l(sb.mu);
    EXPECT_EQ(sb.routed.back().backend, 7u);
    EXPECT_EQ(sb.routed.back().blocks.size(), 2u);
  }
  // B hears A and A hears B; nobody hears itself.
  sb.set_local({{7, 2, 0}});
  ASSERT_TRUE(eventually([&] { return sa.inflight(7) == 2; }));
  EXPECT_EQ(sa.routed_count(), 0u);
  EXPECT_EQ(b.stats().peers_live, 1u);
  // Load changes arrive as deltas.
  sa.set_local({{7, 1, 100}, {8, 4, 0}});
  ASSERT_TRUE(eventually([&] { return sb.inflight(7) == 1 && sb.inflight(8) == 4; }));
  // A dies: after peer_timeout its load is taken back; its decisions stay applied.
  a.reset();
  ASSERT_TRUE(eventually([&] { return sb.inflight(7) == 0 && sb.inflight(8) == 0; }));
  EXPECT_EQ(b.stats().peers_live, 0u);
  EXPECT_GE(b.stats().peers_forgotten, 1u);
  EXPECT_GT(sb.routed_count(), 0u);
}

TEST(Replicator, APartitionCountsItsLossAndHeals) {
  Sink sa, sb;
  Replicator a(opts(), sa.callbacks());
  ASSERT_TRUE(a.start());
  Replicator b(opts({a.endpoint()}), sb.callbacks());
  ASSERT_TRUE(b.start());
  sa.set_local({{7, 5, 0}});
  ASSERT_TRUE(eventually([&] { return sb.inflight(7) == 5; }));
  // Cut B off: A's load is forgotten after the timeout (B degrades to its local picture).
  b.set_partitioned_for_test(true);
  ASSERT_TRUE(eventually([&] { return sb.inflight(7) == 0; }));
  for (int i = 0; i < 10; ++i) a.publish_routed(routed_to(7, 50 + static_cast<std::uint64_t>(i)));
  // B's thread has taken all ten off the wire (and dropped them) before the link heals.
  ASSERT_TRUE(eventually([&] { return b.stats().partitioned_routed == 10; }));
  EXPECT_EQ(sb.routed_count(), 0u);
  // Heal: the load and new decisions flow again; what was sent meanwhile is counted lost.
  b.set_partitioned_for_test(false);
  ASSERT_TRUE(eventually([&] { return sb.inflight(7) == 5; }));
  a.publish_routed(routed_to(7, 99));
  ASSERT_TRUE(eventually([&] { return sb.routed_count() == 1; }));
  EXPECT_GE(b.stats().lost, 10u);
  EXPECT_EQ(b.stats().peers_live, 1u);
}

TEST(Replicator, DuplicatesAreAppliedOnceReorderedOnesAndStaleLoadIgnored) {
  Sink s;
  Replicator r(opts(), s.callbacks());  // not started: inject_for_test on this thread
  std::string m1, m2, m3, l5, l4;
  encode_routed(77, 1, routed_to(1, 10), m1);
  encode_routed(77, 3, routed_to(1, 30), m3);
  encode_routed(77, 2, routed_to(1, 20), m2);
  const std::vector<LoadEntry> newer = {{1, 4, 40}}, older = {{1, 9, 90}};
  encode_load(77, 5, newer, l5);
  encode_load(77, 4, older, l4);
  r.inject_for_test(m1);
  r.inject_for_test(m1);  // duplicated
  r.inject_for_test(m3);
  r.inject_for_test(m2);  // reordered
  // Each decision counts as one more in flight on its engine until the sender's next LOAD.
  EXPECT_EQ(s.inflight(1), 3);
  r.inject_for_test(l5);
  r.inject_for_test(l4);  // an older load after a newer one
  r.inject_for_test("garbage");
  std::string v9 = m1;
  v9[2] = 9;
  r.inject_for_test(v9);
  EXPECT_EQ(s.routed_count(), 3u);
  EXPECT_EQ(s.inflight(1), 4);
  const auto st = r.stats();
  EXPECT_EQ(st.duplicates, 1u);
  EXPECT_EQ(st.reordered, 2u);  // seq 2 after 3, and the load of seq 4 after 5
  EXPECT_EQ(st.stale_load, 1u);
  EXPECT_EQ(st.lost, 0u);  // the gap at 2 was filled
  EXPECT_EQ(st.malformed, 1u);
  EXPECT_EQ(st.other_version, 1u);
}

TEST(Replicator, AJoiningReplicaWarmsFromAPeerBeforeItIsReady) {
  Sink sa, sb;
  Replicator a(opts(), sa.callbacks());
  ASSERT_TRUE(a.start());
  EXPECT_FALSE(a.warming());  // no peers: nothing to wait for
  // A's decision log: 1500 decisions of 100 blocks (150k blocks, two 1 MiB chunks).
  for (std::uint64_t i = 0; i < 1500; ++i) {
    Routed r = routed_to(1 + i % 4, i * 1000);
    r.blocks.resize(100);
    for (std::size_t k = 0; k < 100; ++k) r.blocks[k] = i * 1000 + k;
    a.publish_routed(std::move(r));
  }
  ASSERT_TRUE(eventually([&] { return a.stats().log_blocks == 150'000; }));
  auto o = opts({a.endpoint()});
  o.warmup_timeout = 20s;
  Replicator b(o, sb.callbacks());
  ASSERT_TRUE(b.start());
  EXPECT_TRUE(b.warming());
  ASSERT_TRUE(eventually([&] { return !b.warming(); }));
  const auto st = b.stats();
  EXPECT_TRUE(st.warmed_from_peer);
  EXPECT_EQ(st.snapshot_records_received, 1500u);
  EXPECT_EQ(a.stats().snapshots_served, 1u);
  {
    MutexLock l(sb.mu);
    ASSERT_GE(sb.routed.size(), 1500u);
    // Oldest first, as A made them: B's index ages them in the same order.
    EXPECT_EQ(sb.routed.front().blocks.front(), 0u);
    EXPECT_EQ(sb.routed[1499].blocks.front(), 1499u * 1000);
  }
  // Then the stream: a decision made after the snapshot arrives as usual.
  a.publish_routed(routed_to(9, 5'000'000));
  ASSERT_TRUE(eventually([&] {
    MutexLock l(sb.mu);
    return sb.routed.back().backend == 9;
  }));
  // B can serve a snapshot in turn: it logged what it received.
  EXPECT_GE(b.stats().log_blocks, 150'000u);
}

TEST(Replicator, WithNoPeerAnsweringWarmUpEndsAtTheTimeout) {
  Sink s;
  auto o = opts({"tcp://127.0.0.1:1"});  // nobody listens there
  o.warmup_timeout = 200ms;
  Replicator r(o, s.callbacks());
  ASSERT_TRUE(r.start());
  EXPECT_TRUE(r.warming());
  ASSERT_TRUE(eventually([&] { return !r.warming(); }));
  EXPECT_FALSE(r.stats().warmed_from_peer);
}

TEST(Replicator, PeersFoundThroughDns) {
  Sink sa, sb;
  Replicator a(opts(), sa.callbacks());
  ASSERT_TRUE(a.start());
  const std::string ep = a.endpoint();  // tcp://127.0.0.1:PORT
  const std::string port = ep.substr(ep.rfind(':') + 1);
  sa.set_local({{7, 3, 30}});
  // The real resolver: localhost gives 127.0.0.1 (and ::1, where nobody listens: harmless).
  auto o = opts();
  o.peers_dns = "localhost:" + port;
  Replicator b(o, sb.callbacks());
  ASSERT_TRUE(b.start());
  ASSERT_TRUE(eventually([&] { return sb.inflight(7) == 3; }));
  EXPECT_GE(b.stats().dns_peers, 1u);
  ASSERT_TRUE(eventually([&] { return !b.warming(); }));
  EXPECT_TRUE(b.stats().warmed_from_peer);  // A's (empty) snapshot is an answer

  // A resolver whose answer changes: an address that leaves DNS is dropped.
  Sink sc;
  Mutex mu;
  std::vector<std::string> addrs = {"127.0.0.1"};
  auto oc = opts();
  oc.peers_dns = "replicas.example:" + port;
  oc.dns_interval = 20ms;
  oc.resolve = [&](const std::string& host) {
    EXPECT_EQ(host, "replicas.example");
    MutexLock l(mu);
    return addrs;
  };
  Replicator c(oc, sc.callbacks());
  ASSERT_TRUE(c.start());
  ASSERT_TRUE(eventually([&] { return sc.inflight(7) == 3; }));
  {
    MutexLock l(mu);
    addrs = {"127.0.0.9"};  // A's address left; nobody listens on the new one
  }
  // Disconnected: A falls silent for C and is forgotten after peer_timeout.
  ASSERT_TRUE(eventually([&] { return sc.inflight(7) == 0; }));
  EXPECT_EQ(c.stats().dns_peers, 1u);
}

TEST(Replicator, ListenErrorsNameTheEndpoint) {
  Sink s;
  ReplicatorOptions o;
  o.listen = "tcp://256.0.0.1:1";
  Replicator r(o, s.callbacks());
  auto st = r.start();
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("tcp://256.0.0.1:1"), std::string::npos);
}

}  // namespace
}  // namespace kvroute::replication
