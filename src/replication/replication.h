// File: replication/replication.h
//
// Active-active replicas (issue 17, docs/adr/0280): several `serve` or `epp` replicas in front of
// the same engines exchange what one replica learns that the others cannot see for themselves:
//   * routing decisions: the engine a request went to and its prompt's block hashes (what the
//     approximate prefix index and precise routing's speculative entries learn from a decision),
//     plus the output blocks it will add (the index's LRU clock);
//   * load: each replica's own requests in flight per engine and their uncached prefill tokens,
//     sent every `load_interval` (absolute values: idempotent, and a heartbeat).
// KV events are not exchanged: every replica subscribes to every engine already.
//
// Transport: ZMQ (ADR 0280). Each replica binds one PUB socket (`listen`) and connects one SUB
// socket to every peer's; a peer's messages reach us whatever the order of start-up, and ZMQ
// reconnects after a restart or partition by itself. PUB drops when a peer's queue is full
// (high-water mark): loss is detected from sequence numbers and counted, never blocks routing.
//
// Wire format (little-endian, version 1; decode() checks every length):
//   header  : u16 magic 0x524b ("KR"), u8 version, u8 type, u64 sender, u64 seq
//   ROUTED  : u64 backend (hash64 of its URL), u8 flags (1: token blocks), u32 tokens_per_block,
//             u32 output_blocks, u32 n (<= kMaxBlocks), n x u64 block hashes (prefix order)
//   LOAD    : u32 n (<= kMaxLoadEntries), n x {u64 backend, i32 inflight, i64 inflight_tokens}
//   SNAPSHOT: its own header, u16 magic 0x534b ("KS"), u64 requester, u64 responder, u8 version,
//             u8 type 3, then u32 index, u32 count (<= kMaxSnapshotChunks), u32 n, n x ROUTED body
//             (the chunk at most kMaxSnapshotChunkBytes).
// Warm-up (snapshot, then the stream): a joining replica subscribes to its peers' "KR" messages at
// once; on hearing a peer it also subscribes to the topic "KS" + its id + that peer's id. The
// peers' XPUB sockets see the subscription (the request needs no connection back, so a headless
// Service that lists only ready pods still works); the one named answers with its decision log
// (the last `snapshot_blocks` blocks of decisions, its own and its peers', oldest first), in
// chunks that only the requester receives. Until every chunk arrived, or `warmup_timeout` passed
// with no complete answer (the first replica of a deployment), warming() is true and the router
// reports not ready. Records apply as decisions do; what the stream delivered meanwhile applies
// again, which inserts nothing new.
// A receiver drops messages of another version (counted): a rolling upgrade degrades to the local
// picture, never to wrong state. `sender` is random per process: a restarted replica is a new peer.
//
// Tolerance: per sender, a window of the last 256 sequence numbers drops duplicates (an update
// is applied at most once) and accepts reordered ones; a gap counts as lost until it is filled.
// A LOAD older than the newest applied one from that sender is ignored. A sender silent for
// `peer_timeout` is forgotten: its load is taken back (a dead or cut-off replica costs only its
// own in-flight requests); its routing decisions stay (the engines still hold those blocks).
//
// Thread-safety: publish_routed() and the accessors from any thread; start()/stop() from one.
// The callbacks run on the replicator's own thread, one at a time.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace kvroute::replication {

inline constexpr std::uint8_t kVersion = 1;
inline constexpr std::size_t kMaxBlocks = 8192;       // 128k tokens of 16: longer prompts are cut
inline constexpr std::size_t kMaxLoadEntries = 4096;  // engines per LOAD
inline constexpr std::size_t kHeaderBytes = 20;

inline constexpr std::size_t kMaxSnapshotChunkBytes = 1u << 20;
inline constexpr std::uint32_t kMaxSnapshotChunks = 4096;
inline constexpr std::size_t kSnapshotTopicBytes = 18;  // "KS", requester, responder

enum class MessageType : std::uint8_t { kRouted = 1, kLoad = 2, kSnapshot = 3 };

struct Routed {
  std::uint64_t backend = 0;  // hash64(url)
  bool token_blocks = false;  // the blocks are token blocks (precise routing may use them)
  std::uint32_t tokens_per_block = 16;
  std::uint32_t output_blocks = 0;
  std::vector<std::uint64_t> blocks;
};

struct LoadEntry {
  std::uint64_t backend = 0;
  std::int32_t inflight = 0;
  std::int64_t inflight_tokens = 0;
  bool operator==(const LoadEntry&) const = default;
};

struct Snapshot {
  std::uint64_t requester = 0;
  std::uint32_t index = 0, count = 1;
  std::vector<Routed> records;
};

struct Message {
  std::uint8_t version = kVersion;
  MessageType type = MessageType::kRouted;
  std::uint64_t sender = 0;     // kSnapshot: the responder
  std::uint64_t seq = 0;        // kSnapshot: none
  Routed routed;                // type kRouted
  std::vector<LoadEntry> load;  // type kLoad
  Snapshot snapshot;            // type kSnapshot
};

// Encoders append one message to `out` (cleared first). Blocks beyond kMaxBlocks and entries
// beyond kMaxLoadEntries are left out.
void encode_routed(std::uint64_t sender, std::uint64_t seq, const Routed& r, std::string& out);
void encode_load(std::uint64_t sender, std::uint64_t seq, std::span<const LoadEntry> load,
                 std::string& out);
// One snapshot chunk of `records` (the caller keeps it under kMaxSnapshotChunkBytes).
void encode_snapshot(std::uint64_t requester, std::uint64_t responder, std::uint32_t index,
                     std::uint32_t count, std::span<const Routed> records, std::string& out);
// Bytes one record takes in a snapshot chunk.
std::size_t snapshot_record_bytes(const Routed& r);
// The topic a requester subscribes to for `responder`'s snapshot (kSnapshotTopicBytes).
std::string snapshot_topic(std::uint64_t requester, std::uint64_t responder);
// Why a message was refused: "malformed: ..." or "version N".
Result<Message> decode(std::string_view bytes);

// Duplicate, reorder and loss accounting for one sender's sequence numbers.
class SequenceWindow {
 public:
  enum class Verdict { kNew, kLate, kDuplicate, kTooOld };
  // kNew: beyond every seq seen (a jump counts the skipped ones as lost); kLate: within the
  // window and not seen (fills a gap: one lost fewer); kDuplicate: seen; kTooOld: before the
  // window (not applied). The first seq seen starts the window (nothing before it is lost).
  Verdict observe(std::uint64_t seq);
  std::uint64_t lost() const { return lost_; }

  static constexpr std::uint64_t kWindow = 256;

 private:
  bool started_ = false;
  std::uint64_t highest_ = 0;
  std::uint64_t bits_[kWindow / 64] = {};  // bit (seq % kWindow) set: seq seen, for seq in window
  std::uint64_t lost_ = 0;
  bool test(std::uint64_t seq) const;
  void set(std::uint64_t seq);
  void clear(std::uint64_t seq);
};

struct ReplicatorOptions {
  std::string listen;              // ZMQ endpoint to bind ("tcp://0.0.0.0:5570"; port * = any)
  std::vector<std::string> peers;  // their `listen` endpoints; our own is recognized and skipped
  std::chrono::milliseconds load_interval{50};
  std::chrono::milliseconds peer_timeout{1000};
  std::size_t max_queue = 65536;  // outgoing decisions waiting for the thread; more are dropped
  std::size_t snapshot_blocks = 1u << 20;  // the decision log a joining peer warms from (blocks)
  // How long a replica with peers waits for a snapshot before routing on its own picture (0: no
  // warm-up).
  std::chrono::milliseconds warmup_timeout{5000};
  // DNS discovery ("host:port", a headless Service): every address it resolves to is a peer
  // (tcp://address:port), re-resolved every dns_interval; addresses that go away are dropped.
  std::string peers_dns;
  std::chrono::milliseconds dns_interval{5000};
  // Tests: the resolver (default: getaddrinfo, IPv4 and IPv6).
  std::function<std::vector<std::string>(const std::string& host)> resolve;
};

struct ReplicatorCallbacks {
  // A peer's routing decision (each applied at most once).
  std::function<void(const Routed&)> on_routed;
  // A change of the peers' total load on one engine (deltas: a peer's new figures minus its
  // previous ones, or minus all of them when it is forgotten).
  std::function<void(std::uint64_t backend, std::int32_t d_inflight, std::int64_t d_tokens)>
      on_load;
  // This replica's own load now, per engine (read every load_interval on the thread).
  std::function<void(std::vector<LoadEntry>&)> local_load;
};

struct ReplicatorStats {
  std::uint64_t sent_routed = 0, sent_load = 0, send_dropped = 0;
  std::uint64_t received_routed = 0, received_load = 0;
  std::uint64_t duplicates = 0, reordered = 0, too_old = 0, stale_load = 0, lost = 0;
  std::uint64_t malformed = 0, other_version = 0;
  std::uint64_t peers_forgotten = 0;
  std::size_t peers_live = 0;  // senders heard within peer_timeout
  std::uint64_t snapshots_served = 0, snapshot_records_sent = 0, snapshot_records_received = 0;
  bool warming = false;                  // waiting for a snapshot (warming())
  bool warmed_from_peer = false;         // the warm-up ended with a complete snapshot
  std::size_t log_blocks = 0;            // blocks in the decision log
  std::size_t dns_peers = 0;             // addresses the last DNS resolution gave
  std::uint64_t partitioned_routed = 0;  // tests: decisions discarded by set_partitioned_for_test
};

class Replicator {
 public:
  Replicator(ReplicatorOptions options, ReplicatorCallbacks callbacks);
  ~Replicator();
  Replicator(const Replicator&) = delete;
  Replicator& operator=(const Replicator&) = delete;

  // Binds `listen`, connects to the peers and starts the thread. Errors name the endpoint.
  Status start();
  // The bound endpoint (with the port the OS chose for "*"); empty before start().
  std::string endpoint() const;
  // Connects to one more peer (discovery); idempotent per endpoint; a running replicator only.
  void add_peer(const std::string& endpoint);
  // Queues one decision for the peers (never blocks; dropped and counted when the queue is full).
  void publish_routed(Routed r);
  ReplicatorStats stats() const;
  // True from start() until a peer's snapshot arrived complete or warmup_timeout passed (false
  // for a replica without peers and without peers_dns).
  bool warming() const;
  std::uint64_t sender_id() const;
  // Stops the thread; the peers' load is taken back (on_load with the negated figures).
  void stop();

  // Tests: while set, every received message is discarded before decoding (a partition).
  void set_partitioned_for_test(bool on);
  // Tests: handles `bytes` as if received (on the caller's thread; call only while stopped).
  void inject_for_test(std::string_view bytes);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvroute::replication
