// File: prompt/prompt.h
//
// PromptEncoder: the token ids an engine computes for an OpenAI request, shared by the simulator
// (what the engine caches) and the router (what it looks up), so both agree block for block.
//  - completions: a text prompt is encoded with add_special_tokens=true (Llama 3 prepends
//    <|begin_of_text|>), a token-id prompt is used as is;
//  - chat: the messages are rendered with the tokenizer's chat template (add_generation_prompt
//    true, as vLLM's default) and encoded with add_special_tokens=false, as vLLM does.
// Without a tokenizer directory it falls back to a deterministic word tokenizer (one id per
// whitespace-separated word, hashed into the vocabulary) and a plain "<|role|>\ncontent\n" chat
// format: good enough for simulation, and identical on both sides.
// Thread-safety: immutable after load(); encode() is safe from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "openai/request.h"

namespace kvroute::prompt {

class PromptEncoder {
 public:
  // `tokenizer_path` empty: the word tokenizer.
  static Result<std::shared_ptr<const PromptEncoder>> load(const std::string& tokenizer_path,
                                                           std::uint32_t vocab_size = 128256);
  ~PromptEncoder();

  Result<std::vector<std::uint32_t>> encode(const openai::ParsedRequest& req) const;
  // Text of generated ids (for responses).
  std::string decode(const std::vector<std::uint32_t>& ids) const;
  std::string decode_one(std::uint32_t id) const;
  bool has_tokenizer() const;
  std::uint32_t vocab_size() const { return vocab_size_; }

 private:
  PromptEncoder();
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::uint32_t vocab_size_ = 128256;
};

// A prompt as the prefix indexes see it: chained block hashes (`block_size`-token blocks when an
// encoder is given and succeeds, else blocks of 4 * block_size characters, as GIE's approximate
// prefix plugin does) seeded with `seed` (the model's hash), and the prompt tokens they stand for.
// One function for every front door (serve, epp), so they route on the same blocks.
struct PromptBlocks {
  std::vector<std::uint32_t> tokens;  // empty without a tokenizer
  std::vector<std::uint64_t> blocks;
  std::uint32_t tokens_per_block = 16;
  std::uint32_t prompt_tokens = 0;  // exact with a tokenizer, else estimated (characters / 4)
};
PromptBlocks prompt_blocks(const openai::ParsedRequest& req, const PromptEncoder* enc,
                           std::uint32_t block_size, std::uint64_t seed);

// The word tokenizer on its own (for workload generators that must predict the ids).
std::vector<std::uint32_t> word_tokens(std::string_view text, std::uint32_t vocab_size);

}  // namespace kvroute::prompt
