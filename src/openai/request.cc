#include "openai/request.h"

#include <simdjson.h>

#include <optional>
#include <string_view>
#include <utility>

namespace kvroute::openai {

namespace {

using simdjson::dom::element;
using simdjson::dom::element_type;

Unexpected<ParseError> bad(std::string msg, std::string param = {}) {
  return make_unexpected(ParseError{std::move(msg), std::move(param)});
}

// Of duplicate keys, the last counts: the backend (vLLM: Python's json into a dict) keeps the last,
// and routing must key on the value the backend will use. simdjson's own lookup finds the first,
// so objects are walked here instead.
std::optional<element> last_field(simdjson::dom::object obj, std::string_view key) {
  std::optional<element> found;
  for (const auto field : obj) {
    if (field.key == key) found = field.value;
  }
  return found;
}

// Collects the text of a message's content: a string, null, or an array of parts with "text".
Expected<std::string, ParseError> content_text(element content, std::size_t index) {
  switch (content.type()) {
    case element_type::STRING:
      return std::string(std::string_view(content.get_string().value_unsafe()));
    case element_type::NULL_VALUE:
      return std::string();
    case element_type::ARRAY: {
      std::string out;
      simdjson::dom::array parts = content.get_array().value_unsafe();
      for (element part : parts) {
        if (!part.is_object()) {
          return bad("messages[" + std::to_string(index) + "].content parts must be objects",
                     "messages");
        }
        const auto text = last_field(part.get_object().value_unsafe(), "text");
        if (text && text->is_string()) out += std::string_view(text->get_string().value_unsafe());
      }
      return out;
    }
    default:
      return bad(
          "messages[" + std::to_string(index) + "].content must be a string, an array or null",
          "messages");
  }
}

}  // namespace

Expected<ParsedRequest, ParseError> parse_request(Endpoint endpoint, std::string_view body) {
  // A parser keeps the capacity of the largest document it parsed, ~14 bytes per input byte
  // (tape, structural indexes, strings): a body over 1 MiB gets a parser of its own, freed after,
  // instead of leaving hundreds of megabytes with the thread-local one for good.
  constexpr std::size_t kReusedParserMaxBytes = 1u << 20;
  thread_local simdjson::dom::parser reused;
  std::optional<simdjson::dom::parser> own;
  simdjson::dom::parser& parser = body.size() <= kReusedParserMaxBytes ? reused : own.emplace();
  ParsedRequest out;
  out.endpoint = endpoint;
  element doc;
  if (auto err = parser.parse(body.data(), body.size()).get(doc); err) {
    return bad(std::string("invalid JSON body: ") + simdjson::error_message(err));
  }
  if (!doc.is_object()) return bad("the request body must be a JSON object");

  // The fields routing reads, found in one pass over the object (a key lookup each would scan it
  // again); the last of duplicate keys counts, as for the backend (last_field).
  struct {
    std::optional<element> model, stream, stream_options, user, max_tokens, max_completion_tokens,
        prompt, messages;
  } f;
  const simdjson::dom::object top = doc.get_object().value_unsafe();
  for (const auto field : top) {
    const std::string_view k = field.key;
    std::optional<element>* slot = nullptr;
    if (k == "model")
      slot = &f.model;
    else if (k == "stream")
      slot = &f.stream;
    else if (k == "stream_options")
      slot = &f.stream_options;
    else if (k == "user")
      slot = &f.user;
    else if (k == "max_tokens")
      slot = &f.max_tokens;
    else if (k == "max_completion_tokens")
      slot = &f.max_completion_tokens;
    else if (k == "prompt")
      slot = &f.prompt;
    else if (k == "messages")
      slot = &f.messages;
    if (slot) *slot = field.value;
  }

  if (f.model) {
    if (!f.model->is_string()) return bad("'model' must be a string", "model");
    out.model = std::string(std::string_view(f.model->get_string().value_unsafe()));
  }
  if (f.stream && !f.stream->is_null()) {
    if (!f.stream->is_bool()) return bad("'stream' must be a boolean", "stream");
    out.stream = f.stream->get_bool().value_unsafe();
  }
  if (f.stream_options && !f.stream_options->is_null()) {
    element so = *f.stream_options;
    if (!so.is_object()) return bad("'stream_options' must be an object", "stream_options");
    if (auto iu = last_field(so.get_object().value_unsafe(), "include_usage");
        iu && !iu->is_null()) {
      if (!iu->is_bool())
        return bad("'stream_options.include_usage' must be a boolean", "stream_options");
      out.include_usage = iu->get_bool().value_unsafe();
    }
  }
  if (f.user && !f.user->is_null()) {
    if (!f.user->is_string()) return bad("'user' must be a string", "user");
    out.user = std::string(std::string_view(f.user->get_string().value_unsafe()));
  }
  for (auto [key, field] :
       {std::pair{std::string_view("max_tokens"), &f.max_tokens},
        std::pair{std::string_view("max_completion_tokens"), &f.max_completion_tokens}}) {
    if (*field && !(*field)->is_null()) {
      element mt = **field;
      if (!mt.is_int64() && !mt.is_uint64())
        return bad(std::string("'").append(key) + "' must be an integer", std::string(key));
      std::int64_t v = mt.is_int64() ? mt.get_int64().value_unsafe() : -1;
      if (v < 0)
        return bad(std::string("'").append(key) + "' must be a non-negative integer",
                   std::string(key));
      out.max_tokens = v;
    }
  }

  if (endpoint == Endpoint::kCompletions) {
    if (!f.prompt) return bad("'prompt' is required", "prompt");
    element p = *f.prompt;
    if (p.is_string()) {
      out.prompt = std::string(std::string_view(p.get_string().value_unsafe()));
    } else if (p.is_array()) {
      simdjson::dom::array arr = p.get_array().value_unsafe();
      if (arr.size() == 0) return bad("'prompt' must not be empty", "prompt");
      element first = arr.at(0).value_unsafe();
      if (first.is_string()) {
        for (element e : arr) {
          if (!e.is_string()) return bad("'prompt' array must hold only strings", "prompt");
        }
        out.prompt = std::string(std::string_view(first.get_string().value_unsafe()));
      } else if (first.is_int64() || first.is_uint64() || first.is_array()) {
        // A token-id prompt, or a batch of them (the first one keys routing).
        simdjson::dom::array ids = arr;
        if (first.is_array()) ids = first.get_array().value_unsafe();
        for (element e : ids) {
          if (!e.is_int64() && !e.is_uint64())
            return bad("'prompt' token ids must be integers", "prompt");
          std::int64_t v = e.is_int64() ? e.get_int64().value_unsafe() : -1;
          if (v < 0 || v > 0xffffffffLL)
            return bad("'prompt' token ids must be non-negative 32-bit", "prompt");
          out.prompt_ids.push_back(static_cast<std::uint32_t>(v));
        }
      } else {
        return bad("'prompt' must be a string, an array of strings or an array of token ids",
                   "prompt");
      }
    } else {
      return bad("'prompt' must be a string, an array of strings or an array of token ids",
                 "prompt");
    }
    if (!out.prompt.empty()) {
      out.routing_text = out.prompt;
    } else {
      out.routing_text.assign(reinterpret_cast<const char*>(out.prompt_ids.data()),
                              out.prompt_ids.size() * sizeof(std::uint32_t));
    }
  } else {
    if (!f.messages) return bad("'messages' is required", "messages");
    if (!f.messages->is_array()) return bad("'messages' must be an array", "messages");
    simdjson::dom::array arr = f.messages->get_array().value_unsafe();
    if (arr.size() == 0) return bad("'messages' must not be empty", "messages");
    std::size_t i = 0;
    for (element m : arr) {
      if (!m.is_object())
        return bad("messages[" + std::to_string(i) + "] must be an object", "messages");
      // Role and content in one walk of the message, the last of duplicates counting.
      std::optional<element> role, content;
      const simdjson::dom::object fields = m.get_object().value_unsafe();
      for (const auto field : fields) {
        if (field.key == "role")
          role = field.value;
        else if (field.key == "content")
          content = field.value;
      }
      if (!role || !role->is_string()) {
        return bad("messages[" + std::to_string(i) + "].role must be a string", "messages");
      }
      ChatMessage msg;
      msg.role = std::string(std::string_view(role->get_string().value_unsafe()));
      if (content) {
        auto text = content_text(*content, i);
        if (!text) return make_unexpected(text.error());
        msg.content = std::move(*text);
      }
      out.routing_text += msg.role;
      out.routing_text += '\n';
      out.routing_text += msg.content;
      out.routing_text += '\n';
      out.messages.push_back(std::move(msg));
      ++i;
    }
    out.messages_json = simdjson::minify(*f.messages);
  }
  return out;
}

bool continues_conversation(const ParsedRequest& r) {
  for (const auto& m : r.messages) {
    if (m.role == "assistant") return true;
  }
  return false;
}

}  // namespace kvroute::openai
