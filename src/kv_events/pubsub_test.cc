// End-to-end tests of ZmqEventPublisher -> ZmqEventSubscriber over 127.0.0.1 with OS-picked
// ports: ordering, late join and gap recovery through replay (both reply shapes), publisher
// restart, slow consumers, silent/dead engines, malformed frames, topic filters, runtime removal.
// Every wait is bounded.
#include <gtest/gtest.h>
#include <zmq.h>

#include <chrono>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "kv_events/internal/zmq_util.h"
#include "kv_events/publisher.h"
#include "kv_events/subscriber.h"
#include "testing/wait.h"

namespace kvroute::kv_events {
namespace {

using namespace std::chrono_literals;

constexpr auto kDeadline = 5s;

using testing::wait_until;

EventBatch make_batch(std::uint64_t i) {
  EventBatch b;
  b.ts = 1757500000.0 + static_cast<double>(i);
  BlockStored s;
  s.block_hashes = {i * 1000 + 1, i * 1000 + 2};
  s.parent_block_hash = i;
  for (std::uint32_t t = 0; t < 32; ++t) s.token_ids.push_back(static_cast<std::uint32_t>(i) + t);
  s.medium = "GPU";
  b.events.emplace_back(std::move(s));
  return b;
}

struct Delivery {
  std::string engine;
  std::uint64_t seq;
  EventBatch batch;
};

struct Collector {
  std::mutex mu;
  std::vector<Delivery> got;
  std::vector<std::string> resets;
  std::vector<std::pair<std::string, StaleReason>> stales;
  std::chrono::milliseconds sleep{0};

  SubscriberCallbacks callbacks() {
    SubscriberCallbacks cb;
    cb.on_batch = [this](const std::string& e, std::uint64_t seq, const EventBatch& b) {
      if (sleep.count() > 0) std::this_thread::sleep_for(sleep);
      std::lock_guard lk(mu);
      got.push_back({e, seq, b});
    };
    cb.on_reset = [this](const std::string& e) {
      std::lock_guard lk(mu);
      resets.push_back(e);
    };
    cb.on_stale = [this](const std::string& e, StaleReason r) {
      std::lock_guard lk(mu);
      stales.emplace_back(e, r);
    };
    return cb;
  }
  std::vector<std::uint64_t> seqs(const std::string& engine) {
    std::lock_guard lk(mu);
    std::vector<std::uint64_t> out;
    for (auto& d : got)
      if (d.engine == engine) out.push_back(d.seq);
    return out;
  }
  std::size_t count(const std::string& engine) { return seqs(engine).size(); }
  std::size_t stale_count(StaleReason r) {
    std::lock_guard lk(mu);
    std::size_t n = 0;
    for (auto& s : stales) n += s.second == r;
    return n;
  }
  std::size_t reset_count() {
    std::lock_guard lk(mu);
    return resets.size();
  }
};

std::vector<std::uint64_t> iota(std::uint64_t from, std::uint64_t to) {
  std::vector<std::uint64_t> v;
  for (auto i = from; i < to; ++i) v.push_back(i);
  return v;
}

PublisherConfig local_config(bool replay, Encoding enc = Encoding::kArray) {
  PublisherConfig c;
  c.endpoint = "tcp://127.0.0.1:*";
  if (replay) c.replay_endpoint = "tcp://127.0.0.1:*";
  c.topic = "kv@127.0.0.1:8000@test-model";
  c.encoding = enc;
  c.data_parallel_rank = 0;
  return c;
}

std::unique_ptr<ZmqEventPublisher> make_pub(PublisherConfig c,
                                            std::shared_ptr<PublisherHub> hub = nullptr) {
  auto p = ZmqEventPublisher::create(std::move(c), std::move(hub));
  EXPECT_TRUE(p) << p.error().message;
  return p ? std::move(*p) : nullptr;
}

std::unique_ptr<ZmqEventSubscriber> make_sub(Collector& col, SubscriberConfig c = {},
                                             std::chrono::milliseconds replay_timeout = 1000ms) {
  c.replay_timeout = replay_timeout;
  auto s = ZmqEventSubscriber::create(std::move(c), col.callbacks());
  EXPECT_TRUE(s) << s.error().message;
  return s ? std::move(*s) : nullptr;
}

EngineEndpoint engine_of(const std::string& id, const ZmqEventPublisher& p) {
  return {id, p.endpoint(), p.replay_endpoint()};
}

// Publishes warm-up batches until the subscriber has received one (PUB/SUB slow joiner).
std::uint64_t warm_up(ZmqEventPublisher& p, Collector& col, const std::string& id) {
  std::uint64_t n = 0;
  wait_until([&] {
    p.publish(make_batch(n++));
    return wait_until([&] { return col.count(id) > 0; }, 20ms);
  });
  return n;
}

class EndToEnd : public ::testing::TestWithParam<Encoding> {};

TEST_P(EndToEnd, DeliversEveryBatchInOrderWithContent) {
  Collector col;
  auto pub = make_pub(local_config(true, GetParam()));
  auto sub = make_sub(col);
  ASSERT_TRUE(pub && sub);
  ASSERT_TRUE(sub->add_engine(engine_of("e0", *pub)));
  const std::uint64_t n0 = warm_up(*pub, col, "e0");
  for (std::uint64_t i = n0; i < n0 + 100; ++i) ASSERT_TRUE(pub->publish(make_batch(i)));
  ASSERT_TRUE(wait_until([&] { return col.count("e0") >= n0 + 100; }));
  EXPECT_EQ(col.seqs("e0"), iota(0, n0 + 100));
  std::lock_guard lk(col.mu);
  for (auto& d : col.got) {
    EventBatch want = make_batch(d.seq);
    want.data_parallel_rank = 0;
    EXPECT_EQ(d.batch, want) << d.seq;
  }
  EXPECT_TRUE(col.stales.empty());
}

INSTANTIATE_TEST_SUITE_P(Modes, EndToEnd, ::testing::Values(Encoding::kArray, Encoding::kMap));

class LateJoin : public ::testing::TestWithParam<ReplayFormat> {};

TEST_P(LateJoin, UsesReplayForHistory) {
  Collector col;
  auto cfg = local_config(true);
  cfg.replay_format = GetParam();
  auto pub = make_pub(cfg);
  ASSERT_TRUE(pub);
  for (std::uint64_t i = 0; i < 50; ++i) pub->publish(make_batch(i));
  ASSERT_TRUE(wait_until([&] { return pub->stats().published == 50; }));
  auto sub = make_sub(col);
  ASSERT_TRUE(sub->add_engine(engine_of("e0", *pub)));
  std::uint64_t next = 50;
  ASSERT_TRUE(wait_until([&] {
    pub->publish(make_batch(next++));
    return wait_until([&] { return col.count("e0") > 50; }, 20ms);
  }));
  ASSERT_TRUE(wait_until([&] { return col.count("e0") >= next; }));
  EXPECT_EQ(col.seqs("e0"), iota(0, next));
  EXPECT_GE(sub->stats().replayed, 50u);
  EXPECT_EQ(sub->stats().stale, 0u);
  EXPECT_GE(pub->stats().replay_requests, 1u);
}

std::string format_name(const ::testing::TestParamInfo<ReplayFormat>& info) {
  return info.param == ReplayFormat::kLegacy ? "Legacy" : "V026WithTopic";
}

INSTANTIATE_TEST_SUITE_P(ReplyShapes, LateJoin,
                         ::testing::Values(ReplayFormat::kV026WithTopic, ReplayFormat::kLegacy),
                         format_name);

// vLLM's ROUTER sends (client_id, b"", [topic,] seq8, payload): the subscriber's DEALER sees the
// empty delimiter first, then 3 (v0.26+) or 2 (older) frames. Two withheld batches are a gap that
// replay must fill exactly, in order, without a malformed reply or a stale report.
class GapReplay : public ::testing::TestWithParam<ReplayFormat> {};

TEST_P(GapReplay, TwoWithheldBatchesAreRecoveredInOrder) {
  Collector col;
  auto cfg = local_config(true);
  cfg.replay_format = GetParam();
  auto pub = make_pub(cfg);
  auto sub = make_sub(col);
  ASSERT_TRUE(pub && sub);
  ASSERT_TRUE(sub->add_engine(engine_of("e0", *pub)));
  std::uint64_t n = warm_up(*pub, col, "e0");
  ASSERT_TRUE(wait_until([&] { return col.count("e0") == n; }));
  const auto before = sub->stats();
  pub->drop_next_for_test();
  pub->drop_next_for_test();  // seqs n and n + 1 reach only the replay buffer
  for (int k = 0; k < 4; ++k) ASSERT_TRUE(pub->publish(make_batch(n++)));
  ASSERT_TRUE(wait_until([&] { return col.count("e0") >= n; }))
      << ::testing::PrintToString(col.seqs("e0")) << " n " << n;
  EXPECT_EQ(col.seqs("e0"), iota(0, n));
  const auto after = sub->stats();
  EXPECT_EQ(after.gaps - before.gaps, 1u);
  EXPECT_EQ(after.replay_requests - before.replay_requests, 1u);
  EXPECT_GE(after.replayed - before.replayed, 2u);
  EXPECT_EQ(after.malformed, 0u);
  EXPECT_EQ(after.replay_failures, 0u);
  EXPECT_EQ(after.stale, 0u);
  EXPECT_EQ(pub->stats().invalid_replay_requests, 0u);
  std::lock_guard lk(col.mu);
  EXPECT_TRUE(col.stales.empty());
  for (std::uint64_t s = n - 4; s < n - 2; ++s) {  // the withheld ones, with their content
    ASSERT_EQ(col.got[s].seq, s);
    EXPECT_EQ(std::get<BlockStored>(col.got[s].batch.events[0]).parent_block_hash, s);
  }
}

INSTANTIATE_TEST_SUITE_P(ReplyShapes, GapReplay,
                         ::testing::Values(ReplayFormat::kV026WithTopic, ReplayFormat::kLegacy),
                         format_name);

TEST(Gap, DroppedMessageIsRecoveredExactlyByReplay) {
  Collector col;
  auto pub = make_pub(local_config(true));
  auto sub = make_sub(col);
  ASSERT_TRUE(sub->add_engine(engine_of("e0", *pub)));
  std::uint64_t n = warm_up(*pub, col, "e0");
  ASSERT_TRUE(wait_until([&] { return col.count("e0") == n; }));
  const auto gaps_before = sub->stats().gaps;
  pub->drop_next_for_test();
  for (int k = 0; k < 3; ++k) pub->publish(make_batch(n++));
  ASSERT_TRUE(wait_until([&] { return col.count("e0") >= n; }));
  EXPECT_EQ(col.seqs("e0"), iota(0, n));
  EXPECT_EQ(sub->stats().gaps, gaps_before + 1);
  EXPECT_GE(sub->stats().replayed, 1u);
  EXPECT_EQ(sub->stats().stale, 0u);
  std::lock_guard lk(col.mu);
  const auto& d = col.got[n - 3];
  EXPECT_EQ(d.seq, n - 3);
  EXPECT_EQ(std::get<BlockStored>(d.batch.events[0]).parent_block_hash, n - 3);
}

TEST(Gap, WithoutReplayReportsStaleAndContinues) {
  Collector col;
  auto pub = make_pub(local_config(false));
  auto sub = make_sub(col);
  ASSERT_TRUE(sub->add_engine(engine_of("e0", *pub)));
  std::uint64_t n = warm_up(*pub, col, "e0");
  ASSERT_TRUE(wait_until([&] { return col.seqs("e0").back() == n - 1; }));
  pub->drop_next_for_test();
  n++;
  pub->publish(make_batch(n - 1));
  pub->publish(make_batch(n++));
  ASSERT_TRUE(wait_until([&] { return col.seqs("e0").back() == n - 1; }));
  EXPECT_EQ(col.stale_count(StaleReason::kGapNoReplay), 1u);
  auto s = col.seqs("e0");
  EXPECT_EQ(s[s.size() - 2], n - 3);  // n - 2 was lost
}

TEST(Restart, NewPublisherOnSamePortTriggersReset) {
  Collector col;
  auto pub = make_pub(local_config(true));
  auto sub = make_sub(col);
  const std::string ep = pub->endpoint();
  const std::string rep = pub->replay_endpoint();
  ASSERT_TRUE(sub->add_engine(engine_of("e0", *pub)));
  std::uint64_t n = warm_up(*pub, col, "e0");
  for (int k = 0; k < 10; ++k) pub->publish(make_batch(n++));
  ASSERT_TRUE(wait_until([&] { return col.count("e0") >= n; }));
  pub.reset();  // stop + close

  auto cfg = local_config(true);
  cfg.endpoint = ep;
  cfg.replay_endpoint = rep;
  cfg.attach = PublisherConfig::Attach::kBind;
  auto pub2 = make_pub(cfg);
  ASSERT_TRUE(pub2);
  std::uint64_t m = 0;
  ASSERT_TRUE(wait_until([&] {
    pub2->publish(make_batch(1000 + m++));
    return wait_until([&] { return col.reset_count() > 0; }, 20ms);
  }));
  ASSERT_TRUE(wait_until([&] { return col.count("e0") >= n + m; }));
  EXPECT_EQ(col.reset_count(), 1u);
  auto s = col.seqs("e0");
  std::vector<std::uint64_t> tail(s.begin() + static_cast<std::ptrdiff_t>(n), s.end());
  EXPECT_EQ(tail, iota(0, m));  // the new incarnation, from seq 0, completed by replay
}

TEST(SlowConsumer, KeepsOrder) {
  Collector col;
  col.sleep = 1ms;
  auto pub = make_pub(local_config(true));
  auto sub = make_sub(col);
  ASSERT_TRUE(sub->add_engine(engine_of("e0", *pub)));
  std::uint64_t n = warm_up(*pub, col, "e0");
  for (int k = 0; k < 300; ++k) pub->publish(make_batch(n++));
  ASSERT_TRUE(wait_until([&] { return col.count("e0") >= n; }));
  EXPECT_EQ(col.seqs("e0"), iota(0, n));
}

TEST(Isolation, SilentAndDeadEnginesDoNotBlockOthers) {
  Collector col;
  auto hub = PublisherHub::create();
  ASSERT_TRUE(hub);
  auto live = make_pub(local_config(true), *hub);
  auto silent = make_pub(local_config(true), *hub);
  auto stuck = make_pub(local_config(false), *hub);
  // A replay server that accepts requests and never answers.
  void* ctx = zmq_ctx_new();
  void* mute = zmq_socket(ctx, ZMQ_ROUTER);
  ASSERT_EQ(zmq_bind(mute, "tcp://127.0.0.1:*"), 0);
  char mute_ep[256];
  std::size_t len = sizeof mute_ep;
  zmq_getsockopt(mute, ZMQ_LAST_ENDPOINT, mute_ep, &len);
  std::string dead_ep;
  {
    auto tmp = make_pub(local_config(true), *hub);
    dead_ep = tmp->replay_endpoint();
  }  // closed: nothing listens there any more
  auto sub = make_sub(col, {}, 2000ms);
  ASSERT_TRUE(sub->add_engine(engine_of("silent", *silent)));
  ASSERT_TRUE(sub->add_engine({"dead", dead_ep, dead_ep}));
  ASSERT_TRUE(sub->add_engine({"stuck", stuck->endpoint(), mute_ep}));
  ASSERT_TRUE(sub->add_engine(engine_of("live", *live)));
  std::uint64_t nl = warm_up(*live, col, "live");
  // Drive "stuck" into a replay against the mute server (its first contact or a forced gap).
  std::uint64_t ns = 0;
  bool dropped = false;
  const auto requests_before = sub->stats().replay_requests;
  ASSERT_TRUE(wait_until([&] {
    if (!dropped && col.count("stuck") > 0) {
      dropped = true;
      stuck->drop_next_for_test();  // the batch published next is lost
    }
    stuck->publish(make_batch(ns++));
    return wait_until([&] { return sub->stats().replay_requests > requests_before; }, 20ms);
  })) << col.count("stuck")
      << " stales " << col.stales.size() << " "
      << (col.stales.empty() ? "" : to_string(col.stales.back().second)) << " ns " << ns;
  // While that replay waits for its 2 s timeout, another engine keeps flowing.
  const auto t0 = std::chrono::steady_clock::now();
  for (int k = 0; k < 50; ++k) live->publish(make_batch(nl++));
  ASSERT_TRUE(wait_until([&] { return col.count("live") >= nl; }));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1500ms);
  EXPECT_EQ(col.stale_count(StaleReason::kReplayTimeout), 0u);
  ASSERT_TRUE(wait_until([&] { return col.stale_count(StaleReason::kReplayTimeout) == 1; }))
      << col.stale_count(StaleReason::kReplayTimeout) << " " << col.stales.size() << " "
      << (col.stales.empty() ? "" : to_string(col.stales[0].second)) << " "
      << sub->stats().replay_requests;
  ASSERT_TRUE(wait_until([&] {
    return !col.seqs("stuck").empty() && col.seqs("stuck").back() == ns - 1;
  })) << ::testing::PrintToString(col.seqs("stuck"))
      << " ns " << ns;
  EXPECT_EQ(col.seqs("live"), iota(0, nl));
  EXPECT_EQ(col.count("silent"), 0u);
  EXPECT_EQ(col.count("dead"), 0u);
  sub.reset();
  zmq_close(mute);
  zmq_ctx_term(ctx);
}

TEST(Frames, MalformedMessagesAreCountedAndTopicFilterApplies) {
  Collector col;
  void* ctx = zmq_ctx_new();
  void* raw = zmq_socket(ctx, ZMQ_PUB);
  ASSERT_EQ(zmq_bind(raw, "tcp://127.0.0.1:*"), 0);
  char buf[256];
  std::size_t len = sizeof buf;
  zmq_getsockopt(raw, ZMQ_LAST_ENDPOINT, buf, &len);
  auto sub = make_sub(col);
  ASSERT_TRUE(sub->add_engine({"raw", buf, ""}));
  const std::string topic = "kv@x@m";
  const std::string good = encode_batch(make_batch(0), Encoding::kMap);
  // Warm up with valid messages (seq 0 repeated means "restart", so use increasing seqs).
  std::uint64_t seq = 0;
  ASSERT_TRUE(wait_until([&] {
    detail::send_frames(raw, {topic, detail::be64(seq++), good});
    return wait_until([&] { return col.count("raw") > 0; }, 20ms);
  }));
  const auto before = sub->stats();
  detail::send_frames(raw, {topic, std::string(7, '\0'), good});       // short seq frame
  detail::send_frames(raw, {topic, detail::be64(seq)});                // 2 frames
  detail::send_frames(raw, {topic, detail::be64(seq), good, "x"});     // 4 frames
  detail::send_frames(raw, {"other@topic", detail::be64(seq), good});  // filtered out
  detail::send_frames(raw, {topic, detail::be64(seq++), "\xc1"});      // undecodable payload
  const std::string int_tag("\x92\x00\x91\x91\x05", 5);  // [0, [[5]]]: event tag not a str
  detail::send_frames(raw, {topic, detail::be64(seq++), int_tag});
  detail::send_frames(raw, {topic, detail::be64(seq++), good});  // fine again
  ASSERT_TRUE(wait_until([&] { return sub->stats().received >= before.received + 6; }));
  ASSERT_TRUE(wait_until([&] { return col.seqs("raw").back() == seq - 1; }));
  const auto after = sub->stats();
  EXPECT_EQ(after.received - before.received, 6u);
  EXPECT_EQ(after.malformed - before.malformed, 5u);
  EXPECT_EQ(after.unknown_events - before.unknown_events, 0u);
  EXPECT_EQ(col.stale_count(StaleReason::kMalformedPayload), 2u);
  sub.reset();
  zmq_close(raw);
  zmq_ctx_term(ctx);
}

TEST(Engines, AddAndRemoveAtRuntimeIncludingFromCallback) {
  Collector col;
  auto hub = PublisherHub::create();
  ASSERT_TRUE(hub);
  auto a = make_pub(local_config(true), *hub);
  auto b = make_pub(local_config(true), *hub);
  std::unique_ptr<ZmqEventSubscriber> sub;
  std::atomic<bool> removed_b{false};
  SubscriberCallbacks cb = col.callbacks();
  auto inner = cb.on_batch;
  cb.on_batch = [&](const std::string& e, std::uint64_t seq, const EventBatch& batch) {
    inner(e, seq, batch);
    if (e == "a" && seq >= 5 && !removed_b.exchange(true)) {
      EXPECT_TRUE(sub->remove_engine("b"));
    }
  };
  auto s = ZmqEventSubscriber::create({}, cb);
  ASSERT_TRUE(s);
  sub = std::move(*s);
  ASSERT_TRUE(sub->add_engine(engine_of("a", *a)));
  EXPECT_FALSE(sub->add_engine(engine_of("a", *a)));  // duplicate id
  ASSERT_TRUE(sub->add_engine(engine_of("b", *b)));
  warm_up(*b, col, "b");
  std::uint64_t na = warm_up(*a, col, "a");
  for (int k = 0; k < 10; ++k) a->publish(make_batch(na++));
  ASSERT_TRUE(wait_until([&] { return col.count("a") >= na; }));
  EXPECT_TRUE(removed_b.load());
  const auto nb = col.count("b");
  for (int k = 0; k < 5; ++k) b->publish(make_batch(100 + k));
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(col.count("b"), nb);
  EXPECT_FALSE(sub->remove_engine("b"));  // already gone
  EXPECT_TRUE(sub->remove_engine("a"));
  EXPECT_TRUE(sub->add_engine(engine_of("b", *b)));  // re-added from another thread
}

TEST(Hub, ManyPublishersShareOneThread) {
  Collector col;
  auto hub = PublisherHub::create();
  ASSERT_TRUE(hub);
  std::vector<std::unique_ptr<ZmqEventPublisher>> pubs;
  auto sub = make_sub(col);
  for (int i = 0; i < 32; ++i) {
    pubs.push_back(make_pub(local_config(true), *hub));
    ASSERT_TRUE(sub->add_engine(engine_of("e" + std::to_string(i), *pubs.back())));
  }
  // Publish from several threads at once: publish() is thread-safe.
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int k = 0; k < 20; ++k)
        for (int i = t; i < 32; i += 4)
          pubs[static_cast<std::size_t>(i)]->publish(make_batch(static_cast<std::uint64_t>(k)));
    });
  for (auto& th : threads) th.join();
  // Late joiners (slow subscription) are completed by replay once one more batch arrives.
  ASSERT_TRUE(wait_until([&] {
    for (int i = 0; i < 32; ++i)
      if (col.count("e" + std::to_string(i)) < 20)
        pubs[static_cast<std::size_t>(i)]->publish(make_batch(99));
    return wait_until(
        [&] {
          for (int i = 0; i < 32; ++i)
            if (col.count("e" + std::to_string(i)) < 20) return false;
          return true;
        },
        50ms);
  }));
  for (int i = 0; i < 32; ++i) {
    auto s = col.seqs("e" + std::to_string(i));
    EXPECT_EQ(s, iota(0, s.size())) << i;
  }
}

// The publisher's ROUTER answers exactly as vLLM's: a request is [identity, "", start8] (exactly
// 3 frames at the ROUTER), replies are (identity, "", [topic,] seq8, payload) and the end marker
// (identity, "", ["",] ff x 8, ""), so a DEALER sees the delimiter first.
TEST(Replay, RouterProtocolShapes) {
  for (ReplayFormat format : {ReplayFormat::kV026WithTopic, ReplayFormat::kLegacy}) {
    SCOPED_TRACE(format == ReplayFormat::kLegacy ? "legacy" : "v0.26");
    auto cfg = local_config(true);
    cfg.replay_format = format;
    auto pub = make_pub(cfg);
    for (int i = 0; i < 5; ++i) pub->publish(make_batch(static_cast<std::uint64_t>(i)));
    ASSERT_TRUE(wait_until([&] { return pub->stats().published == 5; }));
    void* ctx = zmq_ctx_new();
    void* d = zmq_socket(ctx, ZMQ_DEALER);
    ASSERT_EQ(zmq_connect(d, pub->replay_endpoint().c_str()), 0);
    ASSERT_TRUE(detail::send_frames(d, {"", "bad"}));        // invalid: start not 8 bytes
    ASSERT_TRUE(detail::send_frames(d, {detail::be64(3)}));  // invalid: no delimiter (2 frames)
    ASSERT_TRUE(detail::send_frames(d, {"", "", detail::be64(3)}));  // invalid: 4 frames
    ASSERT_TRUE(detail::send_frames(d, {"", detail::be64(3)}));
    std::vector<std::vector<std::string>> replies;
    std::vector<std::string> frames;
    wait_until([&] {
      while (detail::recv_frames(d, frames, 8, nullptr)) replies.push_back(frames);
      return replies.size() >= 3;
    });
    ASSERT_EQ(replies.size(), 3u);
    const std::string end(8, '\xff');
    auto payload = [](std::uint64_t i) {
      auto b = make_batch(i);
      b.data_parallel_rank = 0;
      return encode_batch(b, Encoding::kArray);
    };
    using Frames = std::vector<std::string>;
    if (format == ReplayFormat::kLegacy) {
      EXPECT_EQ(replies[0], (Frames{"", detail::be64(3), payload(3)}));
      EXPECT_EQ(replies[1], (Frames{"", detail::be64(4), payload(4)}));
      EXPECT_EQ(replies[2], (Frames{"", end, ""}));
    } else {
      EXPECT_EQ(replies[0], (Frames{"", cfg.topic, detail::be64(3), payload(3)}));
      EXPECT_EQ(replies[1], (Frames{"", cfg.topic, detail::be64(4), payload(4)}));
      EXPECT_EQ(replies[2], (Frames{"", "", end, ""}));
    }
    EXPECT_EQ(pub->stats().invalid_replay_requests, 3u);
    EXPECT_EQ(pub->stats().replay_requests, 1u);
    zmq_close(d);
    zmq_ctx_term(ctx);
  }
}

// The subscriber against a hand-written vLLM replay ROUTER (not our publisher): its request is
// what vLLM's _service_replay() accepts, and it reads both generations' replies. A reply without
// the delimiter (our publisher's old, wrong shape) is malformed.
class VllmRouter : public ::testing::TestWithParam<ReplayFormat> {};

TEST_P(VllmRouter, RequestShapeAndBothReplyGenerations) {
  const bool legacy = GetParam() == ReplayFormat::kLegacy;
  Collector col;
  void* ctx = zmq_ctx_new();
  void* pub = zmq_socket(ctx, ZMQ_PUB);
  void* router = zmq_socket(ctx, ZMQ_ROUTER);
  ASSERT_EQ(zmq_bind(pub, "tcp://127.0.0.1:*"), 0);
  ASSERT_EQ(zmq_bind(router, "tcp://127.0.0.1:*"), 0);
  const int zero = 0;
  zmq_setsockopt(pub, ZMQ_LINGER, &zero, sizeof zero);
  zmq_setsockopt(router, ZMQ_LINGER, &zero, sizeof zero);
  auto last_ep = [](void* s) {
    char buf[256];
    std::size_t len = sizeof buf;
    zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, buf, &len);
    return std::string(buf);
  };
  auto sub = make_sub(col);
  ASSERT_TRUE(sub->add_engine({"vllm", last_ep(pub), last_ep(router)}));
  const std::string topic = "kv@10.0.0.5:8000@m";
  const Encoding enc = legacy ? Encoding::kArray : Encoding::kMap;
  // Live batches from seq 3 on: the first one received is a late join, replayed from 0.
  std::uint64_t seq = 3;
  std::vector<std::string> req;
  ASSERT_TRUE(wait_until([&] {
    detail::send_frames(pub, {topic, detail::be64(seq), encode_batch(make_batch(seq), enc)});
    ++seq;
    zmq_pollitem_t item{router, 0, ZMQ_POLLIN, 0};
    return zmq_poll(&item, 1, 20) == 1 && detail::recv_frames(router, req, 8, nullptr);
  }));
  // vLLM: `if len(frame) != 3: "Invalid replay request"`; `client_id, _, start_seq_bytes = frame`.
  ASSERT_EQ(req.size(), 3u);
  EXPECT_EQ(req[1], "");
  EXPECT_EQ(req[2], detail::be64(0));
  const std::string& id = req[0];
  auto payload = [&](std::uint64_t i) { return encode_batch(make_batch(i), enc); };
  // Delimiter-less reply: malformed, ignored.
  ASSERT_TRUE(legacy ? detail::send_frames(router, {id, detail::be64(0), payload(0)})
                     : detail::send_frames(router, {id, topic, detail::be64(0), payload(0)}));
  for (std::uint64_t i = 0; i < seq; ++i) {
    ASSERT_TRUE(legacy ? detail::send_frames(router, {id, "", detail::be64(i), payload(i)})
                       : detail::send_frames(router, {id, "", topic, detail::be64(i), payload(i)}));
  }
  const std::string end(8, '\xff');
  ASSERT_TRUE(legacy ? detail::send_frames(router, {id, "", end, ""})
                     : detail::send_frames(router, {id, "", "", end, ""}));
  ASSERT_TRUE(wait_until([&] { return col.count("vllm") >= seq; }))
      << ::testing::PrintToString(col.seqs("vllm")) << " seq " << seq;
  EXPECT_EQ(col.seqs("vllm"), iota(0, seq));
  const auto st = sub->stats();
  EXPECT_EQ(st.malformed, 1u);
  EXPECT_EQ(st.replay_requests, 1u);
  EXPECT_EQ(st.replay_failures, 0u);
  EXPECT_EQ(st.stale, 0u);
  EXPECT_GE(st.replayed, 3u);
  sub.reset();
  zmq_close(pub);
  zmq_close(router);
  zmq_ctx_term(ctx);
}

INSTANTIATE_TEST_SUITE_P(ReplyShapes, VllmRouter,
                         ::testing::Values(ReplayFormat::kV026WithTopic, ReplayFormat::kLegacy),
                         format_name);

TEST(Endpoints, OffsetPortAndQueueBound) {
  EXPECT_EQ(offset_endpoint_port("tcp://*:5557", 1), "tcp://*:5558");
  EXPECT_EQ(offset_endpoint_port("tcp://[::1]:5557", 2), "tcp://[::1]:5559");
  EXPECT_EQ(offset_endpoint_port("inproc://kv", 3), "inproc://kv_dp3");
  EXPECT_EQ(offset_endpoint_port("tcp://*:5557", 0), "tcp://*:5557");
  EXPECT_EQ(offset_endpoint_port("tcp://127.0.0.1:*", 1), "tcp://127.0.0.1:*");
  EXPECT_FALSE(ZmqEventPublisher::create([] {
    PublisherConfig c;
    c.endpoint = "bogus://x";
    return c;
  }()));
  auto pub = make_pub(local_config(false));
  pub->stop();
  EXPECT_FALSE(pub->publish(make_batch(0)));
}

}  // namespace
}  // namespace kvroute::kv_events
