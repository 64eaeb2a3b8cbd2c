// File: kv_events/subscriber.h
//
// ZmqEventSubscriber: the router's receiver of vLLM KV events (the PUB framing and replay protocol
// of vLLM's ZmqEventPublisher, vllm/distributed/kv_events.py; the recovery rules: docs/adr/0162).
// One SUB socket per engine endpoint (connect; ZMQ reconnects on its own), a topic-prefix filter,
// per-engine sequence tracking, and recovery through the engine's replay ROUTER:
//   - first message with seq > 0 (late join) or a gap (seq > last + 1): request replay from the
//     first missing seq on a DEALER; live messages are held meanwhile and delivered after the
//     replayed ones, duplicates skipped, so on_batch sees seq strictly increasing per engine.
//     The request is ["", start_seq8] (vLLM's ROUTER wants [identity, "", start]). Replies start
//     with the empty delimiter, then v0.26+ [topic, seq8, payload] or older [seq8, payload] (told
//     apart by frame count; vLLM PR #45177 added the topic frame); any other reply is malformed.
//   - no replay endpoint, replay timeout, or a hole the replay buffer could not fill: on_stale.
//   - seq going backwards or repeating (publisher restart): on_reset, then deliveries resume.
//   - malformed messages (frame count, replay reply without the delimiter, seq frame < 8 bytes,
//     undecodable payload) are counted; an undecodable payload whose seq was valid also reports
//     on_stale (events were lost).
// All engines share one thread (zmq_poll); a silent or dead engine never blocks the others, and a
// replay wait is asynchronous. Engines can be added and removed at runtime.
//
// Thread-safety: add_engine/remove_engine/stats/stop may be called from any thread, including from
// inside a callback. Callbacks run on the subscriber's thread, one at a time, ordered per engine;
// a slow callback delays everything (messages queue in ZMQ up to rcvhwm, then gaps -> replay).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/result.h"
#include "kv_events/event.h"

namespace kvroute::kv_events {

struct SubscriberConfig {
  std::string topic_filter = "kv@";  // SUB prefix filter; "" receives every topic
  std::chrono::milliseconds replay_timeout{2000};
  int rcvhwm = 100000;
  std::int64_t max_message_bytes = 64
                                   << 20;  // larger messages drop the connection (ZMQ_MAXMSGSIZE)
  std::size_t max_held_during_replay = 100000;  // live messages held while a replay runs
};

struct EngineEndpoint {
  std::string engine_id;        // the router's key, e.g. "10.0.0.5:8000/dp0"
  std::string endpoint;         // the engine's PUB, e.g. "tcp://10.0.0.5:5556"
  std::string replay_endpoint;  // its ROUTER, "" = none
};

enum class StaleReason {
  kLateJoinNoReplay,   // first seq > 0 and no replay endpoint
  kGapNoReplay,        // seq skipped and no replay endpoint
  kReplayTimeout,      // no end marker within replay_timeout
  kReplayUnavailable,  // the replay request could not be sent (no connection)
  kReplayIncomplete,   // the replay buffer no longer held the missing batches
  kMalformedPayload,   // a batch with a valid seq could not be decoded
  kOverflow,           // too many live messages held during a replay
};
std::string_view to_string(StaleReason r);

struct SubscriberCallbacks {
  // A decoded batch, in seq order per engine (replayed ones included).
  std::function<void(const std::string& engine_id, std::uint64_t seq, const EventBatch& batch)>
      on_batch;
  // The publisher restarted: drop everything known about this engine (as for AllBlocksCleared).
  std::function<void(const std::string& engine_id)> on_reset;
  // Events were lost and could not be recovered: the engine's index entries are suspect.
  std::function<void(const std::string& engine_id, StaleReason reason)> on_stale;
};

struct SubscriberStats {
  std::uint64_t received = 0;        // live messages
  std::uint64_t decoded = 0;         // batches delivered to on_batch (live + replayed)
  std::uint64_t malformed = 0;       // bad frames or undecodable payloads (live or replay)
  std::uint64_t unknown_events = 0;  // events with unknown tags, skipped
  std::uint64_t gaps = 0;            // gaps detected (late joins included)
  std::uint64_t replay_requests = 0;
  std::uint64_t replayed = 0;         // batches delivered from replay replies
  std::uint64_t replay_failures = 0;  // timeouts and incomplete replays
  std::uint64_t resets = 0;
  std::uint64_t stale = 0;  // on_stale calls
};

class ZmqEventSubscriber {
 public:
  static Result<std::unique_ptr<ZmqEventSubscriber>> create(SubscriberConfig config,
                                                            SubscriberCallbacks callbacks);
  ~ZmqEventSubscriber();  // stop()
  ZmqEventSubscriber(const ZmqEventSubscriber&) = delete;
  ZmqEventSubscriber& operator=(const ZmqEventSubscriber&) = delete;

  // Connects to the engine (errors for a bad endpoint or a duplicate id). Safe from any thread.
  Status add_engine(EngineEndpoint engine);
  // No callback for this engine starts after it returns (unless called from another engine's
  // callback on the subscriber thread, where it takes effect before the next message).
  Status remove_engine(std::string_view engine_id);

  [[nodiscard]] SubscriberStats stats() const;

  // Joins the thread and closes all sockets; idempotent. Must not be called from a callback.
  void stop();

  struct Impl;

 private:
  explicit ZmqEventSubscriber(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvroute::kv_events
