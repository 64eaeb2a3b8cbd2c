// File: replication/replicator.cc: the ZMQ exchange thread (replication.h).
#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <deque>
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

// getaddrinfo: every IPv4 and IPv6 address of `host` (empty when it does not resolve).
std::vector<std::string> resolve_host(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  std::vector<std::string> out;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0) return out;
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    char buf[INET6_ADDRSTRLEN] = {};
    if (a->ai_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr, buf, sizeof buf);
      out.emplace_back(buf);
    } else if (a->ai_family == AF_INET6) {
      inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr, buf, sizeof buf);
      out.push_back(fmt::format("[{}]", buf));
    }
  }
  freeaddrinfo(res);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

enum class Warm { kWaiting, kAsked, kDone };

// A peer's figures are untrusted: deltas saturate instead of overflowing.
std::int32_t clamp32(std::int64_t v) {
  return static_cast<std::int32_t>(std::clamp<std::int64_t>(v, INT32_MIN, INT32_MAX));
}
std::int64_t sat_sub(std::int64_t a, std::int64_t b) {
  std::int64_t r;
  if (__builtin_sub_overflow(a, b, &r)) return b < 0 ? INT64_MAX : INT64_MIN;
  return r;
}

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
  std::vector<std::string> pending_drops GUARDED_BY(mu);
  std::vector<std::string> connected GUARDED_BY(mu);
  std::vector<std::string> from_dns GUARDED_BY(mu);  // the peers DNS gave (dropped when gone)
  CondVar dns_cv;
  std::thread dns_thread;

  // Counters (written by the thread, or by inject_for_test while stopped; read from any thread).
  std::atomic<std::uint64_t> sent_routed{0}, sent_load{0}, send_dropped{0};
  std::atomic<std::uint64_t> received_routed{0}, received_load{0};
  std::atomic<std::uint64_t> duplicates{0}, reordered{0}, too_old{0}, stale_load{0};
  std::atomic<std::int64_t> lost{0};
  std::atomic<std::uint64_t> malformed{0}, other_version{0}, peers_forgotten{0};
  std::atomic<std::size_t> peers_live{0};
  std::atomic<std::uint64_t> snapshots_served{0}, snapshot_records_sent{0},
      snapshot_records_received{0};
  std::atomic<bool> warming{false}, warmed_from_peer{false};
  std::atomic<std::size_t> log_blocks_now{0}, dns_peers{0};
  std::atomic<std::uint64_t> partitioned_routed{0};

  // The decision log a joining peer warms from (the thread's): oldest first, at most
  // opts.snapshot_blocks blocks.
  std::deque<Routed> log;
  std::size_t log_blocks = 0;
  // Warm-up (the thread's).
  Warm warm = Warm::kDone;
  std::int64_t warm_deadline = 0, ask_deadline = 0;
  std::uint64_t asked = 0;  // the peer whose snapshot we subscribed to
  std::vector<bool> chunks;
  std::size_t chunks_left = 0;
  std::unordered_map<std::uint64_t, std::int64_t> served_ms;  // requester -> last snapshot sent

  // The thread's own state.
  std::unordered_map<std::uint64_t, Peer> peers;
  std::uint64_t seq = 0;
  std::string buf;
  std::vector<LoadEntry> local;

  void signal() const {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = write(wake_fd, &one, sizeof one);
  }

  // One message on the PUB socket, never blocking; false (counted in send_dropped) when dropped.
  bool send(std::string_view bytes) {
    int rc;
    do {
      rc = zmq_send(pub, bytes.data(), bytes.size(), ZMQ_DONTWAIT);
    } while (rc < 0 && zmq_errno() == EINTR);
    if (rc < 0) send_dropped.fetch_add(1, std::memory_order_relaxed);
    return rc >= 0;
  }
  void send(std::string_view bytes, std::atomic<std::uint64_t>& counter) {
    if (send(bytes)) counter.fetch_add(1, std::memory_order_relaxed);
  }

  void provisional(Peer& p, std::uint64_t backend) {
    auto e = std::find_if(p.load.begin(), p.load.end(),
                          [&](const LoadEntry& o) { return o.backend == backend; });
    if (e == p.load.end()) {
      if (p.load.size() >= kMaxLoadEntries) return;
      e = p.load.insert(p.load.end(), LoadEntry{backend, 0, 0});
    }
    ++e->inflight;
    if (cb.on_load) cb.on_load(backend, 1, 0);
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
        cb.on_load(e.backend, clamp32(std::int64_t{e.inflight} - oi),
                   sat_sub(e.inflight_tokens, ot));
    }
    for (const auto& o : p.load) {
      const bool kept = std::any_of(next.begin(), next.end(),
                                    [&](const LoadEntry& e) { return e.backend == o.backend; });
      if (!kept && (o.inflight != 0 || o.inflight_tokens != 0))
        cb.on_load(o.backend, clamp32(-std::int64_t{o.inflight}), sat_sub(0, o.inflight_tokens));
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
    if (m->type == MessageType::kSnapshot) {
      take_snapshot(*m, now);
      return;
    }
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
    if (warm == Warm::kWaiting) ask(m->sender, now);
    if (m->type == MessageType::kRouted) {
      received_routed.fetch_add(1, std::memory_order_relaxed);
      if (cb.on_routed) cb.on_routed(m->routed);
      // The decision is one more request in flight on that engine until the sender's next LOAD
      // (absolute figures) says otherwise: replicas picking at the same moment do not all see the
      // same least-loaded engine for a whole load interval.
      if (m->seq > p.load_seq || !p.has_load) provisional(p, m->routed.backend);
      remember(std::move(m->routed));
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

  void remember(Routed r) {
    if (opts.snapshot_blocks == 0 || r.blocks.empty()) return;
    log_blocks += r.blocks.size();
    log.push_back(std::move(r));
    while (log_blocks > opts.snapshot_blocks && !log.empty()) {
      log_blocks -= log.front().blocks.size();
      log.pop_front();
    }
    log_blocks_now.store(log_blocks, std::memory_order_relaxed);
  }

  // Subscribes to `peer`'s snapshot for us (its XPUB sees the subscription: that is the request).
  void ask(std::uint64_t peer, std::int64_t now) {
    if (asked != 0) {
      const auto old = snapshot_topic(sender, asked);
      zmq_setsockopt(sub, ZMQ_UNSUBSCRIBE, old.data(), old.size());
    }
    asked = peer;
    const auto topic = snapshot_topic(sender, peer);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, topic.data(), topic.size());
    chunks.clear();
    chunks_left = 0;
    warm = Warm::kAsked;
    ask_deadline = now + std::max<std::int64_t>(1000, opts.peer_timeout.count());
  }

  void end_warmup(bool complete) {
    if (asked != 0) {
      const auto old = snapshot_topic(sender, asked);
      zmq_setsockopt(sub, ZMQ_UNSUBSCRIBE, old.data(), old.size());
    }
    warm = Warm::kDone;
    warmed_from_peer.store(complete);
    warming.store(false, std::memory_order_release);
    if (complete) {
      spdlog::info("replication: warmed from a peer ({} blocks of decisions)", log_blocks);
    } else {
      spdlog::warn("replication: no peer snapshot within {} ms: routing on the local picture",
                   opts.warmup_timeout.count());
    }
  }

  void take_snapshot(Message& m, std::int64_t now) {
    if (warm != Warm::kAsked || m.sender != asked || m.snapshot.requester != sender) return;
    if (chunks.empty()) {
      chunks.assign(m.snapshot.count, false);
      chunks_left = m.snapshot.count;
    }
    if (m.snapshot.count != chunks.size() || chunks[m.snapshot.index]) return;
    chunks[m.snapshot.index] = true;
    --chunks_left;
    ask_deadline = now + std::max<std::int64_t>(1000, opts.peer_timeout.count());
    snapshot_records_received.fetch_add(m.snapshot.records.size(), std::memory_order_relaxed);
    for (auto& r : m.snapshot.records) {
      if (cb.on_routed) cb.on_routed(r);
      remember(std::move(r));
    }
    if (chunks_left == 0) end_warmup(true);
  }

  // A subscription seen by our XPUB: a peer asking for our snapshot sends "KS" + its id + ours.
  void serve_subscription(std::string_view sub_msg, std::int64_t now) {
    if (sub_msg.size() != 1 + kSnapshotTopicBytes || sub_msg[0] != 1) return;
    const std::string_view topic = sub_msg.substr(1);
    std::uint64_t requester = 0, responder = 0;
    for (std::size_t i = 8; i-- > 0;) {
      requester = requester << 8 | static_cast<unsigned char>(topic[2 + i]);
      responder = responder << 8 | static_cast<unsigned char>(topic[10 + i]);
    }
    if (topic.substr(0, 2) != "KS" || responder != sender) return;
    // A replica still warming up has only a partial picture: the asker moves on to another peer.
    if (warm != Warm::kDone) return;
    // At most one snapshot per requester and second (a repeated subscription is not a flood).
    auto& last = served_ms[requester];
    if (last != 0 && now - last < 1000) return;
    last = now;
    // Chunks of at most kMaxSnapshotChunkBytes, newest kept when the log needs more chunks.
    std::vector<std::size_t> starts{0};
    std::size_t bytes = 0;
    for (std::size_t i = 0; i < log.size(); ++i) {
      const std::size_t rb = snapshot_record_bytes(log[i]);
      if (bytes > 0 && bytes + rb > kMaxSnapshotChunkBytes) {
        starts.push_back(i);
        bytes = 0;
      }
      bytes += rb;
    }
    std::size_t first = 0;
    if (starts.size() > kMaxSnapshotChunks) first = starts.size() - kMaxSnapshotChunks;
    const auto count = static_cast<std::uint32_t>(starts.size() - first);
    std::vector<Routed> part;
    for (std::size_t c = first; c < starts.size(); ++c) {
      const std::size_t end = c + 1 < starts.size() ? starts[c + 1] : log.size();
      part.assign(log.begin() + static_cast<std::ptrdiff_t>(starts[c]),
                  log.begin() + static_cast<std::ptrdiff_t>(end));
      encode_snapshot(requester, sender, static_cast<std::uint32_t>(c - first), count, part, buf);
      send(buf);
      snapshot_records_sent.fetch_add(part.size(), std::memory_order_relaxed);
    }
    snapshots_served.fetch_add(1, std::memory_order_relaxed);
  }

  void warm_tick(std::int64_t now) {
    if (warm == Warm::kDone) return;
    if (now >= warm_deadline) {
      end_warmup(false);
      return;
    }
    if (warm == Warm::kAsked && now >= ask_deadline) {
      // No (complete) answer: ask another live peer, or wait to hear one.
      std::uint64_t next = 0;
      for (const auto& [id, p] : peers)
        if (p.live && id != asked) next = id;
      if (next != 0) {
        ask(next, now);
      } else if (peers.count(asked) != 0 && peers[asked].live) {
        ask(asked, now);
      } else {
        warm = Warm::kWaiting;
      }
    }
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
    std::vector<std::string> todo, drops;
    {
      MutexLock lock(mu);
      todo.swap(pending_peers);
      drops.swap(pending_drops);
    }
    for (const auto& ep : drops) {
      zmq_disconnect(sub, ep.c_str());
      spdlog::info("replication: peer {} left DNS", ep);
    }
    for (const auto& ep : todo) {
      if (zmq_connect(sub, ep.c_str()) != 0) {
        spdlog::warn("replication: cannot connect to peer {}: {}", ep, zmq_strerror(zmq_errno()));
        continue;
      }
      spdlog::info("replication: peer {}", ep);
    }
  }

  void add_peer(const std::string& ep) {
    {
      MutexLock lock(mu);
      if (ep == opts.listen || ep == bound) return;
      if (std::find(connected.begin(), connected.end(), ep) != connected.end()) return;
      connected.push_back(ep);
      pending_peers.push_back(ep);
    }
    if (wake_fd >= 0) signal();
  }

  // DNS discovery: every dns_interval, the addresses of the host become the DNS-given peers.
  void resolve_loop() {
    const auto colon = opts.peers_dns.rfind(':');
    const std::string host = opts.peers_dns.substr(0, colon);
    const std::string port = opts.peers_dns.substr(colon + 1);
    while (!stopping.load(std::memory_order_acquire)) {
      std::vector<std::string> now;
      for (const auto& a : opts.resolve(host)) now.push_back(fmt::format("tcp://{}:{}", a, port));
      dns_peers.store(now.size(), std::memory_order_relaxed);
      std::vector<std::string> gone, fresh;
      // A failed or empty lookup (a DNS hiccup) keeps the peers we have: ZMQ notices dead ones.
      if (!now.empty()) {
        MutexLock lock(mu);
        for (const auto& ep : from_dns)
          if (std::find(now.begin(), now.end(), ep) == now.end()) gone.push_back(ep);
        for (const auto& ep : now)
          if (std::find(from_dns.begin(), from_dns.end(), ep) == from_dns.end())
            fresh.push_back(ep);
        from_dns = now;
        for (const auto& ep : gone) {
          connected.erase(std::remove(connected.begin(), connected.end(), ep), connected.end());
          const auto queued = std::find(pending_peers.begin(), pending_peers.end(), ep);
          if (queued != pending_peers.end()) {
            pending_peers.erase(queued);  // never connected: nothing to drop
          } else {
            pending_drops.push_back(ep);
          }
        }
      }
      for (const auto& ep : fresh) add_peer(ep);
      if (!gone.empty()) signal();
      const auto until = Clock::now() + opts.dns_interval;
      MutexLock lock(mu);
      while (!stopping.load(std::memory_order_acquire))
        if (!dns_cv.wait_until(mu, until)) break;
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
      zmq_pollitem_t items[3] = {
          {sub, 0, ZMQ_POLLIN, 0}, {nullptr, wake_fd, ZMQ_POLLIN, 0}, {pub, 0, ZMQ_POLLIN, 0}};
      const long timeout = std::max<std::int64_t>(0, next_load - now0);
      if (zmq_poll(items, 3, timeout) < 0 && zmq_errno() != EINTR) break;
      if (items[1].revents & ZMQ_POLLIN) {
        std::uint64_t v;
        [[maybe_unused]] auto n = read(wake_fd, &v, sizeof v);
      }
      {
        MutexLock lock(mu);
        batch.swap(outgoing);
      }
      for (auto& r : batch) {
        encode_routed(sender, ++seq, r, buf);
        send(buf, sent_routed);
        remember(std::move(r));
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
        if (partitioned.load(std::memory_order_relaxed)) {
          const auto* p = static_cast<const unsigned char*>(zmq_msg_data(&msg));
          if (zmq_msg_size(&msg) > 3 && p[3] == static_cast<unsigned char>(MessageType::kRouted))
            partitioned_routed.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
        handle({static_cast<const char*>(zmq_msg_data(&msg)), zmq_msg_size(&msg)}, now);
      }
      // Subscriptions that reached our XPUB (snapshot requests among them).
      for (int i = 0; i < 256; ++i) {
        if (zmq_msg_recv(&msg, pub, ZMQ_DONTWAIT) < 0) break;
        if (partitioned.load(std::memory_order_relaxed)) continue;
        serve_subscription({static_cast<const char*>(zmq_msg_data(&msg)), zmq_msg_size(&msg)}, now);
      }
      warm_tick(now);
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
  d.pub = zmq_socket(d.ctx, ZMQ_XPUB);
  d.sub = zmq_socket(d.ctx, ZMQ_SUB);
  for (void* s : {d.pub, d.sub}) {
    set_int(s, ZMQ_LINGER, 0);
    set_int(s, ZMQ_RECONNECT_IVL, 100);
    set_int(s, ZMQ_RECONNECT_IVL_MAX, 1000);
    set_int(s, ZMQ_IPV6, 1);
  }
  set_int(d.pub, ZMQ_XPUB_VERBOSE, 1);  // every snapshot subscription, repeated ones too
  set_int(d.pub, ZMQ_SNDHWM, 10000);
  set_int(d.sub, ZMQ_RCVHWM, 10000);
  zmq_setsockopt(d.sub, ZMQ_SUBSCRIBE, "KR", 2);  // decisions and load; snapshots by topic
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
  if (!d.opts.peers_dns.empty()) {
    const auto colon = d.opts.peers_dns.rfind(':');
    if (colon == std::string::npos || colon == 0) {
      const std::string e = "replication: peersDns must be host:port, got " + d.opts.peers_dns;
      stop();
      return fail(Error::invalid(e));
    }
    if (!d.opts.resolve) d.opts.resolve = resolve_host;
    spdlog::default_logger_raw();
    d.dns_thread = std::thread([&d] { d.resolve_loop(); });
  }
  if ((!d.opts.peers.empty() || !d.opts.peers_dns.empty()) && d.opts.warmup_timeout.count() > 0) {
    d.warm = Warm::kWaiting;
    d.warm_deadline = now_ms() + d.opts.warmup_timeout.count();
    d.warming.store(true);
  }
  d.started = true;
  // spdlog's registry is created on first use inside libspdlog (uninstrumented): create it here,
  // before our threads log, so that its construction happens-before their reads of it.
  spdlog::default_logger_raw();
  d.thread = std::thread([&d] { d.run(); });
  return {};
}

std::string Replicator::endpoint() const {
  MutexLock lock(impl_->mu);
  return impl_->bound;
}

void Replicator::add_peer(const std::string& ep) { impl_->add_peer(ep); }

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
  s.snapshots_served = d.snapshots_served.load();
  s.snapshot_records_sent = d.snapshot_records_sent.load();
  s.snapshot_records_received = d.snapshot_records_received.load();
  s.warming = d.warming.load();
  s.warmed_from_peer = d.warmed_from_peer.load();
  s.log_blocks = d.log_blocks_now.load();
  s.dns_peers = d.dns_peers.load();
  s.partitioned_routed = d.partitioned_routed.load();
  return s;
}

bool Replicator::warming() const { return impl_->warming.load(std::memory_order_acquire); }

std::uint64_t Replicator::sender_id() const { return impl_->sender; }

void Replicator::stop() {
  auto& d = *impl_;
  {
    MutexLock lock(d.mu);
    d.stopping.store(true, std::memory_order_release);
  }
  d.dns_cv.notify_all();
  if (d.dns_thread.joinable()) d.dns_thread.join();
  if (d.thread.joinable()) {
    d.signal();
    d.thread.join();
  }
  for (auto& [id, p] : d.peers) d.apply_load(p, {});
  d.peers.clear();
  d.peers_live.store(0);
  d.warming.store(false);
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
