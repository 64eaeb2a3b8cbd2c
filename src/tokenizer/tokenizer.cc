// File: tokenizer/tokenizer.cc
#include "tokenizer/tokenizer.h"

#include <simdjson.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <utility>

#include "tokenizer/internal/pretokenizer.h"
#include "tokenizer/internal/unicode_tables.h"
#include "tokenizer/internal/util.h"

namespace kvroute::tokenizer {

using internal::StringIdMap;
using internal::U64Map;

namespace {

constexpr std::uint32_t kNone = std::numeric_limits<std::uint32_t>::max();
constexpr std::size_t kMaxCachedWordBytes = 128;
constexpr std::size_t kShortWord =
    64;  // words up to this many symbols use the quadratic merge loop

std::atomic<std::uint64_t> g_next_serial{1};

// GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 and up, in byte
// order.
std::array<std::uint32_t, 256> byte_to_codepoint() {
  std::array<std::uint32_t, 256> m{};
  std::uint32_t extra = 256;
  for (std::uint32_t b = 0; b < 256; ++b) {
    const bool printable =
        (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    m[b] = printable ? b : extra++;
  }
  return m;
}

// Decodes the code points of a valid UTF-8 string.
template <typename F>
void for_each_codepoint(std::string_view s, F&& f) {
  std::size_t i = 0;
  while (i < s.size()) {
    const std::size_t len = internal::utf8_sequence_length(s, i);
    f(internal::decode_utf8_at(s, i, len));
    i += len;
  }
}

bool is_rust_whitespace(std::uint32_t cp) {
  return (unicode::props(cp) & unicode::kWhiteSpace) != 0;
}
// Rust's char::is_alphanumeric is Alphabetic || Numeric; approximated by \p{L} || \p{N}
// (docs/adr/0100).
bool is_word_char(std::uint32_t cp) {
  return cp == '_' || (unicode::props(cp) & (unicode::kLetter | unicode::kNumber)) != 0;
}

struct AddedToken {
  std::string content;
  std::uint32_t id = 0;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;
};

// Leftmost-longest matcher over a set of strings (what HF builds with aho-corasick
// MatchKind::LeftmostLongest).
class TokenMatcher {
 public:
  void add(std::string_view s, std::uint32_t token_index) {
    if (s.empty()) return;
    if (nodes_.empty()) nodes_.emplace_back();
    std::uint32_t node = 0;
    for (char c : s) {
      const auto b = static_cast<unsigned char>(c);
      std::uint32_t child = find_child(node, b);
      if (child == kNone) {
        child = static_cast<std::uint32_t>(nodes_.size());
        nodes_[node].children.emplace_back(b, child);
        nodes_.emplace_back();
      }
      node = child;
    }
    if (nodes_[node].token == kNone) nodes_[node].token = token_index;
    first_byte_[static_cast<unsigned char>(s[0])] = true;
  }
  bool empty() const { return nodes_.empty(); }

  // Finds the leftmost match at or after pos; returns {start, end, token_index} or start == npos.
  struct Match {
    std::size_t start;
    std::size_t end;
    std::uint32_t token;
  };
  Match find(std::string_view text, std::size_t pos) const {
    for (std::size_t i = pos; i < text.size(); ++i) {
      if (!first_byte_[static_cast<unsigned char>(text[i])]) continue;
      std::uint32_t node = 0;
      Match best{std::string_view::npos, 0, kNone};
      for (std::size_t j = i; j < text.size(); ++j) {
        node = find_child(node, static_cast<unsigned char>(text[j]));
        if (node == kNone) break;
        if (nodes_[node].token != kNone) best = {i, j + 1, nodes_[node].token};
      }
      if (best.start != std::string_view::npos) return best;
    }
    return {std::string_view::npos, 0, kNone};
  }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, std::uint32_t>> children;
    std::uint32_t token = kNone;
  };
  std::uint32_t find_child(std::uint32_t node, unsigned char b) const {
    for (const auto& [c, n] : nodes_[node].children) {
      if (c == b) return n;
    }
    return kNone;
  }
  std::vector<Node> nodes_;
  std::array<bool, 256> first_byte_{};
};

struct PreTokenizerStep {
  enum class Kind { kSplit, kByteLevel } kind = Kind::kByteLevel;
  SplitPattern pattern = SplitPattern::kGpt2;  // kSplit, or kByteLevel with use_regex
  bool use_regex = false;
  bool add_prefix_space = false;
};

// Per-thread cache of word (pre-token) encodings, bounded; cleared when full.
struct WordCache {
  struct Slot {
    std::uint64_t hash = 0;
    std::uint32_t key_off = 0;
    std::uint32_t key_len = kNone;  // kNone: empty
    std::uint32_t ids_off = 0;
    std::uint32_t ids_len = 0;
  };
  std::uint64_t owner = 0;
  std::size_t capacity = 0;  // max entries
  std::size_t count = 0;
  std::vector<Slot> slots;
  std::string keys;
  std::vector<std::uint32_t> ids;

  void reset(std::uint64_t new_owner, std::size_t entries) {
    owner = new_owner;
    capacity = entries;
    std::size_t n = 16;
    while (n < entries * 2) n <<= 1;
    slots.assign(n, Slot{});
    keys.clear();
    ids.clear();
    count = 0;
  }
  void clear() {
    std::fill(slots.begin(), slots.end(), Slot{});
    keys.clear();
    ids.clear();
    count = 0;
  }
  const Slot* find(std::string_view key, std::uint64_t h) const {
    const std::size_t mask = slots.size() - 1;
    for (std::size_t i = h & mask;; i = (i + 1) & mask) {
      const Slot& s = slots[i];
      if (s.key_len == kNone) return nullptr;
      if (s.hash == h && s.key_len == key.size() &&
          std::memcmp(keys.data() + s.key_off, key.data(), key.size()) == 0) {
        return &s;
      }
    }
  }
  void insert(std::string_view key, std::uint64_t h, std::span<const std::uint32_t> value) {
    if (count >= capacity) clear();
    const std::size_t mask = slots.size() - 1;
    std::size_t i = h & mask;
    while (slots[i].key_len != kNone) i = (i + 1) & mask;
    Slot& s = slots[i];
    s.hash = h;
    s.key_off = static_cast<std::uint32_t>(keys.size());
    s.key_len = static_cast<std::uint32_t>(key.size());
    s.ids_off = static_cast<std::uint32_t>(ids.size());
    s.ids_len = static_cast<std::uint32_t>(value.size());
    keys.append(key);
    ids.insert(ids.end(), value.begin(), value.end());
    ++count;
  }
};

// Scratch buffers reused across calls on one thread (no per-word heap churn).
struct Scratch {
  WordCache cache;
  std::vector<Span> spans;
  std::vector<Span> spans2;
  std::vector<std::uint32_t> word;
  std::vector<std::uint64_t> pair;
  std::vector<std::int32_t> prev;
  std::vector<std::int32_t> next;
  std::vector<std::uint64_t> heap;
  std::string normalized;

  // After a large input (a prompt of megabytes) the buffers would keep its size on this thread for
  // good: those over 1 MiB are freed.
  void trim() {
    constexpr std::size_t kKeepBytes = 1u << 20;
    const auto shrink = [&](auto& v) {
      if (v.capacity() * sizeof(v[0]) > kKeepBytes) std::remove_reference_t<decltype(v)>().swap(v);
    };
    shrink(spans);
    shrink(spans2);
    shrink(word);
    shrink(pair);
    shrink(prev);
    shrink(next);
    shrink(heap);
    shrink(normalized);
  }
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

}  // namespace

struct Tokenizer::Impl {
  std::uint64_t serial = 0;
  LoadOptions options;
  TokenizerConfig config;

  // Model.
  StringIdMap vocab;      // token as written in tokenizer.json -> id (model vocabulary)
  StringIdMap vocab_raw;  // the token's bytes (byte-level decoded) -> id, for ignore_merges
  U64Map merges;          // (left id << 32 | right id) -> (rank << 32 | merged id)
  std::array<std::uint32_t, 256> byte_id{};  // id of each single byte's symbol, kNone if absent
  bool ignore_merges = false;
  std::optional<std::uint32_t> unk_id;
  bool fuse_unk = false;

  // Added tokens.
  std::vector<AddedToken> added;
  StringIdMap added_by_content;
  TokenMatcher raw_matcher;         // normalized == false: matched on the raw input
  TokenMatcher normalized_matcher;  // normalized == true: matched after normalization

  bool nfc = false;
  std::vector<PreTokenizerStep> steps;
  bool needs_owned_pieces = false;  // some ByteLevel step adds a prefix space

  std::vector<std::uint32_t> prefix_ids;
  std::vector<std::uint32_t> suffix_ids;

  bool byte_level_decoder = true;
  std::vector<std::string> id_to_token;  // by id: token string ("" if unused)
  std::vector<std::string> id_to_bytes;  // by id: what the ByteLevel decoder makes of the token
  std::vector<bool> id_present;
  std::vector<bool> id_special;
  std::vector<bool> id_unsafe_cut;  // an added token with rstrip or single_word has this id

  void encode_word(std::string_view word, std::vector<std::uint32_t>& out, Scratch& sc) const;
  void bpe(std::string_view word, std::vector<std::uint32_t>& out, Scratch& sc) const;
  Status encode_pieces(std::string_view text, std::vector<std::uint32_t>& out, Scratch& sc) const;
  // HF AddedVocabulary::find_matches, one step: the next match of `matcher` at or after `pos` that
  // passes its token's single_word rule, widened by lstrip (not before `floor`, the end of the
  // previous match) and rstrip. Advances `pos`; nullopt when there is none. Used by both passes
  // (raw and normalized).
  struct AddedMatch {
    std::size_t start;
    std::size_t stop;
    std::uint32_t id;
  };
  std::optional<AddedMatch> next_added(const TokenMatcher& matcher, std::string_view text,
                                       std::size_t& pos, std::size_t floor) const;
  std::uint64_t merge_of(std::uint32_t a, std::uint32_t b) const {
    const std::uint64_t* v = merges.find((static_cast<std::uint64_t>(a) << 32) | b);
    return v ? *v : std::numeric_limits<std::uint64_t>::max();
  }
};

// ---------------------------------------------------------------------------------------------
// Loading.

namespace {

using simdjson::dom::array;
using simdjson::dom::element;
using simdjson::dom::object;

Error load_error(const std::string& what) { return Error::invalid("tokenizer.json: " + what); }

std::optional<std::string_view> opt_string(const element& obj, const char* key) {
  std::string_view s;
  if (obj[key].get(s) == simdjson::SUCCESS) return s;
  return std::nullopt;
}

bool opt_bool(const element& obj, const char* key, bool dflt) {
  bool b = false;
  if (obj[key].get(b) == simdjson::SUCCESS) return b;
  return dflt;
}

bool is_null_or_missing(const element& obj, const char* key) {
  element e;
  if (obj[key].get(e) != simdjson::SUCCESS) return true;
  return e.is_null();
}

Status parse_normalizer(const element& root, Tokenizer::Impl& impl) {
  element n;
  if (root["normalizer"].get(n) != simdjson::SUCCESS || n.is_null()) return {};
  std::vector<element> items;
  const std::string_view type = opt_string(n, "type").value_or("");
  if (type == "Sequence") {
    array arr;
    if (n["normalizers"].get(arr) != simdjson::SUCCESS)
      return fail(load_error("normalizer Sequence without list"));
    for (element e : arr) items.push_back(e);
  } else {
    items.push_back(n);
  }
  for (const element& e : items) {
    const std::string_view t = opt_string(e, "type").value_or("");
    if (t == "NFC") {
      impl.nfc = true;
    } else {
      return fail(load_error(
          "unsupported normalizer '" + std::string(t) +
          "' (supported: none, NFC; SentencePiece-style models are not byte-level BPE)"));
    }
  }
  return {};
}

Result<PreTokenizerStep> parse_pretokenizer_step(const element& e) {
  const std::string_view t = opt_string(e, "type").value_or("");
  PreTokenizerStep step;
  if (t == "ByteLevel") {
    step.kind = PreTokenizerStep::Kind::kByteLevel;
    step.add_prefix_space = opt_bool(e, "add_prefix_space", true);
    step.use_regex = opt_bool(e, "use_regex", true);
    step.pattern = SplitPattern::kGpt2;
    return step;
  }
  if (t == "Split") {
    step.kind = PreTokenizerStep::Kind::kSplit;
    element pattern;
    if (e["pattern"].get(pattern) != simdjson::SUCCESS)
      return fail(load_error("Split without pattern"));
    const auto regex = opt_string(pattern, "Regex");
    if (!regex) return fail(load_error("Split pattern must be {\"Regex\": …}"));
    const auto recognized = recognize_split_pattern(*regex);
    if (!recognized) {
      return fail(load_error("unsupported Split regex (no hand-written scanner for it): " +
                             std::string(*regex)));
    }
    step.pattern = *recognized;
    const std::string_view behavior = opt_string(e, "behavior").value_or("");
    if (behavior != "Isolated")
      return fail(load_error("unsupported Split behavior '" + std::string(behavior) + "'"));
    if (opt_bool(e, "invert", false)) return fail(load_error("unsupported Split with invert=true"));
    return step;
  }
  return fail(load_error("unsupported pre_tokenizer '" + std::string(t) + "'"));
}

Status parse_pretokenizer(const element& root, Tokenizer::Impl& impl) {
  element p;
  if (root["pre_tokenizer"].get(p) != simdjson::SUCCESS || p.is_null()) {
    return fail(
        load_error("no pre_tokenizer; only byte-level BPE (ByteLevel pre-tokenizer) is supported"));
  }
  const std::string_view type = opt_string(p, "type").value_or("");
  if (type == "Sequence") {
    array arr;
    if (p["pretokenizers"].get(arr) != simdjson::SUCCESS)
      return fail(load_error("pre_tokenizer Sequence without list"));
    for (element e : arr) {
      KVROUTE_TRY(auto step, parse_pretokenizer_step(e));
      impl.steps.push_back(step);
    }
  } else {
    KVROUTE_TRY(auto step, parse_pretokenizer_step(p));
    impl.steps.push_back(step);
  }
  bool has_byte_level = false;
  for (const auto& s : impl.steps) {
    if (s.kind == PreTokenizerStep::Kind::kByteLevel) {
      has_byte_level = true;
      if (s.add_prefix_space) impl.needs_owned_pieces = true;
    }
  }
  if (!has_byte_level)
    return fail(
        load_error("pre_tokenizer has no ByteLevel step; only byte-level BPE is supported"));
  return {};
}

Status parse_template(const element& proc, const Tokenizer::Impl& impl,
                      std::vector<std::uint32_t>& prefix, std::vector<std::uint32_t>& suffix) {
  array single;
  if (proc["single"].get(single) != simdjson::SUCCESS)
    return fail(load_error("TemplateProcessing without single"));
  object special;
  if (proc["special_tokens"].get(special) != simdjson::SUCCESS) {
    return fail(load_error("TemplateProcessing without special_tokens"));
  }
  bool seen_sequence = false;
  std::vector<std::uint32_t> pre;
  std::vector<std::uint32_t> post;
  for (element item : single) {
    element st;
    element seq;
    if (item["SpecialToken"].get(st) == simdjson::SUCCESS) {
      const auto id = opt_string(st, "id");
      if (!id) return fail(load_error("TemplateProcessing SpecialToken without id"));
      element spec;
      if (special[*id].get(spec) != simdjson::SUCCESS) {
        return fail(load_error("TemplateProcessing special token '" + std::string(*id) +
                               "' not in special_tokens"));
      }
      array ids;
      if (spec["ids"].get(ids) != simdjson::SUCCESS)
        return fail(load_error("special_tokens entry without ids"));
      for (element x : ids) {
        std::uint64_t v = 0;
        if (x.get(v) != simdjson::SUCCESS || v >= kNone)
          return fail(load_error("bad special token id"));
        (seen_sequence ? post : pre).push_back(static_cast<std::uint32_t>(v));
      }
    } else if (item["Sequence"].get(seq) == simdjson::SUCCESS) {
      if (opt_string(seq, "id").value_or("") != "A" || seen_sequence) {
        return fail(load_error("TemplateProcessing single template must hold sequence $A once"));
      }
      seen_sequence = true;
    } else {
      return fail(load_error("unknown TemplateProcessing item"));
    }
  }
  if (!seen_sequence) return fail(load_error("TemplateProcessing single template without $A"));
  (void)impl;
  // Nested processors wrap what the earlier ones produced.
  prefix.insert(prefix.begin(), pre.begin(), pre.end());
  suffix.insert(suffix.end(), post.begin(), post.end());
  return {};
}

Status parse_post_processor(const element& root, Tokenizer::Impl& impl) {
  element p;
  if (root["post_processor"].get(p) != simdjson::SUCCESS || p.is_null()) return {};
  std::vector<element> items;
  const std::string_view type = opt_string(p, "type").value_or("");
  if (type == "Sequence") {
    array arr;
    if (p["processors"].get(arr) != simdjson::SUCCESS)
      return fail(load_error("post_processor Sequence without list"));
    for (element e : arr) items.push_back(e);
  } else {
    items.push_back(p);
  }
  for (const element& e : items) {
    const std::string_view t = opt_string(e, "type").value_or("");
    if (t == "ByteLevel") continue;  // only changes offsets
    if (t == "TemplateProcessing") {
      KVROUTE_TRY(parse_template(e, impl, impl.prefix_ids, impl.suffix_ids));
      continue;
    }
    return fail(load_error("unsupported post_processor '" + std::string(t) + "'"));
  }
  return {};
}

Status parse_model(const element& root, Tokenizer::Impl& impl) {
  element model;
  if (root["model"].get(model) != simdjson::SUCCESS) return fail(load_error("no model"));
  const std::string_view type = opt_string(model, "type").value_or("BPE");
  if (type != "BPE") {
    return fail(load_error(
        "unsupported model type '" + std::string(type) +
        "': only byte-level BPE is supported (no SentencePiece/Unigram/WordPiece/WordLevel)"));
  }
  double dropout = 0;
  if (!is_null_or_missing(model, "dropout") &&
      (model["dropout"].get(dropout) != simdjson::SUCCESS || dropout != 0)) {
    return fail(load_error("BPE dropout is not supported (non-deterministic)"));
  }
  if (!opt_string(model, "continuing_subword_prefix").value_or("").empty() ||
      !opt_string(model, "end_of_word_suffix").value_or("").empty()) {
    return fail(load_error("BPE continuing_subword_prefix/end_of_word_suffix are not supported"));
  }
  if (opt_bool(model, "byte_fallback", false)) {
    return fail(load_error("BPE byte_fallback (SentencePiece-style BPE) is not supported"));
  }
  impl.ignore_merges = opt_bool(model, "ignore_merges", false);
  impl.fuse_unk = opt_bool(model, "fuse_unk", false);

  object vocab;
  if (model["vocab"].get(vocab) != simdjson::SUCCESS)
    return fail(load_error("model.vocab must be an object"));
  const auto cp_of_byte = byte_to_codepoint();
  std::array<int, 0x144> byte_of_cp;
  byte_of_cp.fill(-1);
  for (int b = 0; b < 256; ++b) byte_of_cp[cp_of_byte[b]] = b;

  impl.vocab.reserve(vocab.size());
  impl.vocab_raw.reserve(vocab.size());
  for (auto field : vocab) {
    std::uint64_t id = 0;
    if (field.value.get(id) != simdjson::SUCCESS || id >= (std::uint64_t{1} << 31)) {
      return fail(load_error("bad id for vocab entry '" + std::string(field.key) + "'"));
    }
    const auto id32 = static_cast<std::uint32_t>(id);
    impl.vocab.insert(field.key, id32);
    if (impl.id_to_token.size() <= id32) impl.id_to_token.resize(id32 + 1);
    impl.id_to_token[id32] = std::string(field.key);
    // Byte-level decode the token; tokens with characters outside the byte alphabet have no raw
    // form.
    std::string raw;
    bool ok = true;
    for_each_codepoint(field.key, [&](std::uint32_t cp) {
      if (cp < byte_of_cp.size() && byte_of_cp[cp] >= 0) {
        raw.push_back(static_cast<char>(byte_of_cp[cp]));
      } else {
        ok = false;
      }
    });
    if (ok) impl.vocab_raw.insert(raw, id32);
  }
  impl.byte_id.fill(kNone);
  for (int b = 0; b < 256; ++b) {
    std::string s;
    internal::append_utf8(s, cp_of_byte[b]);
    if (const auto* id = impl.vocab.find(s)) impl.byte_id[b] = *id;
  }

  if (const auto unk = opt_string(model, "unk_token")) {
    const auto* id = impl.vocab.find(*unk);
    if (!id) return fail(load_error("unk_token not in vocab"));
    impl.unk_id = *id;
  }

  array merges;
  if (model["merges"].get(merges) != simdjson::SUCCESS)
    return fail(load_error("model.merges must be an array"));
  impl.merges.reserve(merges.size());
  std::uint32_t rank = 0;
  std::string joined;
  for (element m : merges) {
    std::string_view a;
    std::string_view b;
    std::string_view line;
    array pair;
    if (m.get(line) == simdjson::SUCCESS) {
      const auto sp = line.find(' ');
      if (sp == std::string_view::npos || line.find(' ', sp + 1) != std::string_view::npos) {
        return fail(load_error("merge '" + std::string(line) + "' is not two tokens"));
      }
      a = line.substr(0, sp);
      b = line.substr(sp + 1);
    } else if (m.get(pair) == simdjson::SUCCESS && pair.size() == 2) {
      if (pair.at(0).get(a) != simdjson::SUCCESS || pair.at(1).get(b) != simdjson::SUCCESS) {
        return fail(load_error("merge pair must hold two strings"));
      }
    } else {
      return fail(load_error("merge must be \"a b\" or [\"a\", \"b\"]"));
    }
    const auto* ia = impl.vocab.find(a);
    const auto* ib = impl.vocab.find(b);
    joined.assign(a);
    joined.append(b);
    const auto* ij = impl.vocab.find(joined);
    if (!ia || !ib || !ij)
      return fail(load_error("merge '" + std::string(a) + " " + std::string(b) +
                             "' uses a token not in vocab"));
    const std::uint64_t key = (static_cast<std::uint64_t>(*ia) << 32) | *ib;
    if (!impl.merges.find(key))
      impl.merges.insert(key, (static_cast<std::uint64_t>(rank) << 32) | *ij);
    ++rank;
  }
  return {};
}

Status parse_added_tokens(const element& root, Tokenizer::Impl& impl) {
  array arr;
  if (root["added_tokens"].get(arr) != simdjson::SUCCESS) return {};
  for (element e : arr) {
    AddedToken t;
    const auto content = opt_string(e, "content");
    std::uint64_t id = 0;
    if (!content || e["id"].get(id) != simdjson::SUCCESS || id >= (std::uint64_t{1} << 31)) {
      return fail(load_error("added token needs content and id"));
    }
    t.content = std::string(*content);
    t.id = static_cast<std::uint32_t>(id);
    t.special = opt_bool(e, "special", false);
    t.single_word = opt_bool(e, "single_word", false);
    t.lstrip = opt_bool(e, "lstrip", false);
    t.rstrip = opt_bool(e, "rstrip", false);
    t.normalized = opt_bool(e, "normalized", !t.special);
    impl.added.push_back(std::move(t));
  }
  for (std::uint32_t i = 0; i < impl.added.size(); ++i) {
    const AddedToken& t = impl.added[i];
    impl.added_by_content.insert(t.content, t.id);
    if (t.normalized) {
      // HF matches these on normalized text, so it normalizes their content the same way.
      std::string buf;
      impl.normalized_matcher.add(impl.nfc ? internal::nfc_normalize(t.content, buf) : t.content,
                                  i);
    } else {
      impl.raw_matcher.add(t.content, i);
    }
  }
  return {};
}

void build_decode_tables(Tokenizer::Impl& impl) {
  for (const AddedToken& t : impl.added) {
    if (impl.id_to_token.size() <= t.id) impl.id_to_token.resize(t.id + 1);
  }
  const std::size_t n = impl.id_to_token.size();
  impl.id_present.assign(n, false);
  impl.id_special.assign(n, false);
  impl.id_to_bytes.assign(n, std::string());
  for (std::size_t i = 0; i < n; ++i) impl.id_present[i] = !impl.id_to_token[i].empty();
  for (const AddedToken& t : impl.added) {
    // HF looks up added tokens first, and gives a normalized token's normalized content (for the
    // decoder).
    std::string buf;
    impl.id_to_token[t.id] =
        t.normalized && impl.nfc ? internal::nfc_normalize(t.content, buf) : t.content;
    impl.id_present[t.id] = true;
    impl.id_special[t.id] = t.special;
  }
  impl.id_unsafe_cut.assign(n, false);
  for (const AddedToken& t : impl.added) {
    if (t.rstrip || t.single_word || t.normalized) impl.id_unsafe_cut[t.id] = true;
  }
  const auto cp_of_byte = byte_to_codepoint();
  std::array<int, 0x144> byte_of_cp;
  byte_of_cp.fill(-1);
  for (int b = 0; b < 256; ++b) byte_of_cp[cp_of_byte[b]] = b;
  for (std::size_t i = 0; i < n; ++i) {
    const std::string& tok = impl.id_to_token[i];
    std::string raw;
    bool ok = true;
    for_each_codepoint(tok, [&](std::uint32_t cp) {
      if (cp < byte_of_cp.size() && byte_of_cp[cp] >= 0) {
        raw.push_back(static_cast<char>(byte_of_cp[cp]));
      } else {
        ok = false;
      }
    });
    impl.id_to_bytes[i] = ok ? std::move(raw) : tok;
  }
}

Result<std::string> read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return fail(Error::io("cannot open " + p.string()));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (!in.good() && !in.eof()) return fail(Error::io("cannot read " + p.string()));
  return ss.str();
}

}  // namespace

namespace {
// simdjson rejects integers beyond 64 bits, and tokenizer_config.json often holds model_max_length
// = 1e30 written as an integer. Rewrites such integer literals (outside strings) as decimals, which
// parse as doubles.
std::string widen_big_integers(std::string_view json) {
  std::string out;
  out.reserve(json.size() + 16);
  bool in_string = false;
  std::size_t i = 0;
  while (i < json.size()) {
    const char c = json[i];
    if (in_string) {
      out.push_back(c);
      if (c == '\\' && i + 1 < json.size()) {
        out.push_back(json[i + 1]);
        i += 2;
        continue;
      }
      if (c == '"') in_string = false;
      ++i;
      continue;
    }
    if (c == '"') {
      in_string = true;
      out.push_back(c);
      ++i;
      continue;
    }
    if (c >= '0' && c <= '9') {
      std::size_t j = i;
      while (j < json.size() && json[j] >= '0' && json[j] <= '9') ++j;
      out.append(json.substr(i, j - i));
      const bool fraction = j < json.size() && (json[j] == '.' || json[j] == 'e' || json[j] == 'E');
      if (j - i > 18 && !fraction) out.append(".0");
      i = j;
      continue;
    }
    out.push_back(c);
    ++i;
  }
  return out;
}
}  // namespace

Result<TokenizerConfig> parse_tokenizer_config(std::string_view json) {
  TokenizerConfig cfg;
  simdjson::dom::parser parser;
  simdjson::padded_string padded(widen_big_integers(json));
  element root;
  if (auto err = parser.parse(padded).get(root); err != simdjson::SUCCESS) {
    return fail(
        Error::invalid(std::string("tokenizer_config.json: ") + simdjson::error_message(err)));
  }
  if (!root.is_object()) return fail(Error::invalid("tokenizer_config.json: not an object"));
  auto token_field = [&](const char* key) -> std::optional<std::string> {
    element e;
    if (root[key].get(e) != simdjson::SUCCESS || e.is_null()) return std::nullopt;
    std::string_view s;
    if (e.get(s) == simdjson::SUCCESS) return std::string(s);
    if (e["content"].get(s) == simdjson::SUCCESS) return std::string(s);
    return std::nullopt;
  };
  cfg.bos_token = token_field("bos_token");
  cfg.eos_token = token_field("eos_token");
  bool b = false;
  if (root["add_bos_token"].get(b) == simdjson::SUCCESS) cfg.add_bos_token = b;
  if (root["add_eos_token"].get(b) == simdjson::SUCCESS) cfg.add_eos_token = b;
  element tmpl;
  if (root["chat_template"].get(tmpl) == simdjson::SUCCESS && !tmpl.is_null()) {
    std::string_view s;
    array list;
    if (tmpl.get(s) == simdjson::SUCCESS) {
      cfg.chat_templates["default"] = std::string(s);
    } else if (tmpl.get(list) == simdjson::SUCCESS) {
      for (element item : list) {
        std::string_view name;
        std::string_view body;
        if (item["name"].get(name) != simdjson::SUCCESS ||
            item["template"].get(body) != simdjson::SUCCESS) {
          return fail(Error::invalid(
              "tokenizer_config.json: chat_template list items need name and template"));
        }
        cfg.chat_templates[std::string(name)] = std::string(body);
      }
    } else {
      return fail(
          Error::invalid("tokenizer_config.json: chat_template must be a string or a list"));
    }
  }
  return cfg;
}

Result<Tokenizer> Tokenizer::from_json(std::string_view tokenizer_json,
                                       std::string_view config_json, const LoadOptions& options) {
  auto impl = std::make_shared<Impl>();
  impl->serial = g_next_serial.fetch_add(1);
  impl->options = options;
  simdjson::dom::parser parser;
  simdjson::padded_string padded(tokenizer_json);
  element root;
  if (auto err = parser.parse(padded).get(root); err != simdjson::SUCCESS) {
    return fail(load_error(simdjson::error_message(err)));
  }
  if (!root.is_object()) return fail(load_error("not a JSON object"));
  if (!is_null_or_missing(root, "truncation") || !is_null_or_missing(root, "padding")) {
    return fail(load_error("truncation/padding are not supported (must be null)"));
  }
  KVROUTE_TRY(parse_model(root, *impl));
  KVROUTE_TRY(
      parse_normalizer(root, *impl));  // before the added tokens: it normalizes their content
  KVROUTE_TRY(parse_added_tokens(root, *impl));
  KVROUTE_TRY(parse_pretokenizer(root, *impl));
  KVROUTE_TRY(parse_post_processor(root, *impl));
  element dec;
  if (root["decoder"].get(dec) == simdjson::SUCCESS && !dec.is_null()) {
    const std::string_view t = opt_string(dec, "type").value_or("");
    if (t != "ByteLevel") return fail(load_error("unsupported decoder '" + std::string(t) + "'"));
  } else {
    impl->byte_level_decoder = false;
  }
  build_decode_tables(*impl);
  if (!config_json.empty()) {
    KVROUTE_TRY(impl->config, parse_tokenizer_config(config_json));
  }
  return Tokenizer(std::move(impl));
}

Result<Tokenizer> Tokenizer::load(const std::string& path, const LoadOptions& options) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path json_path(path);
  if (fs::is_directory(json_path, ec)) json_path /= "tokenizer.json";
  KVROUTE_TRY(std::string json, read_file(json_path));
  std::string config;
  const fs::path config_path = json_path.parent_path() / "tokenizer_config.json";
  if (fs::exists(config_path, ec)) {
    KVROUTE_TRY(config, read_file(config_path));
  }
  auto tok = from_json(json, config, options);
  if (!tok) return fail(Error{tok.error().kind, json_path.string() + ": " + tok.error().message});
  return tok;
}

// ---------------------------------------------------------------------------------------------
// Encoding.

Status Tokenizer::check_input(std::string_view text) const {
  if (text.size() > impl_->options.max_input_bytes) {
    return fail(Error::invalid("input of " + std::to_string(text.size()) +
                               " bytes exceeds the limit of " +
                               std::to_string(impl_->options.max_input_bytes) + " bytes"));
  }
  if (const std::size_t bad = internal::find_invalid_utf8(text); bad != std::string_view::npos) {
    return fail(
        Error::invalid("input is not valid UTF-8 (byte offset " + std::to_string(bad) + ")"));
  }
  if (text.size() >= kNone) return fail(Error::invalid("input too large"));
  return {};
}

std::optional<Tokenizer::Impl::AddedMatch> Tokenizer::Impl::next_added(const TokenMatcher& matcher,
                                                                       std::string_view text,
                                                                       std::size_t& pos,
                                                                       std::size_t floor) const {
  while (pos < text.size()) {
    const auto m = matcher.find(text, pos);
    if (m.start == std::string_view::npos) break;
    pos = m.end;
    const AddedToken& t = added[m.token];
    std::size_t start = m.start;
    std::size_t stop = m.end;
    if (t.single_word) {
      bool start_space = true;
      bool stop_space = true;
      if (start > 0) {
        std::size_t k = start - 1;
        while (k > 0 && (static_cast<unsigned char>(text[k]) & 0xC0) == 0x80) --k;
        start_space = !is_word_char(internal::decode_utf8_at(text, k, start - k));
      }
      if (stop < text.size()) {
        const std::size_t len = internal::utf8_sequence_length(text, stop);
        stop_space = !is_word_char(internal::decode_utf8_at(text, stop, len));
      }
      if (!start_space || !stop_space) continue;
    }
    if (t.lstrip) {
      std::size_t k = start;
      while (k > 0) {
        std::size_t b = k - 1;
        while (b > 0 && (static_cast<unsigned char>(text[b]) & 0xC0) == 0x80) --b;
        if (!is_rust_whitespace(internal::decode_utf8_at(text, b, k - b))) break;
        k = b;
      }
      start = std::max(k, floor);
    }
    if (t.rstrip) {
      while (stop < text.size()) {
        const std::size_t len = internal::utf8_sequence_length(text, stop);
        if (!is_rust_whitespace(internal::decode_utf8_at(text, stop, len))) break;
        stop += len;
      }
    }
    return AddedMatch{start, stop, t.id};
  }
  return std::nullopt;
}

void Tokenizer::split_on_added_tokens(std::string_view text, std::vector<Segment>& out) const {
  const Impl& im = *impl_;
  if (im.raw_matcher.empty()) {
    if (!text.empty()) out.push_back({0, static_cast<std::uint32_t>(text.size()), std::nullopt});
    return;
  }
  // HF AddedVocabulary::find_matches.
  std::size_t start_offset = 0;
  std::size_t pos = 0;
  while (auto m = im.next_added(im.raw_matcher, text, pos, start_offset)) {
    if (start_offset < m->start) {
      out.push_back({static_cast<std::uint32_t>(start_offset), static_cast<std::uint32_t>(m->start),
                     std::nullopt});
    }
    out.push_back(
        {static_cast<std::uint32_t>(m->start), static_cast<std::uint32_t>(m->stop), m->id});
    start_offset = m->stop;
  }
  if (start_offset < text.size()) {
    out.push_back({static_cast<std::uint32_t>(start_offset),
                   static_cast<std::uint32_t>(text.size()), std::nullopt});
  }
}

void Tokenizer::Impl::bpe(std::string_view w, std::vector<std::uint32_t>& out, Scratch& sc) const {
  auto& word = sc.word;
  word.clear();
  bool prev_unk = false;
  for (char c : w) {
    const std::uint32_t id = byte_id[static_cast<unsigned char>(c)];
    if (id != kNone) {
      word.push_back(id);
      prev_unk = false;
    } else if (unk_id) {
      if (!(fuse_unk && prev_unk)) word.push_back(*unk_id);
      prev_unk = true;
    }
  }
  const std::size_t n = word.size();
  if (n <= 1) {
    out.insert(out.end(), word.begin(), word.end());
    return;
  }
  constexpr std::uint64_t kNoMerge = std::numeric_limits<std::uint64_t>::max();
  if (n <= kShortWord) {
    // pair[i] = merge of (word[i], word[i+1]) as rank << 32 | new id; lowest rank, then leftmost,
    // first.
    std::uint64_t pair[kShortWord];
    std::uint32_t sym[kShortWord];
    std::size_t m = n;
    for (std::size_t i = 0; i < m; ++i) sym[i] = word[i];
    for (std::size_t i = 0; i + 1 < m; ++i) pair[i] = merge_of(sym[i], sym[i + 1]);
    while (m > 1) {
      std::size_t best = 0;
      std::uint64_t best_v = pair[0];
      for (std::size_t i = 1; i + 1 < m; ++i) {
        if ((pair[i] >> 32) < (best_v >> 32)) {
          best_v = pair[i];
          best = i;
        }
      }
      if (best_v == kNoMerge) break;
      sym[best] = static_cast<std::uint32_t>(best_v);
      for (std::size_t i = best + 1; i + 1 < m; ++i) sym[i] = sym[i + 1];
      for (std::size_t i = best + 1; i + 2 < m; ++i) pair[i] = pair[i + 1];
      --m;
      if (best > 0) pair[best - 1] = merge_of(sym[best - 1], sym[best]);
      if (best + 1 < m) pair[best] = merge_of(sym[best], sym[best + 1]);
    }
    out.insert(out.end(), sym, sym + m);
    return;
  }
  // Long words: linked list + min-heap of (rank << 32 | position), stale entries skipped (HF's
  // Word::merge_all).
  auto& prev = sc.prev;
  auto& next = sc.next;
  auto& heap = sc.heap;
  prev.resize(n);
  next.resize(n);
  heap.clear();
  for (std::size_t i = 0; i < n; ++i) {
    prev[i] = static_cast<std::int32_t>(i) - 1;
    next[i] = i + 1 < n ? static_cast<std::int32_t>(i + 1) : -1;
  }
  const auto cmp = std::greater<std::uint64_t>();
  auto push = [&](std::size_t i) {
    if (next[i] < 0) return;
    const std::uint64_t v = merge_of(word[i], word[static_cast<std::size_t>(next[i])]);
    if (v == kNoMerge) return;
    heap.push_back((v & 0xFFFFFFFF00000000ull) | i);
    std::push_heap(heap.begin(), heap.end(), cmp);
  };
  for (std::size_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), cmp);
    const std::uint64_t top = heap.back();
    heap.pop_back();
    const std::size_t i = top & 0xFFFFFFFFu;
    if (word[i] == kNone || next[i] < 0) continue;
    const auto j = static_cast<std::size_t>(next[i]);
    const std::uint64_t v = merge_of(word[i], word[j]);
    if (v == kNoMerge || (v >> 32) != (top >> 32)) continue;
    word[i] = static_cast<std::uint32_t>(v);
    word[j] = kNone;
    next[i] = next[j];
    if (next[j] >= 0) prev[static_cast<std::size_t>(next[j])] = static_cast<std::int32_t>(i);
    if (prev[i] >= 0) push(static_cast<std::size_t>(prev[i]));
    push(i);
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (word[i] != kNone) out.push_back(word[i]);
  }
}

void Tokenizer::Impl::encode_word(std::string_view w, std::vector<std::uint32_t>& out,
                                  Scratch& sc) const {
  if (w.empty()) return;
  if (ignore_merges) {
    if (const auto* id = vocab_raw.find(w)) {
      out.push_back(*id);
      return;
    }
  }
  if (w.size() == 1) {
    bpe(w, out, sc);
    return;
  }
  const bool cacheable = options.word_cache_entries > 0 && w.size() <= kMaxCachedWordBytes;
  if (!cacheable) {
    bpe(w, out, sc);
    return;
  }
  WordCache& cache = sc.cache;
  if (cache.owner != serial) cache.reset(serial, options.word_cache_entries);
  const std::uint64_t h = XXH3_64bits(w.data(), w.size());
  if (const auto* slot = cache.find(w, h)) {
    out.insert(out.end(), cache.ids.begin() + slot->ids_off,
               cache.ids.begin() + slot->ids_off + slot->ids_len);
    return;
  }
  const std::size_t before = out.size();
  bpe(w, out, sc);
  cache.insert(w, h, std::span<const std::uint32_t>(out.data() + before, out.size() - before));
}

Status Tokenizer::Impl::encode_pieces(std::string_view text, std::vector<std::uint32_t>& out,
                                      Scratch& sc) const {
  if (text.empty()) return {};
  if (!needs_owned_pieces) {
    auto& cur = sc.spans;
    auto& nxt = sc.spans2;
    cur.clear();
    cur.push_back({0, static_cast<std::uint32_t>(text.size())});
    for (const PreTokenizerStep& st : steps) {
      const bool splits = st.kind == PreTokenizerStep::Kind::kSplit || st.use_regex;
      if (!splits) continue;
      nxt.clear();
      for (const Span& s : cur)
        split_pattern(st.pattern, text.substr(s.begin, s.end - s.begin), s.begin, nxt);
      std::swap(cur, nxt);
    }
    for (const Span& s : cur) encode_word(text.substr(s.begin, s.end - s.begin), out, sc);
    return {};
  }
  // Some ByteLevel step prepends a space to each piece: materialize the pieces.
  std::deque<std::string> store;
  std::vector<std::string_view> cur{text};
  std::vector<std::string_view> nxt;
  std::vector<Span> spans;
  for (const PreTokenizerStep& st : steps) {
    nxt.clear();
    for (std::string_view piece : cur) {
      if (st.kind == PreTokenizerStep::Kind::kByteLevel && st.add_prefix_space &&
          (piece.empty() || piece[0] != ' ')) {
        store.push_back(" " + std::string(piece));
        piece = store.back();
      }
      const bool splits = st.kind == PreTokenizerStep::Kind::kSplit || st.use_regex;
      if (!splits) {
        nxt.push_back(piece);
        continue;
      }
      spans.clear();
      split_pattern(st.pattern, piece, 0, spans);
      for (const Span& s : spans) nxt.push_back(piece.substr(s.begin, s.end - s.begin));
    }
    std::swap(cur, nxt);
  }
  for (std::string_view piece : cur) encode_word(piece, out, sc);
  return {};
}

Status Tokenizer::encode_text_segment(std::string_view text,
                                      std::vector<std::uint32_t>& out) const {
  const Impl& im = *impl_;
  Scratch& sc = scratch();
  // HF normalizes each piece left by the first split on its own; the view points into sc.normalized
  // when NFC changed something (nothing below touches that buffer).
  if (im.nfc) text = internal::nfc_normalize(text, sc.normalized);
  if (im.normalized_matcher.empty()) return im.encode_pieces(text, out, sc);
  // Second pass (HF): added tokens with normalized == true, matched on the normalized text.
  std::size_t start_offset = 0;
  std::size_t pos = 0;
  while (auto m = im.next_added(im.normalized_matcher, text, pos, start_offset)) {
    if (start_offset < m->start) {
      KVROUTE_TRY(im.encode_pieces(text.substr(start_offset, m->start - start_offset), out, sc));
    }
    out.push_back(m->id);
    start_offset = m->stop;
  }
  if (start_offset < text.size()) return im.encode_pieces(text.substr(start_offset), out, sc);
  return {};
}

Result<std::vector<std::uint32_t>> Tokenizer::encode(std::string_view text,
                                                     bool add_special_tokens) const {
  KVROUTE_TRY(check_input(text));
  std::vector<std::uint32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (add_special_tokens) ids.insert(ids.end(), impl_->prefix_ids.begin(), impl_->prefix_ids.end());
  std::vector<Segment> segments;
  split_on_added_tokens(text, segments);
  for (const Segment& s : segments) {
    if (s.token_id) {
      ids.push_back(*s.token_id);
    } else {
      KVROUTE_TRY(encode_text_segment(text.substr(s.begin, s.end - s.begin), ids));
    }
  }
  if (add_special_tokens) ids.insert(ids.end(), impl_->suffix_ids.begin(), impl_->suffix_ids.end());
  if (text.size() > (1u << 20)) scratch().trim();
  return ids;
}

bool Tokenizer::is_safe_cut_token(std::uint32_t id) const {
  return id < impl_->id_unsafe_cut.size() && !impl_->id_unsafe_cut[id];
}

std::span<const std::uint32_t> Tokenizer::post_prefix() const { return impl_->prefix_ids; }
std::span<const std::uint32_t> Tokenizer::post_suffix() const { return impl_->suffix_ids; }

// ---------------------------------------------------------------------------------------------
// Decoding and lookups.

std::string Tokenizer::decode(std::span<const std::uint32_t> ids, bool skip_special_tokens) const {
  const Impl& im = *impl_;
  std::string bytes;
  bool first = true;
  for (std::uint32_t id : ids) {
    if (id >= im.id_present.size() || !im.id_present[id]) continue;
    if (skip_special_tokens && im.id_special[id]) continue;
    if (im.byte_level_decoder) {
      bytes += im.id_to_bytes[id];
    } else {
      if (!first) bytes.push_back(' ');
      bytes += im.id_to_token[id];
    }
    first = false;
  }
  return internal::utf8_lossy(bytes);
}

std::optional<std::uint32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (const auto* id = impl_->added_by_content.find(token)) return *id;
  if (const auto* id = impl_->vocab.find(token)) return *id;
  return std::nullopt;
}

std::optional<std::string> Tokenizer::id_to_token(std::uint32_t id) const {
  if (id >= impl_->id_present.size() || !impl_->id_present[id]) return std::nullopt;
  return impl_->id_to_token[id];
}

std::size_t Tokenizer::vocab_size() const { return impl_->id_to_token.size(); }
const TokenizerConfig& Tokenizer::config() const { return impl_->config; }
std::size_t Tokenizer::max_input_bytes() const { return impl_->options.max_input_bytes; }

}  // namespace kvroute::tokenizer
