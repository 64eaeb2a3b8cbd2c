// File: tokenizer/tokenize_command.h
//
// `kvroute tokenize`: reads stdin, prints the token ids as a JSON array on one line (what vLLM
// would compute).
//   echo -n "Hello world" | kvroute tokenize --tokenizer /models/llama3          -> [9906,1917]
//   echo '[{"role":"user","content":"hi"}]' | kvroute tokenize --tokenizer DIR --chat
//   --add-generation-prompt
// With chat, stdin is a JSON array of messages; the tokenizer's chat template
// (tokenizer_config.json) is rendered with {messages, add_generation_prompt, bos_token, eos_token}
// and the text is encoded with add_special_tokens=false, as vLLM does for chat requests. With
// render, the rendered text is printed instead. Thread-safety: stateless; each call loads the
// tokenizer.
#pragma once

#include <cstddef>
#include <iosfwd>
#include <string>

namespace kvroute::tokenizer {

struct TokenizeCommandOptions {
  std::string
      tokenizer_path;  // directory with tokenizer.json (+ tokenizer_config.json), or the file
  bool chat = false;   // stdin is a JSON array of chat messages
  bool add_generation_prompt = false;  // with chat
  bool render = false;                 // with chat: print the rendered prompt, not ids
  bool add_special_tokens = true;      // without chat: HF's add_special_tokens
  std::string chat_template_name;      // with chat: a named template ("tool_use"); empty = default
  std::size_t max_input_bytes = std::size_t{64} << 20;
};

// Returns the process exit code: 0 on success, 1 on error (message on stderr).
int run_tokenize_command(const TokenizeCommandOptions& options);
// Same, with explicit streams (for tests).
int run_tokenize_command(const TokenizeCommandOptions& options, std::istream& in, std::ostream& out,
                         std::ostream& err);

}  // namespace kvroute::tokenizer
