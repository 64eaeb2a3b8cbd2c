// Tests for kv_events/codec.h: golden bytes (hand-encoded as msgspec encodes vLLM's events), round
// trips, every decode variant, hostile input, and a differential test against python3-msgpack in
// both directions.
#include "kv_events/codec.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

namespace kvroute::kv_events {
namespace {

std::string hex(std::string_view s) {
  static const char* d = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out.push_back(d[c >> 4]);
    out.push_back(d[c & 15]);
  }
  return out;
}

std::string unhex(std::string_view h) {
  std::string out;
  auto v = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  for (std::size_t i = 0; i + 1 < h.size(); i += 2)
    out.push_back(static_cast<char>(v(h[i]) * 16 + v(h[i + 1])));
  return out;
}

// Hex with spaces and "…" runs allowed, as written in the reference.
std::string golden(std::string_view spaced) {
  std::string h;
  for (char c : spaced)
    if (std::isxdigit(static_cast<unsigned char>(c)))
      h.push_back(static_cast<char>(std::tolower(c)));
  return unhex(h);
}

std::string strhex(std::string_view s) { return hex(s); }

BlockStored example_stored() {
  BlockStored s;
  s.block_hashes = {15760518052499183552ULL};
  for (std::uint32_t t = 1; t <= 16; ++t) s.token_ids.push_back(t);
  s.block_size = 16;
  s.medium = "GPU";
  return s;
}

EventBatch example_batch() {
  EventBatch b;
  b.ts = 1757500000.25;
  b.data_parallel_rank = 0;
  b.events.emplace_back(example_stored());
  return b;
}

const std::string kTokens16 = "dc0010 0102030405060708090a0b0c0d0e0f10";

TEST(CodecGolden, ArrayModeMatchesReference) {
  const std::string want = golden(
      "93 cb 41 da 30 54 98 10 00 00 91 98 ab 42 6c 6f 63 6b 53 74 6f 72 65 64"
      " 91 cf da b8 9b aa 7b 58 57 c0 c0" +
      kTokens16 + " 10 c0 a3 47 50 55 c0 00");
  ASSERT_EQ(want.size(), 62u);
  EXPECT_EQ(hex(encode_batch(example_batch(), Encoding::kArray)), hex(want));
}

TEST(CodecGolden, MapModeMatchesReference) {
  const std::string want = golden(
      "93 cb41da305498100000 91 88 a4" + strhex("type") + "ab" + strhex("BlockStored") + "ac" +
      strhex("block_hashes") + "91 cf dab89baa7b5857c0 b1" + strhex("parent_block_hash") + "c0 a9" +
      strhex("token_ids") + kTokens16 + "aa" + strhex("block_size") + "10 a7" + strhex("lora_id") +
      "c0 a6" + strhex("medium") + "a3" + strhex("GPU") + "a9" + strhex("lora_name") + "c0 00");
  ASSERT_EQ(want.size(), 144u);
  EXPECT_EQ(hex(encode_batch(example_batch(), Encoding::kMap)), hex(want));
}

TEST(CodecGolden, V090Shape) {
  const std::string want = golden("92 cb41da305498100000 91 96 ab" + strhex("BlockStored") +
                                  "91 cf dab89baa7b5857c0 c0" + kTokens16 + "10 c0");
  ASSERT_EQ(want.size(), 56u);
  EXPECT_EQ(hex(encode_batch(example_batch(), Encoding::kArrayV0_9)), hex(want));
  auto d = decode_batch(want);
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->batch.events.size(), 1u);
  const auto& s = std::get<BlockStored>(d->batch.events[0]);
  EXPECT_FALSE(s.medium);
  EXPECT_FALSE(d->batch.data_parallel_rank);
}

TEST(CodecGolden, RemovedAndCleared) {
  EventBatch b;
  b.ts = 1757500000.25;
  BlockRemoved r;
  r.block_hashes = {15760518052499183552ULL};
  r.medium = "GPU";
  b.events.emplace_back(r);
  b.events.emplace_back(AllBlocksCleared{});
  const std::string prefix = "92 cb41da305498100000 92";
  EXPECT_EQ(hex(encode_batch(b, Encoding::kArray)),
            hex(golden(prefix + "93 ac" + strhex("BlockRemoved") + "91 cf dab89baa7b5857c0 a3" +
                       strhex("GPU") + "91 b0" + strhex("AllBlocksCleared"))));
  EXPECT_EQ(
      hex(encode_batch(b, Encoding::kMap)),
      hex(golden(prefix + "83 a4" + strhex("type") + "ac" + strhex("BlockRemoved") + "ac" +
                 strhex("block_hashes") + "91 cf dab89baa7b5857c0 a6" + strhex("medium") + "a3" +
                 strhex("GPU") + "81 a4" + strhex("type") + "b0" + strhex("AllBlocksCleared"))));
}

// ---------------------------------------------------------------------------------------------

EventBatch rich_batch(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  EventBatch b;
  b.ts = 1757500000.0 + static_cast<double>(rng() % 100000) / 7.0;
  if (rng() % 2) b.data_parallel_rank = static_cast<std::int64_t>(rng() % 4);
  const int n = static_cast<int>(rng() % 6);
  for (int i = 0; i < n; ++i) {
    switch (rng() % 3) {
      case 0: {
        BlockStored s;
        const auto nb = 1 + rng() % 4;
        s.block_size = 16;
        for (std::size_t k = 0; k < nb; ++k) s.block_hashes.push_back(rng() >> (rng() % 64));
        for (std::size_t k = 0; k < nb * 16; ++k)
          s.token_ids.push_back(static_cast<std::uint32_t>(rng() >> (32 + rng() % 32)));
        if (rng() % 2) s.parent_block_hash = rng();
        if (rng() % 3 == 0) s.lora_id = static_cast<std::int64_t>(rng() % 300) - 100;
        if (rng() % 2) s.medium = rng() % 2 ? "GPU" : "CPU";
        if (rng() % 3 == 0) s.lora_name = "lora-" + std::to_string(rng() % 1000);
        if (rng() % 4 == 0) {
          for (std::size_t k = 0; k < nb; ++k)
            s.extra_keys.push_back(rng() % 2 ? std::string("\xc0") : golden("91 a3 616263"));
        }
        if (rng() % 3 == 0) s.group_idx = static_cast<std::int64_t>(rng() % 3);
        if (rng() % 4 == 0) s.kv_cache_spec_kind = "full_attention";
        if (rng() % 5 == 0)
          s.kv_cache_spec_sliding_window = static_cast<std::int64_t>(rng() % 70000);
        b.events.emplace_back(std::move(s));
        break;
      }
      case 1: {
        BlockRemoved r;
        for (std::size_t k = 0, nb = 1 + rng() % 3; k < nb; ++k) r.block_hashes.push_back(rng());
        if (rng() % 2) r.medium = "GPU";
        if (rng() % 3 == 0) r.group_idx = -static_cast<std::int64_t>(rng() % 200);
        b.events.emplace_back(std::move(r));
        break;
      }
      default:
        b.events.emplace_back(AllBlocksCleared{});
    }
  }
  return b;
}

TEST(CodecRoundTrip, ArrayAndMapModes) {
  for (std::uint64_t seed = 0; seed < 300; ++seed) {
    const EventBatch b = rich_batch(seed);
    for (Encoding enc : {Encoding::kArray, Encoding::kMap}) {
      const std::string bytes = encode_batch(b, enc);
      auto d = decode_batch(bytes);
      ASSERT_TRUE(d) << d.error().message;
      EXPECT_EQ(d->batch, b) << "seed " << seed;
      EXPECT_EQ(d->stats.unknown_events, 0u);
      EXPECT_EQ(d->stats.ignored_fields, 0u);
      EXPECT_EQ(d->stats.events, b.events.size());
    }
  }
}

TEST(CodecDecode, Hashes) {
  EXPECT_EQ(*decode_hash(golden("cf dab89baa7b5857c0")), 0xdab89baa7b5857c0ULL);
  EXPECT_EQ(*decode_hash(golden("7f")), 127u);
  EXPECT_EQ(*decode_hash(golden("cd 0100")), 256u);
  EXPECT_EQ(*decode_hash(golden("ff")), ~0ULL);  // -1
  EXPECT_EQ(*decode_hash(golden("d0 80")), static_cast<std::uint64_t>(-128));
  EXPECT_EQ(*decode_hash(golden("d3 8000000000000000")), 1ULL << 63);
  EXPECT_EQ(*decode_hash(golden("c4 02 abcd")), 0xabcdu);
  EXPECT_EQ(*decode_hash(golden("c4 0a 1111 0102030405060708")), 0x0102030405060708ULL);
  EXPECT_FALSE(decode_hash(golden("c4 0a 1111")));
  EXPECT_FALSE(decode_hash(golden("a1 41")));
  EXPECT_FALSE(decode_hash(golden("cf 0102")));
}

TEST(CodecDecode, MalformedInputsAreErrors) {
  const std::string good = encode_batch(rich_batch(7), Encoding::kMap);
  for (std::size_t n = 0; n < good.size(); ++n) {
    EXPECT_FALSE(decode_batch(std::string_view(good).substr(0, n))) << n;
  }
  EXPECT_FALSE(decode_batch(good + std::string(1, '\0')));       // trailing bytes
  EXPECT_FALSE(decode_batch(golden("91 cb 0000000000000000")));  // batch too short
  EXPECT_FALSE(
      decode_batch(golden("92 00 91 92 ab" + strhex("BlockStored") + "90")));  // short event
  EXPECT_FALSE(decode_batch(golden("92 00 91 05")));        // event not a container
  EXPECT_FALSE(decode_batch(golden("92 00 dd ffffffff")));  // huge length, no data
  EXPECT_FALSE(decode_batch(golden("92 00 91 c1")));        // reserved type byte
  // Token id out of uint32 range.
  EXPECT_FALSE(decode_batch(
      golden("92 00 91 95 ab" + strhex("BlockStored") + "90 c0 91 cf 0000000100000000 10")));
  // Deep nesting inside an unknown field is bounded.
  std::string nest(200, '\x91');
  nest += '\x00';
  std::string bad = golden("92 00 91 95 ac" + strhex("BlockRemoved") + "90 c0 c0") + nest;
  EXPECT_FALSE(decode_batch(bad));
}

// A string tag we do not know is a newer event (skipped, counted); a tag that is not a string is
// no event at all: the batch is malformed, not an unknown event.
TEST(CodecDecode, NonStringEventTagIsMalformedNotUnknown) {
  const std::string cleared = "91 b0" + strhex("AllBlocksCleared");
  auto unknown = decode_batch(golden("92 00 92 92 a3" + strhex("New") + "01" + cleared));
  ASSERT_TRUE(unknown) << unknown.error().message;
  EXPECT_EQ(unknown->stats.unknown_events, 1u);
  EXPECT_EQ(unknown->stats.events, 1u);
  for (const char* tag : {"05", "c0", "cf 0000000000000001", "c4 03 414243", "91 a1 41", "c3"}) {
    // Array event [tag, 1], followed by a valid AllBlocksCleared.
    auto d = decode_batch(golden(std::string("92 00 92 92 ") + tag + " 01" + cleared));
    EXPECT_FALSE(d) << tag << ": decoded with unknown_events=" << d->stats.unknown_events;
    // Map event {"type": tag}.
    auto m = decode_batch(golden(std::string("92 00 92 81 a4") + strhex("type") + tag + cleared));
    EXPECT_FALSE(m) << tag << ": map decoded with unknown_events=" << m->stats.unknown_events;
    DecodedBatch out;
    EXPECT_NE(decode_batch_into(golden(std::string("92 00 91 92 ") + tag + " 01"), out), nullptr)
        << tag;
  }
}

// Mutated payloads (the fuzz target covers crashes): whatever the decoder accepts is a batch that
// survives encode -> decode unchanged, so a corrupted frame never turns into a batch the index
// would read differently from what it was told; both outcomes occur.
TEST(CodecDecode, MutatedBytesDecodeToBatchesThatRoundTrip) {
  std::mt19937_64 rng(42);
  const std::string seed_bytes = encode_batch(rich_batch(3), Encoding::kArray);
  int accepted = 0, refused = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string s = seed_bytes;
    for (int k = 0, m = 1 + static_cast<int>(rng() % 4); k < m; ++k)
      s[rng() % s.size()] = static_cast<char>(rng());
    auto d = decode_batch(s);
    if (!d) {
      ++refused;
      continue;
    }
    ++accepted;
    const std::string again = encode_batch(d->batch, Encoding::kArray);
    auto d2 = decode_batch(again);
    ASSERT_TRUE(d2) << i << ": a decoded batch re-encodes to bytes the decoder refuses";
    ASSERT_EQ(encode_batch(d2->batch, Encoding::kArray), again) << i;
    ASSERT_EQ(d2->batch.events.size(), d->batch.events.size()) << i;
  }
  EXPECT_GT(accepted, 100);
  EXPECT_GT(refused, 100);
}

// ---------------------------------------------------------------------------------------------
// Differential tests against python3-msgpack (an independent implementation).

const char* kPython = "/usr/bin/python3";  // Debian's python3 with python3-msgpack

std::string oracle_path() {
  return std::string(KVROUTE_SOURCE_DIR) + "/src/kv_events/testdata/msgpack_oracle.py";
}

std::string run(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[65536];
  std::size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int rc = pclose(p);
  if (rc != 0) out += "\n<exit status " + std::to_string(rc) + ">";
  return out;
}

std::string json_str(const std::optional<std::string>& s) {
  if (!s) return "null";
  std::string o = "\"";
  for (char c : *s) {
    if (c == '"' || c == '\\') o.push_back('\\');
    o.push_back(c);
  }
  return o + "\"";
}
template <typename T>
std::string json_opt(const std::optional<T>& v) {
  return v ? std::to_string(*v) : "null";
}
template <typename T>
std::string json_list(const std::vector<T>& v) {
  std::string o = "[";
  for (std::size_t i = 0; i < v.size(); ++i) o += (i ? "," : "") + std::to_string(v[i]);
  return o + "]";
}

std::string describe(const EventBatch& b) {
  char ts[64];
  std::snprintf(ts, sizeof ts, "%.17g", b.ts);
  std::string o =
      std::string("{\"ts\":") + ts + ",\"dp\":" + json_opt(b.data_parallel_rank) + ",\"events\":[";
  for (std::size_t i = 0; i < b.events.size(); ++i) {
    if (i) o += ",";
    if (const auto* s = std::get_if<BlockStored>(&b.events[i])) {
      o += "{\"t\":\"S\",\"h\":" + json_list(s->block_hashes) +
           ",\"p\":" + json_opt(s->parent_block_hash) + ",\"tok\":" + json_list(s->token_ids) +
           ",\"bs\":" + std::to_string(s->block_size) + ",\"lid\":" + json_opt(s->lora_id) +
           ",\"m\":" + json_str(s->medium) + ",\"ln\":" + json_str(s->lora_name) + ",\"ek\":";
      if (s->extra_keys.empty()) {
        o += "null";
      } else {
        o += "[";
        for (std::size_t k = 0; k < s->extra_keys.size(); ++k)
          o += (k ? ",\"" : "\"") + hex(s->extra_keys[k]) + "\"";
        o += "]";
      }
      o += ",\"g\":" + json_opt(s->group_idx) + ",\"k\":" + json_str(s->kv_cache_spec_kind) +
           ",\"w\":" + json_opt(s->kv_cache_spec_sliding_window) + "}";
    } else if (const auto* r = std::get_if<BlockRemoved>(&b.events[i])) {
      o += "{\"t\":\"R\",\"h\":" + json_list(r->block_hashes) + ",\"m\":" + json_str(r->medium) +
           ",\"g\":" + json_opt(r->group_idx) + "}";
    } else {
      o += "{\"t\":\"C\"}";
    }
  }
  return o + "]}";
}

TEST(CodecDifferential, PythonMsgpackDecodesOurBytesAsVllmLayout) {
  ASSERT_TRUE(std::filesystem::exists(kPython)) << "python3 oracle missing";
  const auto path = std::filesystem::temp_directory_path() /
                    ("kv_events_oracle_" + std::to_string(::getpid()) + ".txt");
  int lines = 0;
  {
    std::ofstream f(path);
    for (std::uint64_t seed = 0; seed < 200; ++seed) {
      const EventBatch b = rich_batch(seed);
      f << "array " << hex(encode_batch(b, Encoding::kArray)) << " " << describe(b) << "\n";
      f << "map " << hex(encode_batch(b, Encoding::kMap)) << " " << describe(b) << "\n";
      f << "v09 " << hex(encode_batch(b, Encoding::kArrayV0_9)) << " " << describe(b) << "\n";
      lines += 3;
    }
    const EventBatch g = example_batch();
    f << "array " << hex(encode_batch(g, Encoding::kArray)) << " " << describe(g) << "\n";
    f << "map " << hex(encode_batch(g, Encoding::kMap)) << " " << describe(g) << "\n";
    lines += 2;
  }
  const std::string out =
      run(std::string(kPython) + " " + oracle_path() + " check " + path.string() + " 2>&1");
  std::filesystem::remove(path);
  EXPECT_EQ(out, "ok " + std::to_string(lines) + "\n");
}

std::string canon_opt_str(const std::optional<std::string>& s) { return s ? *s : "nil"; }
template <typename T>
std::string canon_opt(const std::optional<T>& v) {
  return v ? std::to_string(*v) : "nil";
}
template <typename T>
std::string canon_list(const std::vector<T>& v) {
  std::string o;
  for (std::size_t i = 0; i < v.size(); ++i) o += (i ? "," : "") + std::to_string(v[i]);
  return o;
}

std::string canonical(const DecodedBatch& d) {
  char ts[64];
  std::snprintf(ts, sizeof ts, "%.17g", d.batch.ts);
  std::string o = std::string("ts=") + ts + " dp=" + canon_opt(d.batch.data_parallel_rank) +
                  " unknown=" + std::to_string(d.stats.unknown_events) + " events=";
  for (std::size_t i = 0; i < d.batch.events.size(); ++i) {
    if (i) o += ";";
    if (const auto* s = std::get_if<BlockStored>(&d.batch.events[i])) {
      std::string ek;
      for (std::size_t k = 0; k < s->extra_keys.size(); ++k)
        ek += (k ? "," : "") + hex(s->extra_keys[k]);
      o += "S(h=" + canon_list(s->block_hashes) + " p=" + canon_opt(s->parent_block_hash) +
           " tok=" + canon_list(s->token_ids) + " bs=" + std::to_string(s->block_size) +
           " lid=" + canon_opt(s->lora_id) + " m=" + canon_opt_str(s->medium) +
           " ln=" + canon_opt_str(s->lora_name) + " ek=" + ek + " g=" + canon_opt(s->group_idx) +
           " k=" + canon_opt_str(s->kv_cache_spec_kind) +
           " w=" + canon_opt(s->kv_cache_spec_sliding_window) + ")";
    } else if (const auto* r = std::get_if<BlockRemoved>(&d.batch.events[i])) {
      o += "R(h=" + canon_list(r->block_hashes) + " m=" + canon_opt_str(r->medium) +
           " g=" + canon_opt(r->group_idx) + ")";
    } else {
      o += "C()";
    }
  }
  return o;
}

TEST(CodecDifferential, WeDecodePythonMsgpackVariants) {
  ASSERT_TRUE(std::filesystem::exists(kPython)) << "python3 oracle missing";
  const std::string out = run(std::string(kPython) + " " + oracle_path() + " generate");
  std::istringstream in(out);
  std::string line;
  int n = 0;
  std::vector<std::pair<std::string, std::string>> variants;  // bytes, canonical text
  while (std::getline(in, line)) {
    const auto tab = line.find('\t');
    ASSERT_NE(tab, std::string::npos) << line;
    const std::string bytes = unhex(line.substr(0, tab));
    auto d = decode_batch(bytes);
    ASSERT_TRUE(d) << "variant " << n << ": " << d.error().message;
    EXPECT_EQ(canonical(*d), line.substr(tab + 1)) << "variant " << n;
    variants.push_back({bytes, line.substr(tab + 1)});
    ++n;
  }
  EXPECT_GE(n, 14);
  // decode_batch_into reuses the events of the previous batch (their vectors keep capacity): every
  // variant decoded right after every other one, into one DecodedBatch, equals its fresh decode; a
  // malformed batch in between leaves no event behind.
  DecodedBatch reused;
  for (const auto& [first_bytes, first_text] : variants) {
    for (const auto& [bytes, text] : variants) {
      ASSERT_EQ(decode_batch_into(first_bytes, reused), nullptr);
      ASSERT_EQ(decode_batch_into(bytes, reused), nullptr);
      EXPECT_EQ(canonical(reused), text);
    }
    ASSERT_NE(decode_batch_into(first_bytes.substr(0, first_bytes.size() - 1), reused), nullptr);
    EXPECT_TRUE(reused.batch.events.empty());
  }
}

}  // namespace
}  // namespace kvroute::kv_events
