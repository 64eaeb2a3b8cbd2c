// File: kv_events/codec.cc
//
// Hand-written msgpack writer and bounds-checked reader for vLLM event batches (see codec.h).
#include "kv_events/codec.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <type_traits>

namespace kvroute::kv_events {
namespace {

// ---------------------------------------------------------------------------------------------
// Writer: msgspec's smallest forms.

class Writer {
 public:
  explicit Writer(std::string& out) : out_(out) {}

  void byte(std::uint8_t b) { out_.push_back(static_cast<char>(b)); }
  void be(std::uint64_t v, int n) {
    char buf[8];
    for (int i = 0; i < n; ++i) buf[i] = static_cast<char>(v >> (8 * (n - 1 - i)));
    out_.append(buf, static_cast<std::size_t>(n));
  }
  void nil() { byte(0xc0); }
  void uint(std::uint64_t v) {
    if (v < 0x80) {
      byte(static_cast<std::uint8_t>(v));
    } else if (v <= 0xff) {
      byte(0xcc);
      be(v, 1);
    } else if (v <= 0xffff) {
      byte(0xcd);
      be(v, 2);
    } else if (v <= 0xffffffffULL) {
      byte(0xce);
      be(v, 4);
    } else {
      byte(0xcf);
      be(v, 8);
    }
  }
  void sint(std::int64_t v) {
    if (v >= 0) return uint(static_cast<std::uint64_t>(v));
    const auto u = static_cast<std::uint64_t>(v);
    if (v >= -32) {
      byte(static_cast<std::uint8_t>(u));
    } else if (v >= INT8_MIN) {
      byte(0xd0);
      be(u, 1);
    } else if (v >= INT16_MIN) {
      byte(0xd1);
      be(u, 2);
    } else if (v >= INT32_MIN) {
      byte(0xd2);
      be(u, 4);
    } else {
      byte(0xd3);
      be(u, 8);
    }
  }
  void f64(double d) {
    byte(0xcb);
    be(std::bit_cast<std::uint64_t>(d), 8);
  }
  void str(std::string_view s) {
    const auto n = s.size();
    if (n <= 31) {
      byte(static_cast<std::uint8_t>(0xa0 | n));
    } else if (n <= 0xff) {
      byte(0xd9);
      be(n, 1);
    } else if (n <= 0xffff) {
      byte(0xda);
      be(n, 2);
    } else {
      byte(0xdb);
      be(n, 4);
    }
    out_.append(s);
  }
  void array(std::size_t n) {
    if (n <= 15) {
      byte(static_cast<std::uint8_t>(0x90 | n));
    } else if (n <= 0xffff) {
      byte(0xdc);
      be(n, 2);
    } else {
      byte(0xdd);
      be(n, 4);
    }
  }
  void map(std::size_t n) {
    if (n <= 15) {
      byte(static_cast<std::uint8_t>(0x80 | n));
    } else if (n <= 0xffff) {
      byte(0xde);
      be(n, 2);
    } else {
      byte(0xdf);
      be(n, 4);
    }
  }
  void raw(std::string_view bytes) { out_.append(bytes); }

  void opt_int(const std::optional<std::int64_t>& v) { v ? sint(*v) : nil(); }
  void opt_uint(const std::optional<std::uint64_t>& v) { v ? uint(*v) : nil(); }
  void opt_str(const std::optional<std::string>& v) { v ? str(*v) : nil(); }
  void hashes(const std::vector<std::uint64_t>& hs) {
    array(hs.size());
    for (auto h : hs) uint(h);
  }
  void tokens(const std::vector<std::uint32_t>& ts) {
    array(ts.size());
    for (auto t : ts) uint(t);
  }
  void extra_keys(const std::vector<std::string>& ek) {
    if (ek.empty()) return nil();
    array(ek.size());
    for (const auto& e : ek) e.empty() ? nil() : raw(e);
  }

 private:
  std::string& out_;
};

void encode_stored(const BlockStored& e, Encoding enc, Writer& w) {
  if (enc == Encoding::kMap) {
    std::size_t n = 8 + (e.extra_keys.empty() ? 0 : 1) + (e.group_idx ? 1 : 0) +
                    (e.kv_cache_spec_kind ? 1 : 0) + (e.kv_cache_spec_sliding_window ? 1 : 0);
    w.map(n);
    w.str("type");
    w.str("BlockStored");
    w.str("block_hashes");
    w.hashes(e.block_hashes);
    w.str("parent_block_hash");
    w.opt_uint(e.parent_block_hash);
    w.str("token_ids");
    w.tokens(e.token_ids);
    w.str("block_size");
    w.uint(e.block_size);
    w.str("lora_id");
    w.opt_int(e.lora_id);
    w.str("medium");
    w.opt_str(e.medium);
    w.str("lora_name");
    w.opt_str(e.lora_name);
    if (!e.extra_keys.empty()) {
      w.str("extra_keys");
      w.extra_keys(e.extra_keys);
    }
    if (e.group_idx) {
      w.str("group_idx");
      w.sint(*e.group_idx);
    }
    if (e.kv_cache_spec_kind) {
      w.str("kv_cache_spec_kind");
      w.str(*e.kv_cache_spec_kind);
    }
    if (e.kv_cache_spec_sliding_window) {
      w.str("kv_cache_spec_sliding_window");
      w.sint(*e.kv_cache_spec_sliding_window);
    }
    return;
  }
  std::size_t n = 8;
  if (enc == Encoding::kArrayV0_9) {
    n = 6;
  } else if (e.kv_cache_spec_sliding_window) {
    n = 12;
  } else if (e.kv_cache_spec_kind) {
    n = 11;
  } else if (e.group_idx) {
    n = 10;
  } else if (!e.extra_keys.empty()) {
    n = 9;
  }
  w.array(n);
  w.str("BlockStored");
  w.hashes(e.block_hashes);
  w.opt_uint(e.parent_block_hash);
  w.tokens(e.token_ids);
  w.uint(e.block_size);
  w.opt_int(e.lora_id);
  if (n == 6) return;
  w.opt_str(e.medium);
  w.opt_str(e.lora_name);
  if (n > 8) w.extra_keys(e.extra_keys);
  if (n > 9) w.opt_int(e.group_idx);
  if (n > 10) w.opt_str(e.kv_cache_spec_kind);
  if (n > 11) w.opt_int(e.kv_cache_spec_sliding_window);
}

void encode_removed(const BlockRemoved& e, Encoding enc, Writer& w) {
  if (enc == Encoding::kMap) {
    w.map(e.group_idx ? 4 : 3);
    w.str("type");
    w.str("BlockRemoved");
    w.str("block_hashes");
    w.hashes(e.block_hashes);
    w.str("medium");
    w.opt_str(e.medium);
    if (e.group_idx) {
      w.str("group_idx");
      w.sint(*e.group_idx);
    }
    return;
  }
  const std::size_t n = enc == Encoding::kArrayV0_9 ? 2 : (e.group_idx ? 4 : 3);
  w.array(n);
  w.str("BlockRemoved");
  w.hashes(e.block_hashes);
  if (n > 2) w.opt_str(e.medium);
  if (n > 3) w.sint(*e.group_idx);
}

// ---------------------------------------------------------------------------------------------
// Reader: every access bounds-checked; on failure `err_` names the problem.

class Reader {
 public:
  explicit Reader(std::string_view in)
      : p_(reinterpret_cast<const std::uint8_t*>(in.data())), end_(p_ + in.size()) {}

  [[nodiscard]] std::size_t remaining() const { return static_cast<std::size_t>(end_ - p_); }
  [[nodiscard]] bool at_end() const { return p_ == end_; }
  [[nodiscard]] const char* pos() const { return reinterpret_cast<const char*>(p_); }
  [[nodiscard]] const char* error() const { return err_; }

  bool fail(const char* what) {
    if (err_ == nullptr) err_ = what;
    return false;
  }

  bool peek(std::uint8_t& b) {
    if (p_ == end_) return fail("truncated");
    b = *p_;
    return true;
  }
  // True (and consumes) when the next value is nil.
  bool take_nil() {
    if (p_ != end_ && *p_ == 0xc0) {
      ++p_;
      return true;
    }
    return false;
  }

  bool be(int n, std::uint64_t& v) {
    if (remaining() < static_cast<std::size_t>(n)) return fail("truncated");
    v = 0;
    for (int i = 0; i < n; ++i) v = (v << 8) | p_[i];
    p_ += n;
    return true;
  }

  bool array(std::uint32_t& n) {
    std::uint8_t b;
    if (!peek(b)) return false;
    std::uint64_t v;
    if ((b & 0xf0) == 0x90) {
      ++p_;
      v = b & 0x0f;
    } else if (b == 0xdc) {
      ++p_;
      if (!be(2, v)) return false;
    } else if (b == 0xdd) {
      ++p_;
      if (!be(4, v)) return false;
    } else {
      return fail("expected array");
    }
    if (v > remaining()) return fail("array length exceeds input");
    n = static_cast<std::uint32_t>(v);
    return true;
  }

  bool map(std::uint32_t& n) {
    std::uint8_t b;
    if (!peek(b)) return false;
    std::uint64_t v;
    if ((b & 0xf0) == 0x80) {
      ++p_;
      v = b & 0x0f;
    } else if (b == 0xde) {
      ++p_;
      if (!be(2, v)) return false;
    } else if (b == 0xdf) {
      ++p_;
      if (!be(4, v)) return false;
    } else {
      return fail("expected map");
    }
    if (v * 2 > remaining()) return fail("map length exceeds input");
    n = static_cast<std::uint32_t>(v);
    return true;
  }

  bool str(std::string_view& s) {
    std::uint8_t b;
    if (!peek(b)) return false;
    std::uint64_t n;
    if ((b & 0xe0) == 0xa0) {
      ++p_;
      n = b & 0x1f;
    } else if (b == 0xd9 || b == 0xda || b == 0xdb) {
      ++p_;
      if (!be(1 << (b - 0xd9), n)) return false;
    } else {
      return fail("expected str");
    }
    if (n > remaining()) return fail("truncated str");
    s = std::string_view(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return true;
  }

  bool opt_str(std::optional<std::string>& out) {
    if (take_nil()) {
      out.reset();
      return true;
    }
    std::string_view s;
    if (!str(s)) return false;
    out.emplace(s);
    return true;
  }

  // Any msgpack int: `neg` tells whether it is negative; `v` holds the two's-complement bits.
  bool integer(std::uint64_t& v, bool& neg) {
    std::uint8_t b;
    if (!peek(b)) return false;
    neg = false;
    if (b < 0x80) {
      ++p_;
      v = b;
      return true;
    }
    if (b >= 0xe0) {
      ++p_;
      v = static_cast<std::uint64_t>(static_cast<std::int64_t>(static_cast<std::int8_t>(b)));
      neg = true;
      return true;
    }
    if (b >= 0xcc && b <= 0xcf) {
      ++p_;
      return be(1 << (b - 0xcc), v);
    }
    if (b >= 0xd0 && b <= 0xd3) {
      ++p_;
      const int n = 1 << (b - 0xd0);
      if (!be(n, v)) return false;
      // Sign-extend from n bytes.
      if (n < 8) {
        const int shift = 64 - 8 * n;
        v = static_cast<std::uint64_t>(static_cast<std::int64_t>(v << shift) >> shift);
      }
      neg = static_cast<std::int64_t>(v) < 0;
      return true;
    }
    return fail("expected int");
  }

  bool uint_max(std::uint64_t max, std::uint64_t& v) {
    bool neg;
    if (!integer(v, neg)) return false;
    if (neg || v > max) return fail("int out of range");
    return true;
  }

  bool sint(std::int64_t& v) {
    std::uint64_t u;
    bool neg;
    if (!integer(u, neg)) return false;
    if (!neg && u > static_cast<std::uint64_t>(INT64_MAX)) return fail("int out of range");
    v = static_cast<std::int64_t>(u);
    return true;
  }

  bool opt_sint(std::optional<std::int64_t>& out) {
    if (take_nil()) {
      out.reset();
      return true;
    }
    std::int64_t v;
    if (!sint(v)) return false;
    out = v;
    return true;
  }

  bool hash(std::uint64_t& v) {
    std::uint8_t b;
    if (!peek(b)) return false;
    if (b == 0xc4 || b == 0xc5 || b == 0xc6) {
      ++p_;
      std::uint64_t n;
      if (!be(1 << (b - 0xc4), n)) return false;
      if (n > remaining()) return fail("truncated bin");
      const std::size_t take = n < 8 ? n : 8;
      const std::uint8_t* q = p_ + n - take;
      v = 0;
      for (std::size_t i = 0; i < take; ++i) v = (v << 8) | q[i];
      p_ += n;
      return true;
    }
    bool neg;
    return integer(v, neg);  // signed values reinterpret as uint64
  }

  bool opt_hash(std::optional<std::uint64_t>& out) {
    if (take_nil()) {
      out.reset();
      return true;
    }
    std::uint64_t v;
    if (!hash(v)) return false;
    out = v;
    return true;
  }

  bool number(double& d) {
    std::uint8_t b;
    if (!peek(b)) return false;
    if (b == 0xcb) {
      ++p_;
      std::uint64_t v;
      if (!be(8, v)) return false;
      d = std::bit_cast<double>(v);
      return true;
    }
    if (b == 0xca) {
      ++p_;
      std::uint64_t v;
      if (!be(4, v)) return false;
      d = std::bit_cast<float>(static_cast<std::uint32_t>(v));
      return true;
    }
    std::uint64_t v;
    bool neg;
    if (!integer(v, neg)) return fail("expected number");
    d = neg ? static_cast<double>(static_cast<std::int64_t>(v)) : static_cast<double>(v);
    return true;
  }

  // Skips one value of any type.
  bool skip(int depth) {
    if (depth > kMaxDepth) return fail("nesting too deep");
    std::uint8_t b;
    if (!peek(b)) return false;
    std::uint32_t n;
    if ((b & 0xf0) == 0x90 || b == 0xdc || b == 0xdd) {
      if (!array(n)) return false;
      for (std::uint32_t i = 0; i < n; ++i)
        if (!skip(depth + 1)) return false;
      return true;
    }
    if ((b & 0xf0) == 0x80 || b == 0xde || b == 0xdf) {
      if (!map(n)) return false;
      for (std::uint32_t i = 0; i < 2 * n; ++i)
        if (!skip(depth + 1)) return false;
      return true;
    }
    std::size_t len = 0;  // payload bytes after the header
    std::uint64_t v;
    if (b < 0x80 || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
      ++p_;
      return true;
    }
    ++p_;
    switch (b) {
      case 0xcc:
      case 0xd0:
        len = 1;
        break;
      case 0xcd:
      case 0xd1:
        len = 2;
        break;
      case 0xce:
      case 0xd2:
      case 0xca:
        len = 4;
        break;
      case 0xcf:
      case 0xd3:
      case 0xcb:
        len = 8;
        break;
      case 0xd4:
        len = 2;
        break;  // fixext 1 (type + 1)
      case 0xd5:
        len = 3;
        break;
      case 0xd6:
        len = 5;
        break;
      case 0xd7:
        len = 9;
        break;
      case 0xd8:
        len = 17;
        break;
      case 0xc4:
      case 0xd9:
        if (!be(1, v)) return false;
        len = v;
        break;
      case 0xc5:
      case 0xda:
        if (!be(2, v)) return false;
        len = v;
        break;
      case 0xc6:
      case 0xdb:
        if (!be(4, v)) return false;
        len = v;
        break;
      case 0xc7:
        if (!be(1, v)) return false;
        len = v + 1;
        break;
      case 0xc8:
        if (!be(2, v)) return false;
        len = v + 1;
        break;
      case 0xc9:
        if (!be(4, v)) return false;
        len = v + 1;
        break;
      default:
        if ((b & 0xe0) == 0xa0) {
          len = b & 0x1f;
          break;
        }
        return fail("invalid msgpack type byte");  // 0xc1
    }
    if (len > remaining()) return fail("truncated value");
    p_ += len;
    return true;
  }

  // Skips one value and returns its raw bytes.
  bool raw(std::string_view& out, int depth) {
    const char* start = pos();
    if (!skip(depth)) return false;
    out = std::string_view(start, static_cast<std::size_t>(pos() - start));
    return true;
  }

  bool hashes(std::vector<std::uint64_t>& out) {
    out.clear();
    if (take_nil()) return true;
    std::uint32_t n;
    if (!array(n)) return false;
    out.resize(n);
    for (std::uint32_t i = 0; i < n; ++i)
      if (!hash(out[i])) return false;
    return true;
  }

  bool tokens(std::vector<std::uint32_t>& out) {
    out.clear();
    if (take_nil()) return true;
    std::uint32_t n;
    if (!array(n)) return false;
    out.resize(n);
    // Fast paths on local pointers (stores through `out` would otherwise force reloads of p_):
    // positive fixint, uint16 and uint32 (a 128k vocabulary makes most ids uint32).
    std::uint32_t* dst = out.data();
    const std::uint8_t* q = p_;
    const std::uint8_t* const end = end_;
    std::uint32_t i = 0;
    for (; i < n; ++i) {
      const std::size_t left = static_cast<std::size_t>(end - q);
      if (left >= 5 && *q == 0xce) {
        dst[i] = (std::uint32_t{q[1]} << 24) | (std::uint32_t{q[2]} << 16) |
                 (std::uint32_t{q[3]} << 8) | q[4];
        q += 5;
      } else if (left >= 1 && *q < 0x80) {
        dst[i] = *q++;
      } else if (left >= 3 && *q == 0xcd) {
        dst[i] = (std::uint32_t{q[1]} << 8) | q[2];
        q += 3;
      } else {
        break;
      }
    }
    p_ = q;
    for (; i < n; ++i) {  // anything else (uint8, wider ints, errors): the general reader
      std::uint64_t v;
      if (!uint_max(0xffffffffULL, v)) return fail("token id out of range");
      out[i] = static_cast<std::uint32_t>(v);
    }
    return true;
  }

  bool block_size(std::uint32_t& out) {
    if (take_nil()) {
      out = 0;
      return true;
    }
    std::uint64_t v;
    if (!uint_max(0xffffffffULL, v)) return false;
    out = static_cast<std::uint32_t>(v);
    return true;
  }

  bool extra_keys(std::vector<std::string>& out) {
    out.clear();
    if (take_nil()) return true;
    std::uint32_t n;
    if (!array(n)) return false;
    out.resize(n);
    for (std::uint32_t i = 0; i < n; ++i) {
      std::string_view r;
      if (!raw(r, 2)) return false;
      out[i].assign(r);
    }
    return true;
  }

 private:
  const std::uint8_t* p_;
  const std::uint8_t* end_;
  const char* err_ = nullptr;
};

enum class Tag { kStored, kRemoved, kCleared, kUnknown };

Tag tag_of(std::string_view s) {
  if (s == "BlockStored") return Tag::kStored;
  if (s == "BlockRemoved") return Tag::kRemoved;
  if (s == "AllBlocksCleared") return Tag::kCleared;
  return Tag::kUnknown;
}

// Positional BlockStored fields 1.. (the tag at 0 is already read); `n` is the array length.
bool read_stored_array(Reader& r, std::uint32_t n, BlockStored& e, DecodeStats& st) {
  if (n < 5) return r.fail("BlockStored array too short");
  if (!r.hashes(e.block_hashes) || !r.opt_hash(e.parent_block_hash) || !r.tokens(e.token_ids) ||
      !r.block_size(e.block_size))
    return false;
  for (std::uint32_t i = 5; i < n; ++i) {
    bool ok = true;
    switch (i) {
      case 5:
        ok = r.opt_sint(e.lora_id);
        break;
      case 6:
        ok = r.opt_str(e.medium);
        break;
      case 7:
        ok = r.opt_str(e.lora_name);
        break;
      case 8:
        ok = r.extra_keys(e.extra_keys);
        break;
      case 9:
        ok = r.opt_sint(e.group_idx);
        break;
      case 10:
        ok = r.opt_str(e.kv_cache_spec_kind);
        break;
      case 11:
        ok = r.opt_sint(e.kv_cache_spec_sliding_window);
        break;
      default:
        ++st.ignored_fields;
        ok = r.skip(1);
    }
    if (!ok) return false;
  }
  return true;
}

bool read_removed_array(Reader& r, std::uint32_t n, BlockRemoved& e, DecodeStats& st) {
  if (n < 2) return r.fail("BlockRemoved array too short");
  if (!r.hashes(e.block_hashes)) return false;
  for (std::uint32_t i = 2; i < n; ++i) {
    bool ok = true;
    switch (i) {
      case 2:
        ok = r.opt_str(e.medium);
        break;
      case 3:
        ok = r.opt_sint(e.group_idx);
        break;
      default:
        ++st.ignored_fields;
        ok = r.skip(1);
    }
    if (!ok) return false;
  }
  return true;
}

// Reads the value of map key `k` into the event of kind `tag`; unknown keys are skipped.
bool read_map_field(Reader& r, std::string_view k, Tag tag, Event& ev, DecodeStats& st) {
  if (k == "type") return r.skip(1);  // already known
  if (tag == Tag::kStored) {
    auto& e = std::get<BlockStored>(ev);
    if (k == "block_hashes") return r.hashes(e.block_hashes);
    if (k == "parent_block_hash") return r.opt_hash(e.parent_block_hash);
    if (k == "token_ids") return r.tokens(e.token_ids);
    if (k == "block_size") return r.block_size(e.block_size);
    if (k == "lora_id") return r.opt_sint(e.lora_id);
    if (k == "medium") return r.opt_str(e.medium);
    if (k == "lora_name") return r.opt_str(e.lora_name);
    if (k == "extra_keys") return r.extra_keys(e.extra_keys);
    if (k == "group_idx") return r.opt_sint(e.group_idx);
    if (k == "kv_cache_spec_kind") return r.opt_str(e.kv_cache_spec_kind);
    if (k == "kv_cache_spec_sliding_window") return r.opt_sint(e.kv_cache_spec_sliding_window);
  } else if (tag == Tag::kRemoved) {
    auto& e = std::get<BlockRemoved>(ev);
    if (k == "block_hashes") return r.hashes(e.block_hashes);
    if (k == "medium") return r.opt_str(e.medium);
    if (k == "group_idx") return r.opt_sint(e.group_idx);
  }
  ++st.ignored_fields;
  return r.skip(1);
}

// Event storage is reused across decode_batch_into calls: the k-th event of a batch is decoded into
// the k-th element of the previous batch when it holds the same kind, so its vectors keep their
// capacity and a steady stream decodes without allocating (1-block events were malloc-bound).
void reset_event(BlockStored& e) {
  e.block_hashes.clear();
  e.parent_block_hash.reset();
  e.token_ids.clear();
  e.block_size = 16;
  e.lora_id.reset();
  e.medium.reset();
  e.lora_name.reset();
  e.group_idx.reset();
  e.extra_keys.clear();
  e.kv_cache_spec_kind.reset();
  e.kv_cache_spec_sliding_window.reset();
}
void reset_event(BlockRemoved& e) {
  e.block_hashes.clear();
  e.medium.reset();
  e.group_idx.reset();
}
void reset_event(AllBlocksCleared&) {}

// The k-th event slot of `out`, holding a reset T; `k` counts the slots used so far.
template <typename T>
T& event_slot(std::vector<Event>& out, std::size_t k) {
  if (k < out.size()) {
    if (auto* p = std::get_if<T>(&out[k])) {
      reset_event(*p);
      return *p;
    }
    return out[k].template emplace<T>();
  }
  return std::get<T>(out.emplace_back(std::in_place_type<T>));
}

// Decodes the next event into slot `used` of `out` and advances `used`, unless its tag is unknown
// (then it is skipped and counted).
bool read_event(Reader& r, std::vector<Event>& out, std::size_t& used, DecodeStats& st) {
  std::uint8_t b;
  if (!r.peek(b)) return false;
  std::uint32_t n;
  const bool is_array = (b & 0xf0) == 0x90 || b == 0xdc || b == 0xdd;
  const bool is_map = (b & 0xf0) == 0x80 || b == 0xde || b == 0xdf;
  if (is_array) {
    if (!r.array(n)) return false;
    if (n == 0) return r.fail("empty event array");
    if (!r.peek(b)) return false;
    // msgspec writes the tag as a str; anything else is not an event of a newer vLLM but garbage.
    if ((b & 0xe0) != 0xa0 && b != 0xd9 && b != 0xda && b != 0xdb)
      return r.fail("event tag is not a string");
    std::string_view tag_str;
    if (!r.str(tag_str)) return false;
    switch (tag_of(tag_str)) {
      case Tag::kStored: {
        BlockStored& e = event_slot<BlockStored>(out, used++);
        if (!read_stored_array(r, n, e, st)) return false;
        st.blocks += static_cast<std::uint32_t>(e.block_hashes.size());
        break;
      }
      case Tag::kRemoved: {
        BlockRemoved& e = event_slot<BlockRemoved>(out, used++);
        if (!read_removed_array(r, n, e, st)) return false;
        break;
      }
      case Tag::kCleared:
        for (std::uint32_t i = 1; i < n; ++i) {
          ++st.ignored_fields;
          if (!r.skip(1)) return false;
        }
        event_slot<AllBlocksCleared>(out, used++);
        break;
      case Tag::kUnknown:
        for (std::uint32_t i = 1; i < n; ++i)
          if (!r.skip(1)) return false;
        ++st.unknown_events;
        return true;
    }
    ++st.events;
    return true;
  }
  if (!is_map) return r.fail("event is neither array nor map");

  // Map event. msgspec writes "type" first; otherwise look ahead for it.
  if (!r.map(n)) return false;
  Tag tag = Tag::kUnknown;
  bool found = false;
  {
    Reader look = r;
    for (std::uint32_t i = 0; i < n && !found; ++i) {
      std::uint8_t kb;
      if (!look.peek(kb)) return r.fail(look.error());
      std::string_view k;
      if ((kb & 0xe0) == 0xa0 || kb == 0xd9 || kb == 0xda || kb == 0xdb) {
        if (!look.str(k)) return r.fail(look.error());
      } else if (!look.skip(1)) {
        return r.fail(look.error());
      }
      if (k == "type") {
        std::uint8_t vb;
        if (!look.peek(vb)) return r.fail(look.error());
        if ((vb & 0xe0) != 0xa0 && vb != 0xd9 && vb != 0xda && vb != 0xdb)
          return r.fail("event \"type\" is not a string");
        std::string_view v;
        if (!look.str(v)) return r.fail(look.error());
        tag = tag_of(v);
        found = true;
      } else if (!look.skip(1)) {
        return r.fail(look.error());
      }
    }
  }
  if (tag == Tag::kUnknown) {
    for (std::uint32_t i = 0; i < 2 * n; ++i)
      if (!r.skip(1)) return false;
    ++st.unknown_events;
    return true;
  }
  const std::size_t slot = used++;
  if (tag == Tag::kStored) {
    event_slot<BlockStored>(out, slot).block_size = 0;  // absent key => 0
  } else if (tag == Tag::kRemoved) {
    event_slot<BlockRemoved>(out, slot);
  } else {
    event_slot<AllBlocksCleared>(out, slot);
  }
  Event& ev = out[slot];
  for (std::uint32_t i = 0; i < n; ++i) {
    std::string_view k;
    std::uint8_t kb;
    if (!r.peek(kb)) return false;
    if ((kb & 0xe0) == 0xa0 || kb == 0xd9 || kb == 0xda || kb == 0xdb) {
      if (!r.str(k)) return false;
    } else {
      if (!r.skip(1)) return false;
      ++st.ignored_fields;
      if (!r.skip(1)) return false;
      continue;
    }
    if (!read_map_field(r, k, tag, ev, st)) return false;
  }
  if (tag == Tag::kStored)
    st.blocks += static_cast<std::uint32_t>(std::get<BlockStored>(ev).block_hashes.size());
  ++st.events;
  return true;
}

// Decodes the events array into `out`, reusing its elements (event_slot); on return `out` holds
// exactly the decoded events (on failure, some prefix of them).
bool read_events(Reader& r, std::vector<Event>& out, DecodeStats& st) {
  std::uint32_t n;
  if (!r.array(n)) {
    out.clear();
    return false;
  }
  // Every decoded event takes >= 18 input bytes (AllBlocksCleared), so this bounds memory.
  out.reserve(std::min<std::size_t>(n, r.remaining() / 18));
  std::size_t k = 0;
  bool ok = true;
  for (std::uint32_t i = 0; i < n && ok; ++i) ok = read_event(r, out, k, st);
  out.resize(k);  // event_slot grew `out` to at least k; drop the previous batch's extra events
  return ok;
}

bool read_batch(Reader& r, DecodedBatch& d) {
  std::uint8_t b;
  if (!r.peek(b)) return false;
  std::uint32_t n;
  auto& batch = d.batch;
  if ((b & 0xf0) == 0x90 || b == 0xdc || b == 0xdd) {
    if (!r.array(n)) return false;
    if (n < 2) return r.fail("batch array too short");
    if (!r.number(batch.ts) || !read_events(r, batch.events, d.stats)) return false;
    if (n > 2 && !r.opt_sint(batch.data_parallel_rank)) return false;
    for (std::uint32_t i = 3; i < n; ++i) {
      ++d.stats.ignored_fields;
      if (!r.skip(1)) return false;
    }
    return true;
  }
  if (!r.map(n)) return r.fail("batch is neither array nor map");
  bool have_events = false;
  for (std::uint32_t i = 0; i < n; ++i) {
    std::string_view k;
    if (!r.peek(b)) return false;
    if ((b & 0xe0) == 0xa0 || b == 0xd9 || b == 0xda || b == 0xdb) {
      if (!r.str(k)) return false;
    } else if (!r.skip(1)) {
      return false;
    }
    bool ok;
    if (k == "ts") {
      ok = r.take_nil() || r.number(batch.ts);
    } else if (k == "events") {
      ok = read_events(r, batch.events, d.stats);
      have_events = true;
    } else if (k == "data_parallel_rank") {
      ok = r.opt_sint(batch.data_parallel_rank);
    } else {
      ++d.stats.ignored_fields;
      ok = r.skip(1);
    }
    if (!ok) return false;
  }
  if (!have_events) return r.fail("batch map without events");
  return true;
}

}  // namespace

void encode_batch(const EventBatch& batch, Encoding encoding, std::string& out) {
  Writer w(out);
  const bool rank = encoding != Encoding::kArrayV0_9 && batch.data_parallel_rank.has_value();
  w.array(rank ? 3 : 2);
  w.f64(batch.ts);
  w.array(batch.events.size());
  for (const auto& ev : batch.events) {
    if (const auto* s = std::get_if<BlockStored>(&ev)) {
      encode_stored(*s, encoding, w);
    } else if (const auto* rm = std::get_if<BlockRemoved>(&ev)) {
      encode_removed(*rm, encoding, w);
    } else if (encoding == Encoding::kMap) {
      w.map(1);
      w.str("type");
      w.str("AllBlocksCleared");
    } else {
      w.array(1);
      w.str("AllBlocksCleared");
    }
  }
  if (rank) w.sint(*batch.data_parallel_rank);
}

std::string encode_batch(const EventBatch& batch, Encoding encoding) {
  std::string out;
  encode_batch(batch, encoding, out);
  return out;
}

const char* decode_batch_into(std::string_view bytes, DecodedBatch& out) {
  out.batch.ts = 0;
  // out.batch.events keeps its elements: read_events decodes into them (event_slot) and trims.
  out.batch.data_parallel_rank.reset();
  out.stats = {};
  Reader r(bytes);
  const char* err = !read_batch(r, out) ? (r.error() ? r.error() : "malformed batch")
                    : !r.at_end()       ? "trailing bytes"
                                        : nullptr;
  if (err != nullptr) out.batch.events.clear();  // never leave the previous batch's events behind
  return err;
}

Result<DecodedBatch> decode_batch(std::string_view bytes) {
  DecodedBatch d;
  if (const char* err = decode_batch_into(bytes, d))
    return fail(Error::invalid(std::string("kv event batch: ") + err));
  return d;
}

Result<std::uint64_t> decode_hash(std::string_view bytes) {
  Reader r(bytes);
  std::uint64_t v;
  if (!r.hash(v)) return fail(Error::invalid(std::string("hash: ") + r.error()));
  if (!r.at_end()) return fail(Error::invalid("hash: trailing bytes"));
  return v;
}

}  // namespace kvroute::kv_events
