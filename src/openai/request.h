// File: openai/request.h
//
// Parses an OpenAI completions or chat-completions request body once, early, into the fields the
// router needs (model, prompt or messages, stream flags, user). The body itself is forwarded byte
// for byte; this struct is only read. Errors carry the message and the offending parameter for a
// 400 in OpenAI's shape.
//
// Thread-safety: parse_request() is safe from any thread: it parses with a thread-local simdjson
// parser (a body over 1 MiB gets one of its own). continues_conversation() is pure. A
// ParsedRequest is a value, not synchronized: it belongs to the request that parsed it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace kvroute::openai {

enum class Endpoint { kCompletions, kChatCompletions };

struct ChatMessage {
  std::string role;
  std::string content;  // text parts joined; empty for null content
};

struct ParsedRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string model;  // empty when absent
  bool stream = false;
  bool include_usage = false;             // stream_options.include_usage
  std::string prompt;                     // completions: the (first) text prompt
  std::vector<std::uint32_t> prompt_ids;  // completions: a token-id prompt
  std::vector<ChatMessage> messages;      // chat
  std::string messages_json;              // chat: the raw JSON array, for template rendering
  std::string user;
  std::optional<std::int64_t> max_tokens;
  // The text the router keys its prefix index on when it does not tokenize: the prompt, or the
  // messages as "role\ncontent\n" lines.
  std::string routing_text;
};

struct ParseError {
  std::string message;
  std::string param;  // the offending field, may be empty
};

Expected<ParsedRequest, ParseError> parse_request(Endpoint endpoint, std::string_view body);

// Whether a chat request carries earlier turns of its conversation (an assistant message): its
// prompt then starts with that conversation's own history (routing: docs/adr/0010).
bool continues_conversation(const ParsedRequest& r);

}  // namespace kvroute::openai
