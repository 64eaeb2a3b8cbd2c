// File: replication/codec.cc: the wire format and the sequence window (replication.h).
#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "replication/replication.h"

namespace kvroute::replication {
namespace {

constexpr std::uint16_t kMagic = 0x524b;          // "KR" read little-endian
constexpr std::uint16_t kSnapshotMagic = 0x534b;  // "KS"

template <typename T>
void put(std::string& out, T v) {
  using U = std::make_unsigned_t<T>;
  auto u = static_cast<U>(v);
  for (std::size_t i = 0; i < sizeof(T); ++i) {
    out.push_back(static_cast<char>(u & 0xff));
    u = static_cast<U>(u >> 4 >> 4);  // two shifts: no UB warning for 8-bit types
  }
}

void put_header(std::string& out, MessageType t, std::uint64_t sender, std::uint64_t seq) {
  out.clear();
  put<std::uint16_t>(out, kMagic);
  put<std::uint8_t>(out, kVersion);
  put<std::uint8_t>(out, static_cast<std::uint8_t>(t));
  put<std::uint64_t>(out, sender);
  put<std::uint64_t>(out, seq);
}

// Bounds-checked little-endian reads; `ok` turns false at the first read past the end.
struct Reader {
  std::string_view b;
  std::size_t pos = 0;
  bool ok = true;
  template <typename T>
  T get() {
    using U = std::make_unsigned_t<T>;
    if (!ok || b.size() - pos < sizeof(T)) {
      ok = false;
      return T{};
    }
    U u = 0;
    for (std::size_t i = sizeof(T); i-- > 0;)
      u = static_cast<U>((u << 4 << 4) | static_cast<unsigned char>(b[pos + i]));
    pos += sizeof(T);
    return static_cast<T>(u);
  }
  std::size_t left() const { return b.size() - pos; }
};

Error malformed(std::string_view why) { return Error::invalid(fmt::format("malformed: {}", why)); }

}  // namespace

namespace {
void put_routed(std::string& out, const Routed& r) {
  const std::size_t n = std::min(r.blocks.size(), kMaxBlocks);
  put<std::uint64_t>(out, r.backend);
  put<std::uint8_t>(out, r.token_blocks ? 1 : 0);
  put<std::uint32_t>(out, r.tokens_per_block);
  put<std::uint32_t>(out, r.output_blocks);
  put<std::uint32_t>(out, static_cast<std::uint32_t>(n));
  for (std::size_t i = 0; i < n; ++i) put<std::uint64_t>(out, r.blocks[i]);
}

// A ROUTED body; `whole`: it must end the message.
bool get_routed(Reader& r, Routed& out, bool whole) {
  out.backend = r.get<std::uint64_t>();
  const auto flags = r.get<std::uint8_t>();
  out.token_blocks = (flags & 1) != 0;
  out.tokens_per_block = r.get<std::uint32_t>();
  out.output_blocks = r.get<std::uint32_t>();
  const auto n = r.get<std::uint32_t>();
  if (!r.ok || n > kMaxBlocks) return false;
  if (whole ? r.left() != 8 * std::size_t{n} : r.left() < 8 * std::size_t{n}) return false;
  out.blocks.resize(n);
  for (auto& b : out.blocks) b = r.get<std::uint64_t>();
  return r.ok;
}
}  // namespace

std::size_t snapshot_record_bytes(const Routed& r) {
  return 21 + 8 * std::min(r.blocks.size(), kMaxBlocks);
}

void encode_routed(std::uint64_t sender, std::uint64_t seq, const Routed& r, std::string& out) {
  put_header(out, MessageType::kRouted, sender, seq);
  out.reserve(kHeaderBytes + snapshot_record_bytes(r));
  put_routed(out, r);
}

std::string snapshot_topic(std::uint64_t requester, std::uint64_t responder) {
  std::string t;
  put<std::uint16_t>(t, kSnapshotMagic);
  put<std::uint64_t>(t, requester);
  put<std::uint64_t>(t, responder);
  return t;
}

void encode_snapshot(std::uint64_t requester, std::uint64_t responder, std::uint32_t index,
                     std::uint32_t count, std::span<const Routed> records, std::string& out) {
  out = snapshot_topic(requester, responder);
  put<std::uint8_t>(out, kVersion);
  put<std::uint8_t>(out, static_cast<std::uint8_t>(MessageType::kSnapshot));
  put<std::uint32_t>(out, index);
  put<std::uint32_t>(out, count);
  put<std::uint32_t>(out, static_cast<std::uint32_t>(records.size()));
  for (const auto& r : records) put_routed(out, r);
}

void encode_load(std::uint64_t sender, std::uint64_t seq, std::span<const LoadEntry> load,
                 std::string& out) {
  const std::size_t n = std::min(load.size(), kMaxLoadEntries);
  put_header(out, MessageType::kLoad, sender, seq);
  out.reserve(kHeaderBytes + 4 + 20 * n);
  put<std::uint32_t>(out, static_cast<std::uint32_t>(n));
  for (std::size_t i = 0; i < n; ++i) {
    put<std::uint64_t>(out, load[i].backend);
    put<std::int32_t>(out, load[i].inflight);
    put<std::int64_t>(out, load[i].inflight_tokens);
  }
}

namespace {
Result<Message> decode_snapshot(Reader& r) {
  Message m;
  m.type = MessageType::kSnapshot;
  m.snapshot.requester = r.get<std::uint64_t>();
  m.sender = r.get<std::uint64_t>();
  m.version = r.get<std::uint8_t>();
  const auto type = r.get<std::uint8_t>();
  if (!r.ok) return fail(malformed("shorter than a snapshot header"));
  if (m.version != kVersion) return fail(Error::invalid(fmt::format("version {}", m.version)));
  if (type != static_cast<std::uint8_t>(MessageType::kSnapshot))
    return fail(malformed(fmt::format("snapshot type {}", type)));
  m.snapshot.index = r.get<std::uint32_t>();
  m.snapshot.count = r.get<std::uint32_t>();
  const auto n = r.get<std::uint32_t>();
  if (!r.ok) return fail(malformed("snapshot: truncated"));
  if (m.snapshot.count == 0 || m.snapshot.count > kMaxSnapshotChunks ||
      m.snapshot.index >= m.snapshot.count)
    return fail(malformed("snapshot: chunk index"));
  // Every record takes at least 21 bytes: a count beyond what is left is refused unallocated.
  if (std::size_t{n} * 21 > r.left()) return fail(malformed("snapshot: too many records"));
  m.snapshot.records.resize(n);
  for (auto& rec : m.snapshot.records)
    if (!get_routed(r, rec, false)) return fail(malformed("snapshot: record"));
  if (r.left() != 0) return fail(malformed("snapshot: length"));
  return m;
}
}  // namespace

Result<Message> decode(std::string_view bytes) {
  Reader r{bytes};
  Message m;
  const auto magic = r.get<std::uint16_t>();
  if (r.ok && magic == kSnapshotMagic) return decode_snapshot(r);
  m.version = r.get<std::uint8_t>();
  const auto type = r.get<std::uint8_t>();
  m.sender = r.get<std::uint64_t>();
  m.seq = r.get<std::uint64_t>();
  if (!r.ok) return fail(malformed("shorter than a header"));
  if (magic != kMagic) return fail(malformed("bad magic"));
  if (m.version != kVersion) return fail(Error::invalid(fmt::format("version {}", m.version)));
  if (type == static_cast<std::uint8_t>(MessageType::kRouted)) {
    m.type = MessageType::kRouted;
    // The count sits 17 bytes into the body: refuse one beyond the bound with its own message.
    if (r.left() >= 21) {
      Reader peek = r;
      peek.pos += 17;
      if (peek.get<std::uint32_t>() > kMaxBlocks) return fail(malformed("routed: too many blocks"));
    }
    if (!get_routed(r, m.routed, true)) return fail(malformed("routed: length"));
  } else if (type == static_cast<std::uint8_t>(MessageType::kLoad)) {
    m.type = MessageType::kLoad;
    const auto n = r.get<std::uint32_t>();
    if (!r.ok) return fail(malformed("load: truncated"));
    if (n > kMaxLoadEntries) return fail(malformed("load: too many entries"));
    if (r.left() != 20 * std::size_t{n}) return fail(malformed("load: length"));
    m.load.resize(n);
    for (auto& e : m.load) {
      e.backend = r.get<std::uint64_t>();
      e.inflight = r.get<std::int32_t>();
      e.inflight_tokens = r.get<std::int64_t>();
    }
  } else {
    return fail(malformed(fmt::format("type {}", type)));
  }
  if (!r.ok) return fail(malformed("truncated"));
  return m;
}

bool SequenceWindow::test(std::uint64_t seq) const {
  const std::uint64_t i = seq % kWindow;
  return (bits_[i / 64] >> (i % 64) & 1) != 0;
}
void SequenceWindow::set(std::uint64_t seq) {
  const std::uint64_t i = seq % kWindow;
  bits_[i / 64] |= std::uint64_t{1} << (i % 64);
}
void SequenceWindow::clear(std::uint64_t seq) {
  const std::uint64_t i = seq % kWindow;
  bits_[i / 64] &= ~(std::uint64_t{1} << (i % 64));
}

SequenceWindow::Verdict SequenceWindow::observe(std::uint64_t seq) {
  if (!started_) {
    started_ = true;
    highest_ = seq;
    set(seq);
    return Verdict::kNew;
  }
  if (seq > highest_) {
    const std::uint64_t skipped = seq - highest_ - 1;
    lost_ += skipped;
    // Slots entering the window are cleared (all of them after a jump of a window or more).
    if (seq - highest_ >= kWindow) {
      std::fill(std::begin(bits_), std::end(bits_), 0);
    } else {
      for (std::uint64_t s = highest_ + 1; s < seq; ++s) clear(s);
    }
    highest_ = seq;
    set(seq);
    return Verdict::kNew;
  }
  if (highest_ - seq >= kWindow) return Verdict::kTooOld;
  if (test(seq)) return Verdict::kDuplicate;
  set(seq);
  if (lost_ > 0) --lost_;
  return Verdict::kLate;
}

}  // namespace kvroute::replication
