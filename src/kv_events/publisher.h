// File: kv_events/publisher.h
//
// ZmqEventPublisher: vLLM's ZmqEventPublisher (vllm/distributed/kv_events.py) in C++, for the
// engine simulator. A PUB socket sends [topic, seq (8 bytes BE, from 0), msgpack EventBatch]; the
// last `buffer_steps` batches are kept for replay, served by an optional ROUTER socket. A request
// is exactly [identity, "", start_seq8] (anything else is ignored and counted, as vLLM logs
// "Invalid replay request"); the replies are what vLLM's ROUTER sends, selected by `replay_format`:
//   kV026WithTopic (PR #45177, v0.26+): [identity, "", topic, seq8, payload] for every buffered
//     batch with seq >= start, then the end marker [identity, "", "", ff x 8, ""];
//   kLegacy (before it): [identity, "", seq8, payload], then [identity, "", ff x 8, ""].
// A DEALER client thus receives ["", topic, seq8, payload] / ["", seq8, payload].
//
// PublisherHub: one zmq context and one I/O thread (zmq_poll) serving any number of publishers; the
// simulator creates one hub and passes it to its 32 engines' publishers (docs/adr/0161).
//
// Thread-safety: publish(), stats() and stop() may be called from any thread. publish() encodes on
// the caller's thread and never blocks on the network: it enqueues into a bounded queue (a full
// queue drops the batch, counted) that the hub's I/O thread drains. The sockets are owned by the
// I/O thread. PublisherHub is internally synchronized.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "common/result.h"
#include "kv_events/codec.h"
#include "kv_events/event.h"

namespace kvroute::kv_events {

class PublisherHub;
struct PublisherChannel;  // internal

// The replay reply shape of a vLLM generation (the replies of ZmqEventPublisher's replay ROUTER).
enum class ReplayFormat {
  kV026WithTopic,  // v0.26+ (PR #45177): the topic frame before seq8
  kLegacy,         // before PR #45177 (and SGLang): no topic frame
};

struct PublisherConfig {
  std::string endpoint = "tcp://*:5557";  // PUB; "tcp://127.0.0.1:*" picks a free port
  std::string replay_endpoint;            // ROUTER, always bound; "" = no replay
  std::string topic;                      // frame 0; llm-d expects "kv@<ip>:<port>@<model>"
  std::size_t buffer_steps = 10000;       // batches kept for replay
  int hwm = 100000;                       // PUB send high-water mark
  std::size_t max_queue_size = 100000;    // batches waiting for the I/O thread
  Encoding encoding = Encoding::kArray;
  ReplayFormat replay_format = ReplayFormat::kV026WithTopic;
  // Filled into batches whose data_parallel_rank is unset, as vLLM's publish() does.
  std::optional<std::int64_t> data_parallel_rank;
  // vLLM's rule (kAuto): bind when the endpoint contains '*' or "::" or is ipc:// or inproc://,
  // else connect (centralized mode). kBind/kConnect override it (tests rebinding a fixed port).
  enum class Attach { kAuto, kBind, kConnect };
  Attach attach = Attach::kAuto;
};

struct PublisherStats {
  std::uint64_t published = 0;           // batches handed to the PUB socket (seq assigned)
  std::uint64_t dropped_queue_full = 0;  // batches refused by publish()
  std::uint64_t replay_requests = 0;
  std::uint64_t replayed = 0;  // batches sent in replay replies
  std::uint64_t invalid_replay_requests = 0;
};

// vLLM's offset_endpoint_port(): a TCP port + rank ("tcp://*:5557", 1 -> "tcp://*:5558"); inproc
// endpoints get "_dp<rank>"; anything else (or a '*' port) is returned unchanged.
std::string offset_endpoint_port(const std::string& endpoint, std::int64_t rank);

class PublisherHub {
 public:
  // Starts the I/O thread. Fails if the zmq context or the eventfd cannot be created.
  static Result<std::shared_ptr<PublisherHub>> create();
  ~PublisherHub();  // joins the I/O thread; publishers keep their hub alive
  PublisherHub(const PublisherHub&) = delete;
  PublisherHub& operator=(const PublisherHub&) = delete;

  struct Impl;

 private:
  explicit PublisherHub(std::unique_ptr<Impl> impl);
  friend class ZmqEventPublisher;
  std::unique_ptr<Impl> impl_;
};

class ZmqEventPublisher {
 public:
  // Creates and binds/connects the sockets on the calling thread (so errors and the resolved
  // endpoints are known at once) and hands them to `hub` (a private hub when null).
  static Result<std::unique_ptr<ZmqEventPublisher>> create(
      PublisherConfig config, std::shared_ptr<PublisherHub> hub = nullptr);
  ~ZmqEventPublisher();  // stop()
  ZmqEventPublisher(const ZmqEventPublisher&) = delete;
  ZmqEventPublisher& operator=(const ZmqEventPublisher&) = delete;

  // Thread-safe, non-blocking. False when stopped or the queue is full (dropped, counted).
  bool publish(const EventBatch& batch);

  // Resolved endpoints (ZMQ_LAST_ENDPOINT when bound, e.g. "tcp://127.0.0.1:40123").
  [[nodiscard]] const std::string& endpoint() const { return endpoint_; }
  [[nodiscard]] const std::string& replay_endpoint() const { return replay_endpoint_; }
  [[nodiscard]] PublisherStats stats() const;

  // Sends what is queued, closes the sockets (bounded wait, idempotent). publish() then fails.
  void stop();

  // Test hook: the next published batch gets its seq and enters the replay buffer but is not
  // sent on the PUB socket, as if the network lost it.
  void drop_next_for_test();

 private:
  ZmqEventPublisher() = default;
  std::shared_ptr<PublisherHub> hub_;
  std::shared_ptr<PublisherChannel> channel_;
  std::string endpoint_;
  std::string replay_endpoint_;
};

}  // namespace kvroute::kv_events
