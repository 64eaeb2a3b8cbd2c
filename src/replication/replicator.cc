// File: replication/replicator.cc: the ZMQ exchange thread (replication.h).
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <cerrno>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>

#include "common/mutex.h"
#include "replication/replication.h"

namespace kvroute::replication {
namespace {

using Clock = std::chrono::steady_clock;

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch())
      .count();
}

std::string zmq_error(std::string_view what) {
  return fmt::format("{}: {}", what, zmq_strerror(zmq_errno()));
}

void set_int(void* s, int opt, int v) { zmq_setsockopt(s, opt, &v, sizeof v); }

// A peer as the receiving side knows it.
struct Peer {
  SequenceWindow window;
  std::int64_t last_seen_ms = 0;
  bool live = false;
  bool has_load = false;
  std::uint64_t load_seq = 0;
  std::vector<LoadEntry> load;  // its last applied figures
};

}  // namespace

struct Replicator::Impl {
  ReplicatorOptions opts;
  ReplicatorCallbacks cb;
  std::uint64_t sender = 0;
  void* ctx = nullptr;
  void* pub = nullptr;
  void* sub = nullptr;
  int wake_fd = -1;
  std::thread thread;
  std::atomic<bool> stopping{false};
  std::atomic<bool> partitioned{false};
  bool started = false;

  mutable Mutex mu;
  std::string bound GUARDED_BY(mu);
  std::vector<Routed> outgoing GUARDED_BY(mu);
  std::vector<std::string> pending_peers GUARDED_BY(mu);
  std::vector<std::string> connected GUARDED_BY(mu);

  // Counters (written by the thread, or by inject_for_test while stopped; read from any thread).
  std::atomic<std::uint64_t> sent_routed{0}, sent_load{0}, send_dropped{0};
  std::atomic<std::uint64_t> received_routed{0}, received_load{0};
  std::atomic<std::uint64_t> duplicates{0}, reordered{0}, too_old{0}, stale_load{0};
  std::atomic<std::int64_t> lost{0};
  std::atomic<std::uint64_t> malformed{0}, other_version{0}, peers_forgotten{0};
  std::atomic<std::size_t> peers_live{0};

  // The thread's own state.
  std::unordered_map<std::uint64_t, Peer> peers;
  std::uint64_t seq = 0;
  std::string buf;
  std::vector<LoadEntry> local;

  void signal() const {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = write(wake_fd, &one, sizeof one);
  }

  void send(std::string_view bytes, std::atomic<std::uint64_t>& counter) {
    int rc;
    do {
      rc = zmq_send(pub, bytes.data(), bytes.size(), ZMQ_DONTWAIT);
    } while (rc < 0 && zmq_errno() == EINTR);
    if (rc < 0) {
      send_dropped.fetch_add(1, std::memory_order_relaxed);
    } else {
      counter.fetch_add(1, std::memory_order_relaxed);
    }
  }

  void apply_load(Peer& p, std::span<const LoadEntry> next) {
    if (!cb.on_load) return;
    // Deltas against the previous figures, then the engines it no longer reports.
    for (const auto& e : next) {
      auto old = std::find_if(p.load.begin(), p.load.end(),
                              [&](const LoadEntry& o) { return o.backend == e.backend; });
      const std::int32_t oi = old != p.load.end() ? old->inflight : 0;
      const std::int64_t ot = old != p.load.end() ? old->inflight_tokens : 0;
      if (e.inflight != oi || e.inflight_tokens != ot)
        cb.on_load(e.backend, e.inflight - oi, e.inflight_tokens - ot);
    }
    for (const auto& o : p.load) {
      const bool kept = std::any_of(next.begin(), next.end(),
                                    [&](const LoadEntry& e) { return e.backend == o.backend; });
      if (!kept && (o.inflight != 0 || o.inflight_tokens != 0))
        cb.on_load(o.backend, -o.inflight, -o.inflight_tokens);
    }
    p.load.assign(next.begin(), next.end());
  }

  void handle(std::string_view bytes, std::int64_t now) {
    auto m = decode(bytes);
    if (!m) {
      if (m.error().message.starts_with("version"))
        other_version.fetch_add(1, std::memory_order_relaxed);
      else
        malformed.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (m->sender == sender) return;  // our own, through a peer list that names us
    Peer& p = peers[m->sender];
    const auto lost_before = p.window.lost();
    const auto v = p.window.observe(m->seq);
    lost.fetch_add(
        static_cast<std::int64_t>(p.window.lost()) - static_cast<std::int64_t>(lost_before),
        std::memory_order_relaxed);
    if (v == SequenceWindow::Verdict::kDuplicate) {
      duplicates.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (v == SequenceWindow::Verdict::kTooOld) {
      too_old.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (v == SequenceWindow::Verdict::kLate) reordered.fetch_add(1, std::memory_order_relaxed);
    p.last_seen_ms = now;
    if (!p.live) {
      p.live = true;
      peers_live.fetch_add(1, std::memory_order_relaxed);
    }
    if (m->type == MessageType::kRouted) {
      received_routed.fetch_add(1, std::memory_order_relaxed);
      if (cb.on_routed) cb.on_routed(m->routed);
      return;
    }
    received_load.fetch_add(1, std::memory_order_relaxed);
    if (p.has_load && m->seq < p.load_seq) {
      stale_load.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    p.has_load = true;
    p.load_seq = m->seq;
    apply_load(p, m->load);
  }

  // Forgets peers silent for peer_timeout (their load goes); drops long-gone entries.
  void expire(std::int64_t now) {
    for (auto it = peers.begin(); it != peers.end();) {
      Peer& p = it->second;
      const std::int64_t silent = now - p.last_seen_ms;
      if (p.live && silent > opts.peer_timeout.count()) {
        apply_load(p, {});
        p.has_load = false;
        p.live = false;
        peers_live.fetch_sub(1, std::memory_order_relaxed);
        peers_forgotten.fetch_add(1, std::memory_order_relaxed);
      }
      // Kept a while so that a peer that comes back counts what it lost meanwhile.
      if (!p.live && silent > 600'000) {
        it = peers.erase(it);
      } else {
        ++it;
      }
    }
  }

  void connect_pending() {
    std::vector<std::string> todo;
    {
      MutexLock lock(mu);
      todo.swap(pending_peers);
    }
    for (const auto& ep : todo) {
      if (zmq_connect(sub, ep.c_str()) != 0) {
        spdlog::warn("replication: cannot connect to peer {}: {}", ep, zmq_strerror(zmq_errno()));
        continue;
      }
      spdlog::info("replication: peer {}", ep);
    }
  }

  void run() {
    std::int64_t next_load = now_ms();
    std::vector<Routed> batch;
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    while (!stopping.load(std::memory_order_acquire)) {
      connect_pending();
      const std::int64_t now0 = now_ms();
      zmq_pollitem_t items[2] = {{sub, 0, ZMQ_POLLIN, 0}, {nullptr, wake_fd, ZMQ_POLLIN, 0}};
      const long timeout = std::max<std::int64_t>(0, next_load - now0);
      if (zmq_poll(items, 2, timeout) < 0 && zmq_errno() != EINTR) break;
      if (items[1].revents & ZMQ_POLLIN) {
        std::uint64_t v;
        [[maybe_unused]] auto n = read(wake_fd, &v, sizeof v);
      }
      {
        MutexLock lock(mu);
        batch.swap(outgoing);
      }
      for (const auto& r : batch) {
        encode_routed(sender, ++seq, r, buf);
        send(buf, sent_routed);
      }
      batch.clear();
      const std::int64_t now = now_ms();
      // A bounded number per turn, so that sending and the load heartbeat keep their pace.
      for (int i = 0; i < 4096; ++i) {
        const int rc = zmq_msg_recv(&msg, sub, ZMQ_DONTWAIT);
        if (rc < 0) break;
        if (zmq_msg_more(&msg)) {  // never sent by a replica: drain the rest
          malformed.fetch_add(1, std::memory_order_relaxed);
          while (zmq_msg_more(&msg) && zmq_msg_recv(&msg, sub, ZMQ_DONTWAIT) >= 0) {
          }
          continue;
        }
        if (partitioned.load(std::memory_order_relaxed)) continue;
        handle({static_cast<const char*>(zmq_msg_data(&msg)), zmq_msg_size(&msg)}, now);
      }
      if (now >= next_load) {
        local.clear();
        if (cb.local_load) cb.local_load(local);
        encode_load(sender, ++seq, local, buf);
        send(buf, sent_load);
        expire(now);
        next_load = now + std::max<std::int64_t>(1, opts.load_interval.count());
      }
    }
    zmq_msg_close(&msg);
  }
};

Replicator::Replicator(ReplicatorOptions options, ReplicatorCallbacks callbacks)
    : impl_(std::make_unique<Impl>()) {
  impl_->opts = std::move(options);
  impl_->cb = std::move(callbacks);
  std::random_device rd;
  impl_->sender = (std::uint64_t{rd()} << 32) ^ rd() ^
                  static_cast<std::uint64_t>(Clock::now().time_since_epoch().count());
}

Replicator::~Replicator() { stop(); }

Status Replicator::start() {
  auto& d = *impl_;
  if (d.started) return {};
  d.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (d.wake_fd < 0) return fail(Error::unavailable("replication: eventfd failed"));
  d.ctx = zmq_ctx_new();
  d.pub = zmq_socket(d.ctx, ZMQ_PUB);
  d.sub = zmq_socket(d.ctx, ZMQ_SUB);
  for (void* s : {d.pub, d.sub}) {
    set_int(s, ZMQ_LINGER, 0);
    set_int(s, ZMQ_RECONNECT_IVL, 100);
    set_int(s, ZMQ_RECONNECT_IVL_MAX, 1000);
  }
  set_int(d.pub, ZMQ_SNDHWM, 10000);
  set_int(d.sub, ZMQ_RCVHWM, 10000);
  zmq_setsockopt(d.sub, ZMQ_SUBSCRIBE, "", 0);
  if (zmq_bind(d.pub, d.opts.listen.c_str()) != 0) {
    const auto e = zmq_error("replication: cannot listen on " + d.opts.listen);
    stop();
    return fail(Error::unavailable(e));
  }
  char last[256] = {};
  std::size_t len = sizeof last;
  zmq_getsockopt(d.pub, ZMQ_LAST_ENDPOINT, last, &len);
  {
    MutexLock lock(d.mu);
    d.bound = last;
  }
  for (const auto& p : d.opts.peers) add_peer(p);
  d.started = true;
  d.thread = std::thread([&d] { d.run(); });
  return {};
}

std::string Replicator::endpoint() const {
  MutexLock lock(impl_->mu);
  return impl_->bound;
}

void Replicator::add_peer(const std::string& ep) {
  auto& d = *impl_;
  {
    MutexLock lock(d.mu);
    if (ep == d.opts.listen || ep == d.bound) return;
    if (std::find(d.connected.begin(), d.connected.end(), ep) != d.connected.end()) return;
    d.connected.push_back(ep);
    d.pending_peers.push_back(ep);
  }
  if (d.wake_fd >= 0) d.signal();
}

void Replicator::publish_routed(Routed r) {
  auto& d = *impl_;
  bool first;
  {
    MutexLock lock(d.mu);
    if (d.outgoing.size() >= d.opts.max_queue) {
      d.send_dropped.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    first = d.outgoing.empty();
    d.outgoing.push_back(std::move(r));
  }
  // One wake-up per batch: the thread takes everything queued meanwhile.
  if (first && d.wake_fd >= 0) d.signal();
}

ReplicatorStats Replicator::stats() const {
  const auto& d = *impl_;
  ReplicatorStats s;
  s.sent_routed = d.sent_routed.load();
  s.sent_load = d.sent_load.load();
  s.send_dropped = d.send_dropped.load();
  s.received_routed = d.received_routed.load();
  s.received_load = d.received_load.load();
  s.duplicates = d.duplicates.load();
  s.reordered = d.reordered.load();
  s.too_old = d.too_old.load();
  s.stale_load = d.stale_load.load();
  s.lost = static_cast<std::uint64_t>(std::max<std::int64_t>(0, d.lost.load()));
  s.malformed = d.malformed.load();
  s.other_version = d.other_version.load();
  s.peers_forgotten = d.peers_forgotten.load();
  s.peers_live = d.peers_live.load();
  return s;
}

std::uint64_t Replicator::sender_id() const { return impl_->sender; }

void Replicator::stop() {
  auto& d = *impl_;
  d.stopping.store(true, std::memory_order_release);
  if (d.thread.joinable()) {
    d.signal();
    d.thread.join();
  }
  for (auto& [id, p] : d.peers) d.apply_load(p, {});
  d.peers.clear();
  d.peers_live.store(0);
  if (d.pub != nullptr) zmq_close(d.pub);
  if (d.sub != nullptr) zmq_close(d.sub);
  d.pub = d.sub = nullptr;
  if (d.ctx != nullptr) zmq_ctx_term(d.ctx);
  d.ctx = nullptr;
  if (d.wake_fd >= 0) close(d.wake_fd);
  d.wake_fd = -1;
}

void Replicator::set_partitioned_for_test(bool on) { impl_->partitioned.store(on); }

void Replicator::inject_for_test(std::string_view bytes) { impl_->handle(bytes, now_ms()); }

}  // namespace kvroute::replication
