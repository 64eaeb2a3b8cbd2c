// File: chat_template/chat_template.h
//
// ChatTemplate: a compiled HuggingFace chat template (the Jinja2 source found in
// tokenizer_config.json "chat_template") that renders chat messages into the exact prompt text
// vLLM / HF transformers produce. The interpreter implements the Jinja2 subset used by the chat
// templates of Llama 3.x, Qwen2.5/Qwen3, Mistral/Mixtral and Gemma 2/3, with HF's environment
// settings (trim_blocks=True, lstrip_blocks=True, tojson = json.dumps(ensure_ascii=False)).
//
// Thread-safety: a ChatTemplate is immutable after compile(); render() is const and may be called
// concurrently from any number of threads. Copy and move are cheap (the parsed tree is shared).
//
//   KVROUTE_TRY(auto tmpl, ChatTemplate::compile(source));
//   KVROUTE_TRY(std::string prompt, tmpl.render(R"({"messages":[{"role":"user","content":"hi"}],
//                                                   "add_generation_prompt":true})"));
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/result.h"

namespace kvroute::chat_template {

// Limits and environment of one compiled template. Defaults suit real chat templates.
struct Options {
  std::size_t max_output_bytes = 16u << 20;  // render fails once the output would exceed this
  std::size_t max_recursion_depth = 256;     // nesting of expressions / macro calls / blocks
  std::size_t max_loop_iterations =
      1u << 20;  // total loop iterations (and range() size) of one render
  std::size_t max_template_bytes = 4u << 20;  // compile refuses larger sources
  // strftime_now(format) clock: returns seconds since the Unix epoch (UTC). Unset = system clock.
  // A context variable "date_string" is the templates' own override and is unaffected by this.
  std::function<long long()> clock;
};

class ChatTemplate {
 public:
  // Parses and checks the template. Any construct the interpreter does not support fails HERE with
  // the construct and the line number ("unsupported filter 'xyz' at line 3"), never at render time
  // silently.
  static Result<ChatTemplate> compile(std::string_view source);
  static Result<ChatTemplate> compile(std::string_view source, Options options);

  // context_json: a JSON object whose keys become the template's variables, e.g.
  // {"messages":[{"role":"user","content":"hi"}], "add_generation_prompt":true,
  //  "bos_token":"<|begin_of_text|>", "eos_token":"<|eot_id|>", "tools":[...]}
  // Errors: malformed JSON / non-object context, raise_exception(msg) (the message is returned),
  // runtime type errors as Jinja would raise them, exceeded limits.
  Result<std::string> render(std::string_view context_json) const;

  // Opaque compiled program; public only so the implementation file can define it.
  struct Program;

 private:
  explicit ChatTemplate(std::shared_ptr<const Program> program) : program_(std::move(program)) {}
  std::shared_ptr<const Program> program_;
};

}  // namespace kvroute::chat_template
