// File: kv_events/publisher.cc
#include "kv_events/publisher.h"

#include <zmq.h>

#include <chrono>
#include <deque>
#include <thread>
#include <utility>
#include <vector>

#include "common/mutex.h"
#include "kv_events/internal/zmq_util.h"

namespace kvroute::kv_events {

using detail::Socket;

namespace {
constexpr int kLingerMs = 500;
constexpr auto kStopWait = std::chrono::seconds(5);
const std::string kEndSeq(8, '\xff');
}  // namespace

// State of one publisher. `mu` guards the fields marked GUARDED_BY(mu); the rest belong to the I/O
// thread once the channel is registered.
struct PublisherChannel {
  PublisherConfig cfg;
  Socket pub;
  Socket router;

  Mutex mu;
  CondVar cv;
  struct Queued {
    std::string payload;  // encoded
    bool drop = false;    // drop_next_for_test(): replay buffer only, never on the PUB socket
  };
  std::deque<Queued> queue GUARDED_BY(mu);
  bool closing GUARDED_BY(mu) = false;
  bool closed GUARDED_BY(mu) = false;

  std::uint64_t next_seq = 0;
  std::deque<std::pair<std::uint64_t, std::string>> ring;
  std::atomic<int> drop_next{0};

  std::atomic<std::uint64_t> published{0}, dropped{0}, replay_requests{0}, replayed{0},
      invalid_replay{0};
};

struct PublisherHub::Impl {
  void* ctx = nullptr;
  detail::Wakeup wake;
  std::thread thread;
  Mutex mu;
  std::vector<std::shared_ptr<PublisherChannel>> channels GUARDED_BY(mu);
  bool stopping GUARDED_BY(mu) = false;

  void add(std::shared_ptr<PublisherChannel> ch) {
    {
      MutexLock lk(mu);
      channels.push_back(std::move(ch));
    }
    wake.signal();
  }

  void run();
  static void flush(PublisherChannel& ch);
  static void serve_replay(PublisherChannel& ch);
};

void PublisherHub::Impl::flush(PublisherChannel& ch) {
  std::deque<PublisherChannel::Queued> batch;
  {
    MutexLock lk(ch.mu);
    batch.swap(ch.queue);
  }
  for (auto& [payload, drop] : batch) {
    const std::uint64_t seq = ch.next_seq++;
    const std::string seq8 = detail::be64(seq);
    if (!drop) {
      // PUB never blocks: at the HWM or without peers libzmq drops, as vLLM's PUB does.
      detail::send_frames(ch.pub.get(), {ch.cfg.topic, seq8, payload});
    }
    ch.published.fetch_add(1, std::memory_order_relaxed);
    if (ch.router && ch.cfg.buffer_steps > 0) {
      if (ch.ring.size() >= ch.cfg.buffer_steps) ch.ring.pop_front();
      ch.ring.emplace_back(seq, std::move(payload));
    }
  }
}

void PublisherHub::Impl::serve_replay(PublisherChannel& ch) {
  std::vector<std::string> frames;
  bool truncated = false;
  for (int budget = 64; budget > 0 && detail::recv_frames(ch.router.get(), frames, 4, &truncated);
       --budget) {
    // vLLM ignores anything but exactly [identity, delimiter, start] ("Invalid replay request");
    // we also insist on the empty delimiter and an 8-byte start.
    if (truncated || frames.size() != 3 || !frames[1].empty() || frames[2].size() != 8) {
      ch.invalid_replay.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    ch.replay_requests.fetch_add(1, std::memory_order_relaxed);
    const std::string& id = frames[0];
    const std::uint64_t start = detail::read_be64(frames[2]);
    // As vLLM: (client_id, b"", [topic,] seq8, payload); the ROUTER strips client_id, so a DEALER
    // gets the empty delimiter first.
    const bool legacy = ch.cfg.replay_format == ReplayFormat::kLegacy;
    for (const auto& [seq, payload] : ch.ring) {
      if (seq < start) continue;
      const std::string seq8 = detail::be64(seq);
      const bool sent =
          legacy ? detail::send_frames(ch.router.get(), {id, "", seq8, payload})
                 : detail::send_frames(ch.router.get(), {id, "", ch.cfg.topic, seq8, payload});
      if (sent) ch.replayed.fetch_add(1, std::memory_order_relaxed);
    }
    if (legacy) {
      detail::send_frames(ch.router.get(), {id, "", kEndSeq, ""});
    } else {
      detail::send_frames(ch.router.get(), {id, "", "", kEndSeq, ""});
    }
  }
}

void PublisherHub::Impl::run() {
  std::vector<std::shared_ptr<PublisherChannel>> local;
  std::vector<zmq_pollitem_t> items;
  for (;;) {
    bool stop_now;
    {
      MutexLock lk(mu);
      local = channels;
      stop_now = stopping;
    }
    // Send what is queued; close channels that asked to stop.
    for (auto& ch : local) {
      flush(*ch);
      bool closing;
      {
        MutexLock lk(ch->mu);
        closing = ch->closing;
      }
      if (closing || stop_now) {
        flush(*ch);  // anything enqueued meanwhile was refused after `closing`; this is final
        ch->pub.reset();
        ch->router.reset();
        ch->ring.clear();
        {
          MutexLock lk(ch->mu);
          ch->closed = true;
        }
        ch->cv.notify_all();
        MutexLock lk(mu);
        std::erase(channels, ch);
      }
    }
    if (stop_now) return;
    {
      MutexLock lk(mu);
      local = channels;
    }
    items.clear();
    items.push_back(zmq_pollitem_t{nullptr, wake.fd(), ZMQ_POLLIN, 0});
    for (auto& ch : local)
      if (ch->router) items.push_back(zmq_pollitem_t{ch->router.get(), 0, ZMQ_POLLIN, 0});
    const int rc = zmq_poll(items.data(), static_cast<int>(items.size()), 1000);
    if (rc < 0 && zmq_errno() == ETERM) return;
    if (items[0].revents & ZMQ_POLLIN) wake.drain();
    std::size_t k = 1;
    for (auto& ch : local) {
      if (!ch->router) continue;
      if (items[k++].revents & ZMQ_POLLIN) {
        flush(*ch);  // replay must include everything published before the request
        serve_replay(*ch);
      }
    }
  }
}

Result<std::shared_ptr<PublisherHub>> PublisherHub::create() {
  auto impl = std::make_unique<Impl>();
  if (!impl->wake.ok()) return fail(Error::internal("eventfd failed"));
  impl->ctx = zmq_ctx_new();
  if (impl->ctx == nullptr) return fail(Error::internal(detail::zmq_error("zmq_ctx_new")));
  std::shared_ptr<PublisherHub> hub(new PublisherHub(std::move(impl)));
  Impl* raw = hub->impl_.get();
  hub->impl_->thread = std::thread([raw] { raw->run(); });
  return hub;
}

PublisherHub::PublisherHub(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

PublisherHub::~PublisherHub() {
  {
    MutexLock lk(impl_->mu);
    impl_->stopping = true;
  }
  impl_->wake.signal();
  if (impl_->thread.joinable()) impl_->thread.join();
  {
    MutexLock lk(impl_->mu);
    impl_->channels.clear();
  }
  zmq_ctx_term(impl_->ctx);  // waits at most kLingerMs for unsent messages
}

// ---------------------------------------------------------------------------------------------

std::string offset_endpoint_port(const std::string& endpoint, std::int64_t rank) {
  if (rank == 0) return endpoint;
  if (endpoint.starts_with("inproc://")) return endpoint + "_dp" + std::to_string(rank);
  if (!endpoint.starts_with("tcp://")) return endpoint;
  const auto colon = endpoint.rfind(':');
  if (colon == std::string::npos || colon + 1 >= endpoint.size()) return endpoint;
  std::int64_t port = 0;
  for (std::size_t i = colon + 1; i < endpoint.size(); ++i) {
    const char c = endpoint[i];
    if (c < '0' || c > '9') return endpoint;
    port = port * 10 + (c - '0');
    if (port > 65535) return endpoint;
  }
  return endpoint.substr(0, colon + 1) + std::to_string(port + rank);
}

namespace {

bool should_bind(const PublisherConfig& c) {
  using A = PublisherConfig::Attach;
  if (c.attach == A::kBind) return true;
  if (c.attach == A::kConnect) return false;
  const auto& e = c.endpoint;
  return e.find('*') != std::string::npos || e.find("::") != std::string::npos ||
         e.starts_with("ipc://") || e.starts_with("inproc://");
}

std::string last_endpoint(void* s) {
  char buf[256];
  std::size_t len = sizeof buf;
  if (zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, buf, &len) != 0 || len == 0) return {};
  return std::string(buf, len - 1);  // includes the NUL
}

Result<Socket> make_socket(void* ctx, int type, int sndhwm, int rcvhwm) {
  Socket s(zmq_socket(ctx, type));
  if (!s) return fail(Error::io(detail::zmq_error("zmq_socket")));
  const int linger = kLingerMs;
  zmq_setsockopt(s.get(), ZMQ_LINGER, &linger, sizeof linger);
  zmq_setsockopt(s.get(), ZMQ_SNDHWM, &sndhwm, sizeof sndhwm);
  zmq_setsockopt(s.get(), ZMQ_RCVHWM, &rcvhwm, sizeof rcvhwm);
  return s;
}

}  // namespace

Result<std::unique_ptr<ZmqEventPublisher>> ZmqEventPublisher::create(
    PublisherConfig config, std::shared_ptr<PublisherHub> hub) {
  if (!hub) {
    KVROUTE_TRY(hub, PublisherHub::create());
  }
  std::unique_ptr<ZmqEventPublisher> p(new ZmqEventPublisher());
  auto ch = std::make_shared<PublisherChannel>();
  ch->cfg = std::move(config);
  const auto& cfg = ch->cfg;
  if (cfg.max_queue_size == 0) return fail(Error::invalid("max_queue_size must be > 0"));
  KVROUTE_TRY(ch->pub, make_socket(hub->impl_->ctx, ZMQ_PUB, cfg.hwm, cfg.hwm));
  if (should_bind(cfg)) {
    if (zmq_bind(ch->pub.get(), cfg.endpoint.c_str()) != 0)
      return fail(Error::io(detail::zmq_error("bind " + cfg.endpoint)));
    p->endpoint_ = last_endpoint(ch->pub.get());
  } else {
    if (zmq_connect(ch->pub.get(), cfg.endpoint.c_str()) != 0)
      return fail(Error::io(detail::zmq_error("connect " + cfg.endpoint)));
    p->endpoint_ = cfg.endpoint;
  }
  if (!cfg.replay_endpoint.empty()) {
    // Room for a full replay of the buffer per client without silent ROUTER drops.
    const int hwm = static_cast<int>(std::min<std::size_t>(cfg.buffer_steps + 16, 1 << 30));
    KVROUTE_TRY(ch->router, make_socket(hub->impl_->ctx, ZMQ_ROUTER, hwm, 1000));
    if (zmq_bind(ch->router.get(), cfg.replay_endpoint.c_str()) != 0)
      return fail(Error::io(detail::zmq_error("bind " + cfg.replay_endpoint)));
    p->replay_endpoint_ = last_endpoint(ch->router.get());
  }
  p->channel_ = ch;
  p->hub_ = std::move(hub);
  p->hub_->impl_->add(std::move(ch));  // the mutex hands the sockets to the I/O thread
  return p;
}

ZmqEventPublisher::~ZmqEventPublisher() { stop(); }

bool ZmqEventPublisher::publish(const EventBatch& batch) {
  auto& ch = *channel_;
  std::string payload;
  if (ch.cfg.data_parallel_rank && !batch.data_parallel_rank) {
    EventBatch copy = batch;
    copy.data_parallel_rank = ch.cfg.data_parallel_rank;
    encode_batch(copy, ch.cfg.encoding, payload);
  } else {
    encode_batch(batch, ch.cfg.encoding, payload);
  }
  bool was_empty;
  {
    MutexLock lk(ch.mu);
    if (ch.closing) return false;
    if (ch.queue.size() >= ch.cfg.max_queue_size) {
      ch.dropped.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    was_empty = ch.queue.empty();
    // The drop belongs to this batch, not to whichever one the I/O thread flushes next.
    bool drop = false;
    if (ch.drop_next.load(std::memory_order_relaxed) > 0) {
      ch.drop_next.fetch_sub(1, std::memory_order_relaxed);
      drop = true;
    }
    ch.queue.push_back({std::move(payload), drop});
  }
  if (was_empty) hub_->impl_->wake.signal();
  return true;
}

PublisherStats ZmqEventPublisher::stats() const {
  const auto& ch = *channel_;
  PublisherStats s;
  s.published = ch.published.load(std::memory_order_relaxed);
  s.dropped_queue_full = ch.dropped.load(std::memory_order_relaxed);
  s.replay_requests = ch.replay_requests.load(std::memory_order_relaxed);
  s.replayed = ch.replayed.load(std::memory_order_relaxed);
  s.invalid_replay_requests = ch.invalid_replay.load(std::memory_order_relaxed);
  return s;
}

void ZmqEventPublisher::stop() {
  if (!channel_) return;
  auto& ch = *channel_;
  {
    MutexLock lk(ch.mu);
    if (ch.closed) return;
    ch.closing = true;
  }
  hub_->impl_->wake.signal();
  MutexLock lk(ch.mu);
  const auto deadline = std::chrono::steady_clock::now() + kStopWait;
  while (!ch.closed && ch.cv.wait_until(ch.mu, deadline)) {
  }
}

void ZmqEventPublisher::drop_next_for_test() {
  channel_->drop_next.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace kvroute::kv_events
