// File: tokenizer/prefix_caching_tokenizer.h
//
// PrefixCachingTokenizer: a Tokenizer front that reuses the ids of a text prefix it has encoded
// before (a shared system prompt, the earlier turns of a conversation) and only encodes the rest.
// The result is always exactly Tokenizer::encode's: reuse happens only at boundaries the tokenizer
// cannot merge across.
//
//   PrefixCachingTokenizer cached(std::move(tok));
//   KVROUTE_TRY(auto ids, cached.encode(rendered_chat, /*add_special_tokens=*/false));
//
// Correctness (docs/adr/0102): HF first splits the input on added tokens; each text piece between
// them is normalized, pre-tokenized and BPE-encoded on its own. So encode(text) = post(concat of
// the pieces' ids). The cache is a tree whose edges are runs of pieces ending with an added token
// (one without rstrip and single_word, whose match cannot depend on the bytes after it). Each
// request's own split is computed in full (cheap, linear) and its runs are looked up from the root
// by exact bytes; a run whose bytes match a cached edge and ends at a boundary of this request's
// split was split identically, so its cached ids are exact.
//
// Memory is bounded by max_bytes (text + ids held); when full the whole cache is dropped.
// Thread-safety: encode() and stats() may be called concurrently (one mutex guards the tree;
// tokenizing the uncached rest happens outside it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/mutex.h"
#include "common/result.h"
#include "tokenizer/tokenizer.h"

namespace kvroute::tokenizer {

struct PrefixCacheOptions {
  std::size_t max_bytes = std::size_t{64} << 20;
};

struct PrefixCacheStats {
  std::uint64_t requests = 0;
  std::uint64_t input_bytes = 0;
  std::uint64_t reused_bytes = 0;  // bytes whose ids came from the cache
  std::uint64_t reused_tokens = 0;
  std::size_t nodes = 0;
  std::size_t held_bytes = 0;
  std::uint64_t resets = 0;  // times the cache was dropped for being full
};

class PrefixCachingTokenizer {
 public:
  explicit PrefixCachingTokenizer(Tokenizer tokenizer, PrefixCacheOptions options = {});

  // Same result as tokenizer().encode(text, add_special_tokens).
  Result<std::vector<std::uint32_t>> encode(std::string_view text, bool add_special_tokens = true);
  PrefixCacheStats stats() const;
  const Tokenizer& tokenizer() const { return tokenizer_; }

 private:
  struct Node {
    std::uint32_t parent = 0;
    std::uint64_t hash = 0;
    std::string text;                // the run's bytes
    std::vector<std::uint32_t> ids;  // the run's ids
  };
  // 0: none.
  std::uint32_t find_child(std::uint32_t parent, std::string_view run, std::uint64_t hash) const
      REQUIRES(mu_);

  const Tokenizer tokenizer_;
  const PrefixCacheOptions options_;
  mutable Mutex mu_;
  std::vector<Node> nodes_ GUARDED_BY(mu_);  // nodes_[0] is the root
  // hash(parent, run) -> node
  std::unordered_multimap<std::uint64_t, std::uint32_t> children_ GUARDED_BY(mu_);
  std::uint64_t generation_ GUARDED_BY(mu_) = 0;
  PrefixCacheStats stats_ GUARDED_BY(mu_);
};

}  // namespace kvroute::tokenizer
