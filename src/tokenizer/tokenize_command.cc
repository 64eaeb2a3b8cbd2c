// File: tokenizer/tokenize_command.cc
#include "tokenizer/tokenize_command.h"

#include <simdjson.h>

#include <iostream>
#include <iterator>
#include <string>

#include "chat_template/chat_template.h"
#include "common/json.h"
#include "tokenizer/tokenizer.h"

namespace kvroute::tokenizer {
namespace {

std::string json_quote(std::string_view s) {
  std::string out = "\"";
  append_json_escaped(out, s);
  out.push_back('"');
  return out;
}

Result<std::string> render_chat(const Tokenizer& tok, const TokenizeCommandOptions& o,
                                std::string_view messages) {
  simdjson::dom::parser parser;
  simdjson::padded_string padded(messages);
  simdjson::dom::element root;
  if (parser.parse(padded).get(root) != simdjson::SUCCESS || !root.is_array()) {
    return fail(Error::invalid("with --chat, stdin must be a JSON array of messages"));
  }
  const TokenizerConfig& cfg = tok.config();
  const std::string* source = nullptr;
  if (o.chat_template_name.empty()) {
    source = cfg.default_chat_template();
  } else if (auto it = cfg.chat_templates.find(o.chat_template_name);
             it != cfg.chat_templates.end()) {
    source = &it->second;
  }
  if (source == nullptr) {
    return fail(Error::not_found(
        "no chat template" +
        (o.chat_template_name.empty() ? std::string() : " named '" + o.chat_template_name + "'") +
        " in tokenizer_config.json"));
  }
  KVROUTE_TRY(auto tmpl, chat_template::ChatTemplate::compile(*source));
  std::string context = "{\"messages\":";
  context += messages;
  context += ",\"add_generation_prompt\":";
  context += o.add_generation_prompt ? "true" : "false";
  context += ",\"bos_token\":" + json_quote(cfg.bos_token.value_or(""));
  context += ",\"eos_token\":" + json_quote(cfg.eos_token.value_or(""));
  context += "}";
  return tmpl.render(context);
}

}  // namespace

int run_tokenize_command(const TokenizeCommandOptions& o, std::istream& in, std::ostream& out,
                         std::ostream& err) {
  LoadOptions lo;
  lo.max_input_bytes = o.max_input_bytes;
  auto tok = Tokenizer::load(o.tokenizer_path, lo);
  if (!tok) {
    err << "tokenize: " << tok.error().message << "\n";
    return 1;
  }
  // Read at most max_input_bytes + 1 so an oversized input is refused without reading it all.
  std::string input;
  char buf[1 << 16];
  while (in && input.size() <= o.max_input_bytes) {
    in.read(buf, sizeof buf);
    input.append(buf, static_cast<std::size_t>(in.gcount()));
  }
  if (input.size() > o.max_input_bytes) {
    err << "tokenize: input exceeds the limit of " << o.max_input_bytes << " bytes\n";
    return 1;
  }
  std::string text;
  bool add_special = o.add_special_tokens;
  if (o.chat) {
    auto rendered = render_chat(*tok, o, input);
    if (!rendered) {
      err << "tokenize: chat template: " << rendered.error().message << "\n";
      return 1;
    }
    if (o.render) {
      out << *rendered;
      out.flush();
      return 0;
    }
    text = std::move(*rendered);
    add_special = false;  // vLLM encodes rendered chat prompts without adding special tokens
  } else {
    text = std::move(input);
  }
  auto ids = tok->encode(text, add_special);
  if (!ids) {
    err << "tokenize: " << ids.error().message << "\n";
    return 1;
  }
  std::string line = "[";
  for (std::size_t i = 0; i < ids->size(); ++i) {
    if (i) line.push_back(',');
    line += std::to_string((*ids)[i]);
  }
  line += "]\n";
  out << line;
  out.flush();
  return out ? 0 : 1;
}

int run_tokenize_command(const TokenizeCommandOptions& options) {
  return run_tokenize_command(options, std::cin, std::cout, std::cerr);
}

}  // namespace kvroute::tokenizer
