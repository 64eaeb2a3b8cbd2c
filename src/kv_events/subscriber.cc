// File: kv_events/subscriber.cc
#include "kv_events/subscriber.h"

#include <zmq.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "common/mutex.h"
#include "kv_events/codec.h"
#include "kv_events/internal/zmq_util.h"

namespace kvroute::kv_events {

using detail::Socket;
using Clock = std::chrono::steady_clock;

namespace {
constexpr int kBurst = 256;  // live messages per engine per poll round (fairness)
constexpr auto kOpWait = std::chrono::seconds(5);
const std::string kEndSeq(8, '\xff');
constexpr std::size_t kMaxReplayFrames = 4;  // ["", topic, seq8, payload]
}  // namespace

std::string_view to_string(StaleReason r) {
  switch (r) {
    case StaleReason::kLateJoinNoReplay:
      return "late_join_no_replay";
    case StaleReason::kGapNoReplay:
      return "gap_no_replay";
    case StaleReason::kReplayTimeout:
      return "replay_timeout";
    case StaleReason::kReplayUnavailable:
      return "replay_unavailable";
    case StaleReason::kReplayIncomplete:
      return "replay_incomplete";
    case StaleReason::kMalformedPayload:
      return "malformed_payload";
    case StaleReason::kOverflow:
      return "overflow";
  }
  return "unknown";
}

namespace {

struct Engine {
  EngineEndpoint ep;
  Socket sub;
  Socket dealer;
  bool removed = false;
  bool have_seq = false;
  std::uint64_t last = 0;  // last delivered (or consumed) seq
  // Replay in progress:
  bool replaying = false;
  bool hole_reported = false;
  std::uint64_t expect = 0;     // next seq wanted
  std::uint64_t live_last = 0;  // newest live seq held
  Clock::time_point deadline;
  std::deque<std::pair<std::uint64_t, std::string>> held;
};

}  // namespace

struct ZmqEventSubscriber::Impl {
  SubscriberConfig cfg;
  SubscriberCallbacks cb;
  void* ctx = nullptr;
  detail::Wakeup wake;
  std::thread thread;
  std::atomic<std::thread::id> thread_id{};

  Mutex mu;
  CondVar cv;
  std::vector<std::unique_ptr<Engine>> to_add GUARDED_BY(mu);
  std::vector<std::string> to_remove GUARDED_BY(mu);
  std::set<std::string, std::less<>> ids GUARDED_BY(mu);  // engines added and not removed
  std::uint64_t ops_requested GUARDED_BY(mu) = 0;
  std::uint64_t ops_done GUARDED_BY(mu) = 0;
  bool stopping GUARDED_BY(mu) = false;
  bool stopped GUARDED_BY(mu) = false;

  std::vector<std::unique_ptr<Engine>> engines;  // subscriber thread only

  std::atomic<std::uint64_t> received{0}, decoded{0}, malformed{0}, unknown_events{0}, gaps{0},
      replay_requests{0}, replayed{0}, replay_failures{0}, resets{0}, stale{0};

  Result<Socket> make_socket(int type, const std::string& endpoint) {
    Socket s(zmq_socket(ctx, type));
    if (!s) return fail(Error::io(detail::zmq_error("zmq_socket")));
    const int zero = 0;
    zmq_setsockopt(s.get(), ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s.get(), ZMQ_RCVHWM, &cfg.rcvhwm, sizeof cfg.rcvhwm);
    zmq_setsockopt(s.get(), ZMQ_MAXMSGSIZE, &cfg.max_message_bytes, sizeof cfg.max_message_bytes);
    if (type == ZMQ_SUB && zmq_setsockopt(s.get(), ZMQ_SUBSCRIBE, cfg.topic_filter.data(),
                                          cfg.topic_filter.size()) != 0)
      return fail(Error::io(detail::zmq_error("subscribe")));
    if (zmq_connect(s.get(), endpoint.c_str()) != 0)
      return fail(Error::invalid(detail::zmq_error("connect " + endpoint)));
    return s;
  }

  void report_stale(Engine& e, StaleReason r) {
    stale.fetch_add(1, std::memory_order_relaxed);
    if (cb.on_stale) cb.on_stale(e.ep.engine_id, r);
  }

  void deliver(Engine& e, std::uint64_t seq, std::string_view payload, bool from_replay) {
    e.have_seq = true;
    e.last = seq;
    DecodedBatch d;
    if (decode_batch_into(payload, d) != nullptr) {
      malformed.fetch_add(1, std::memory_order_relaxed);
      report_stale(e, StaleReason::kMalformedPayload);
      return;
    }
    unknown_events.fetch_add(d.stats.unknown_events, std::memory_order_relaxed);
    decoded.fetch_add(1, std::memory_order_relaxed);
    if (from_replay) replayed.fetch_add(1, std::memory_order_relaxed);
    if (cb.on_batch) cb.on_batch(e.ep.engine_id, seq, d.batch);
  }

  // Missing [from, seq): replay them when possible; `seq`/`payload` is the live message that
  // revealed the gap.
  void begin_gap(Engine& e, std::uint64_t from, std::uint64_t seq, std::string&& payload,
                 bool late) {
    gaps.fetch_add(1, std::memory_order_relaxed);
    if (e.dealer && detail::send_frames(e.dealer.get(), {"", detail::be64(from)})) {
      replay_requests.fetch_add(1, std::memory_order_relaxed);
      e.replaying = true;
      e.hole_reported = false;
      e.expect = from;
      e.live_last = seq;
      e.deadline = Clock::now() + cfg.replay_timeout;
      e.held.clear();
      e.held.emplace_back(seq, std::move(payload));
      return;
    }
    if (e.dealer) {
      replay_failures.fetch_add(1, std::memory_order_relaxed);
      report_stale(e, StaleReason::kReplayUnavailable);
    } else {
      report_stale(e, late ? StaleReason::kLateJoinNoReplay : StaleReason::kGapNoReplay);
    }
    if (!e.removed) deliver(e, seq, payload, false);
  }

  // Ends a replay: delivers the held live messages not already replayed.
  void finish_replay(Engine& e) {
    e.replaying = false;
    auto held = std::move(e.held);
    e.held.clear();
    for (auto& [s, p] : held) {
      if (e.removed) return;
      if (s < e.expect) continue;  // already delivered from the replay
      if (s > e.expect && !e.hole_reported) {
        e.hole_reported = true;
        replay_failures.fetch_add(1, std::memory_order_relaxed);
        report_stale(e, StaleReason::kReplayIncomplete);
        if (e.removed) return;
      }
      deliver(e, s, p, false);
      e.expect = s + 1;
    }
  }

  void abort_replay(Engine& e) {
    e.replaying = false;
    e.held.clear();
    reset_dealer(e);
  }

  // A fresh DEALER drops replies that are still in flight for an abandoned request.
  void reset_dealer(Engine& e) {
    e.dealer.reset();
    if (auto s = make_socket(ZMQ_DEALER, e.ep.replay_endpoint)) e.dealer = std::move(*s);
  }

  void on_live(Engine& e, std::vector<std::string>& frames, bool truncated) {
    received.fetch_add(1, std::memory_order_relaxed);
    if (truncated || frames.size() != 3 || frames[1].size() < 8) {
      malformed.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    const std::uint64_t seq = detail::read_be64(frames[1]);
    std::string& payload = frames[2];
    if (e.replaying) {
      if (seq <= e.live_last) {  // restart while replaying
        abort_replay(e);
        e.have_seq = true;
        e.last = e.live_last;
      } else if (e.held.size() >= cfg.max_held_during_replay) {
        replay_failures.fetch_add(1, std::memory_order_relaxed);
        report_stale(e, StaleReason::kOverflow);
        e.hole_reported = true;
        abort_replay_keep_held(e);
        if (e.removed) return;
      } else {
        e.live_last = seq;
        e.held.emplace_back(seq, std::move(payload));
        return;
      }
    }
    if (!e.have_seq) {
      if (seq == 0) return deliver(e, seq, payload, false);
      return begin_gap(e, 0, seq, std::move(payload), true);
    }
    if (seq <= e.last) {
      resets.fetch_add(1, std::memory_order_relaxed);
      if (cb.on_reset) cb.on_reset(e.ep.engine_id);
      if (e.removed) return;
      if (seq == 0) return deliver(e, seq, payload, false);
      return begin_gap(e, 0, seq, std::move(payload), true);
    }
    if (seq == e.last + 1) return deliver(e, seq, payload, false);
    begin_gap(e, e.last + 1, seq, std::move(payload), false);
  }

  void abort_replay_keep_held(Engine& e) {
    reset_dealer(e);
    finish_replay(e);
  }

  void on_replay_reply(Engine& e, std::vector<std::string>& frames, bool truncated) {
    if (!e.replaying) return;  // stray reply of an abandoned request
    // vLLM's ROUTER sends (client_id, b"", ...), so every reply starts with the empty delimiter;
    // the frames after it tell the generations apart:
    //   3: v0.26+ [topic, seq8, payload] / ["", ff*8, ""];  2: older [seq8, payload] / [ff*8, ""].
    std::string_view seq8;
    std::string_view payload;
    if (truncated || frames.empty() || !frames[0].empty()) {
      malformed.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (frames.size() == 4) {
      seq8 = frames[2];
      payload = frames[3];
    } else if (frames.size() == 3) {
      seq8 = frames[1];
      payload = frames[2];
    } else {
      malformed.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (seq8.size() < 8) {
      malformed.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (seq8.substr(0, 8) == kEndSeq) return finish_replay(e);
    const std::uint64_t seq = detail::read_be64(seq8);
    if (seq < e.expect) return;
    if (seq > e.expect && !e.hole_reported) {
      e.hole_reported = true;
      replay_failures.fetch_add(1, std::memory_order_relaxed);
      report_stale(e, StaleReason::kReplayIncomplete);
      if (e.removed) return;
    }
    deliver(e, seq, payload, true);
    e.expect = seq + 1;
  }

  // Applies queued add/remove operations; returns false when stopping.
  bool apply_ops() {
    MutexLock lk(mu);
    for (auto& e : to_add) engines.push_back(std::move(e));
    to_add.clear();
    for (const auto& id : to_remove)
      for (auto& e : engines)
        if (e->ep.engine_id == id) e->removed = true;
    to_remove.clear();
    std::erase_if(engines, [](const auto& e) { return e->removed; });
    ops_done = ops_requested;
    cv.notify_all();
    return !stopping;
  }

  void run() {
    thread_id.store(std::this_thread::get_id());
    struct Slot {
      Engine* e;
      bool dealer;
    };
    std::vector<zmq_pollitem_t> items;
    std::vector<Slot> slots;
    std::vector<std::string> frames;
    while (apply_ops()) {
      items.clear();
      slots.clear();
      items.push_back(zmq_pollitem_t{nullptr, wake.fd(), ZMQ_POLLIN, 0});
      auto next = Clock::now() + std::chrono::seconds(1);
      for (auto& e : engines) {
        items.push_back(zmq_pollitem_t{e->sub.get(), 0, ZMQ_POLLIN, 0});
        slots.push_back({e.get(), false});
        if (e->dealer) {
          items.push_back(zmq_pollitem_t{e->dealer.get(), 0, ZMQ_POLLIN, 0});
          slots.push_back({e.get(), true});
        }
        if (e->replaying) next = std::min(next, e->deadline);
      }
      const auto wait_ms =
          std::chrono::ceil<std::chrono::milliseconds>(next - Clock::now()).count();
      const int rc = zmq_poll(items.data(), static_cast<int>(items.size()),
                              std::max<long>(0, static_cast<long>(wait_ms)));
      if (rc < 0 && zmq_errno() == ETERM) break;
      if (items[0].revents & ZMQ_POLLIN) wake.drain();
      for (std::size_t i = 0; i < slots.size(); ++i) {
        Engine& e = *slots[i].e;
        if (e.removed || !(items[i + 1].revents & ZMQ_POLLIN)) continue;
        bool truncated = false;
        if (!slots[i].dealer) {
          for (int k = 0; k < kBurst && !e.removed; ++k) {
            if (!detail::recv_frames(e.sub.get(), frames, 3, &truncated)) break;
            on_live(e, frames, truncated);
          }
        } else {
          void* d = e.dealer.get();
          // Drain the replay fully: it is bounded by the publisher's buffer.
          while (!e.removed && e.dealer.get() == d &&
                 detail::recv_frames(d, frames, kMaxReplayFrames, &truncated))
            on_replay_reply(e, frames, truncated);
        }
      }
      const auto now = Clock::now();
      for (auto& e : engines) {
        if (e->removed || !e->replaying || now < e->deadline) continue;
        replay_failures.fetch_add(1, std::memory_order_relaxed);
        e->hole_reported = true;
        report_stale(*e, StaleReason::kReplayTimeout);
        if (e->removed) continue;
        abort_replay_keep_held(*e);
      }
    }
    engines.clear();  // closes the sockets on their thread
  }
};

ZmqEventSubscriber::ZmqEventSubscriber(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<ZmqEventSubscriber>> ZmqEventSubscriber::create(
    SubscriberConfig config, SubscriberCallbacks callbacks) {
  auto impl = std::make_unique<Impl>();
  if (!impl->wake.ok()) return fail(Error::internal("eventfd failed"));
  impl->cfg = std::move(config);
  impl->cb = std::move(callbacks);
  impl->ctx = zmq_ctx_new();
  if (impl->ctx == nullptr) return fail(Error::internal(detail::zmq_error("zmq_ctx_new")));
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->run(); });
  return std::unique_ptr<ZmqEventSubscriber>(new ZmqEventSubscriber(std::move(impl)));
}

ZmqEventSubscriber::~ZmqEventSubscriber() { stop(); }

Status ZmqEventSubscriber::add_engine(EngineEndpoint engine) {
  auto& m = *impl_;
  auto e = std::make_unique<Engine>();
  KVROUTE_TRY(e->sub, m.make_socket(ZMQ_SUB, engine.endpoint));
  if (!engine.replay_endpoint.empty()) {
    KVROUTE_TRY(e->dealer, m.make_socket(ZMQ_DEALER, engine.replay_endpoint));
  }
  e->ep = std::move(engine);
  {
    MutexLock lk(m.mu);
    if (m.stopping) return fail(Error::unavailable("subscriber stopped"));
    if (!m.ids.insert(e->ep.engine_id).second)
      return fail(Error::invalid("duplicate engine id " + e->ep.engine_id));
    m.to_add.push_back(std::move(e));
    ++m.ops_requested;
  }
  m.wake.signal();
  return {};
}

Status ZmqEventSubscriber::remove_engine(std::string_view engine_id) {
  auto& m = *impl_;
  MutexLock lk(m.mu);
  auto it = m.ids.find(engine_id);
  if (it == m.ids.end()) return fail(Error::not_found("unknown engine " + std::string(engine_id)));
  m.ids.erase(it);
  m.to_remove.emplace_back(engine_id);
  const std::uint64_t ticket = ++m.ops_requested;
  if (std::this_thread::get_id() == m.thread_id.load()) {
    // Inside a callback: mark it now so no further callback starts for it.
    for (auto& e : m.engines)
      if (e->ep.engine_id == engine_id) e->removed = true;
    return {};
  }
  lk.unlock();
  m.wake.signal();
  lk.lock();
  const auto deadline = std::chrono::steady_clock::now() + kOpWait;
  while (m.ops_done < ticket && !m.stopped) {
    if (!m.cv.wait_until(m.mu, deadline) && m.ops_done < ticket && !m.stopped) {
      return fail(Error::timeout("remove_engine: subscriber thread did not answer"));
    }
  }
  return {};
}

SubscriberStats ZmqEventSubscriber::stats() const {
  const auto& m = *impl_;
  constexpr auto r = std::memory_order_relaxed;
  SubscriberStats s;
  s.received = m.received.load(r);
  s.decoded = m.decoded.load(r);
  s.malformed = m.malformed.load(r);
  s.unknown_events = m.unknown_events.load(r);
  s.gaps = m.gaps.load(r);
  s.replay_requests = m.replay_requests.load(r);
  s.replayed = m.replayed.load(r);
  s.replay_failures = m.replay_failures.load(r);
  s.resets = m.resets.load(r);
  s.stale = m.stale.load(r);
  return s;
}

void ZmqEventSubscriber::stop() {
  auto& m = *impl_;
  {
    MutexLock lk(m.mu);
    if (m.stopped) return;
    m.stopping = true;
  }
  m.wake.signal();
  if (m.thread.joinable()) m.thread.join();
  {
    MutexLock lk(m.mu);
    m.to_add.clear();
    m.stopped = true;
  }
  m.cv.notify_all();
  zmq_ctx_term(m.ctx);
}

}  // namespace kvroute::kv_events
