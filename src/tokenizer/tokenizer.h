// File: tokenizer/tokenizer.h
//
// Tokenizer: a byte-level BPE tokenizer loaded from a HuggingFace tokenizer.json (Llama 3,
// Qwen2/2.5/3, GPT-2 style), producing exactly the ids HuggingFace `tokenizers` produces. vLLM's
// prefix cache works on blocks of token ids, so kvroute must compute the same ids the engine
// computes.
//
//   KVROUTE_TRY(auto tok, Tokenizer::load("/models/llama3"));   // dir with tokenizer.json, or the
//   file KVROUTE_TRY(auto ids, tok.encode("Hello world"));             // {9906, 1917} std::string
//   text = tok.decode(ids);                            // "Hello world"
//
// Supported: model BPE (vocab, merges in "a b" or ["a","b"] form, ignore_merges, unk_token), added
// and special tokens (lstrip/rstrip/normalized/special/single_word), normalizer null or NFC,
// pre-tokenizer ByteLevel (use_regex, add_prefix_space) or Sequence of Split(Llama 3 / Qwen2 /
// GPT-2 regex, Isolated) and ByteLevel, post-processor null / ByteLevel / TemplateProcessing /
// Sequence of those, decoder ByteLevel. Everything else fails to load with a message naming the
// unsupported part (docs/adr/0100). The Split regexes are hand-written scanners (pretokenizer.h);
// an unknown pattern fails to load.
//
// Input must be valid UTF-8 (HF's bindings take Rust/JS strings, which cannot hold invalid UTF-8;
// we reject it with an error) and at most max_input_bytes long (an error, not a crash).
//
// Thread-safety: a loaded Tokenizer is immutable; all const methods may be called concurrently.
// Copies share the loaded data. encode() keeps a bounded per-thread cache of pre-token encodings
// (no locks).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace kvroute::tokenizer {

// What tokenizer_config.json says (transformers' view of the tokenizer). All fields optional.
struct TokenizerConfig {
  std::optional<std::string> bos_token;  // "…" or {"content": "…"} form
  std::optional<std::string> eos_token;
  std::optional<bool> add_bos_token;
  std::optional<bool> add_eos_token;
  // chat_template: a single string is stored under "default"; the named-list form
  // [{"name": "default", "template": …}, {"name": "tool_use", …}] is stored by name.
  std::map<std::string, std::string> chat_templates;
  // The template used when no name is asked for: "default" if present, else none.
  const std::string* default_chat_template() const {
    auto it = chat_templates.find("default");
    return it == chat_templates.end() ? nullptr : &it->second;
  }
};

struct LoadOptions {
  std::size_t max_input_bytes = std::size_t{64} << 20;  // encode() refuses longer input
  std::size_t word_cache_entries = std::size_t{1}
                                   << 15;  // per-thread pre-token cache; 0 disables it
};

class Tokenizer {
 public:
  // path: a directory holding tokenizer.json (and optionally tokenizer_config.json), or a
  // tokenizer.json file (then tokenizer_config.json next to it is read if present).
  static Result<Tokenizer> load(const std::string& path, const LoadOptions& options = {});
  // From JSON texts; config_json may be empty.
  static Result<Tokenizer> from_json(std::string_view tokenizer_json,
                                     std::string_view config_json = {},
                                     const LoadOptions& options = {});

  // HF's Tokenizer.encode(text, add_special_tokens).ids. Special tokens in the text are always
  // recognized.
  Result<std::vector<std::uint32_t>> encode(std::string_view text,
                                            bool add_special_tokens = true) const;
  // HF's decode(ids, skip_special_tokens); unknown ids are skipped, invalid UTF-8 becomes U+FFFD.
  std::string decode(std::span<const std::uint32_t> ids, bool skip_special_tokens = false) const;

  std::optional<std::uint32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(std::uint32_t id) const;
  std::size_t vocab_size() const;  // largest id + 1 over the model and added tokens
  const TokenizerConfig& config() const;
  std::size_t max_input_bytes() const;

  // ---- Lower level, for PrefixCachingTokenizer
  // ------------------------------------------------------- A piece of the input after the first
  // split on added tokens that are not normalized (HF's first pass): either one added token
  // (token_id set) or a run of text encoded on its own.
  struct Segment {
    std::uint32_t begin = 0;
    std::uint32_t end = 0;
    std::optional<std::uint32_t> token_id;
  };
  // Checks size and UTF-8. encode() does this itself.
  Status check_input(std::string_view text) const;
  // Appends the segments of text (which must have passed check_input) to out.
  void split_on_added_tokens(std::string_view text, std::vector<Segment>& out) const;
  // Appends the ids of one text segment (normalize, split on normalized added tokens, pre-tokenize,
  // BPE).
  Status encode_text_segment(std::string_view text, std::vector<std::uint32_t>& out) const;
  // Whether the cache may cut right after this added token: its match cannot depend on the bytes
  // after it (no rstrip, no single_word). See prefix_caching_tokenizer.h.
  bool is_safe_cut_token(std::uint32_t id) const;
  // Ids the post-processor puts before and after the sequence when add_special_tokens is true.
  std::span<const std::uint32_t> post_prefix() const;
  std::span<const std::uint32_t> post_suffix() const;

  struct Impl;

 private:
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

// Parses tokenizer_config.json text.
Result<TokenizerConfig> parse_tokenizer_config(std::string_view json);

}  // namespace kvroute::tokenizer
