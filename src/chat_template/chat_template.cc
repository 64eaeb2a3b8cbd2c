// ChatTemplate: compile() parses into an immutable Node tree; render() evaluates it with a
// per-call Renderer. Runtime failures are raised internally as RenderError and converted to
// Error values at the API boundary (docs/adr/0121-chat-template-internal-exceptions.md).
#include "chat_template/chat_template.h"

#include <simdjson.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <limits>
#include <unordered_set>

#include "chat_template/internal/renderer.h"

namespace kvroute::chat_template {

struct ChatTemplate::Program {
  Options options;
  std::unique_ptr<Node> root;
};

namespace {

using internal::Renderer;
using internal::RenderError;

Value from_json(simdjson::dom::element e) {
  switch (e.type()) {
    case simdjson::dom::element_type::ARRAY: {
      std::vector<Value> items;
      for (simdjson::dom::element x : simdjson::dom::array(e)) items.push_back(from_json(x));
      return Value::array(std::move(items));
    }
    case simdjson::dom::element_type::OBJECT: {
      Value v = Value::object();
      for (simdjson::dom::key_value_pair kv : simdjson::dom::object(e)) {
        v.obj->set(std::string(kv.key), from_json(kv.value));
      }
      return v;
    }
    case simdjson::dom::element_type::INT64:
      return Value::integer(int64_t(e));
    case simdjson::dom::element_type::UINT64:
      return Value::floating(static_cast<double>(uint64_t(e)));
    case simdjson::dom::element_type::DOUBLE:
      return Value::floating(double(e));
    case simdjson::dom::element_type::STRING:
      return Value::string(std::string(std::string_view(e)));
    case simdjson::dom::element_type::BOOL:
      return Value::boolean(bool(e));
    case simdjson::dom::element_type::NULL_VALUE:
    default:
      return Value::none();
  }
}

}  // namespace

Result<ChatTemplate> ChatTemplate::compile(std::string_view source) {
  return compile(source, Options{});
}

Result<ChatTemplate> ChatTemplate::compile(std::string_view source, Options options) {
  ParseLimits limits;
  limits.max_depth = options.max_recursion_depth;
  limits.max_bytes = options.max_template_bytes;
  KVROUTE_TRY(auto root, parse_template(source, limits));
  auto program = std::make_shared<Program>();
  program->options = std::move(options);
  program->root = std::move(root);
  return ChatTemplate(std::move(program));
}

Result<std::string> ChatTemplate::render(std::string_view context_json) const {
  if (!program_) return fail(Error::internal("chat_template: render on an empty template"));
  Value context;
  {
    simdjson::dom::parser parser;
    simdjson::padded_string padded(context_json);
    simdjson::dom::element doc;
    if (auto err = parser.parse(padded).get(doc); err) {
      return fail(Error::invalid(std::string("chat_template: context is not valid JSON: ") +
                                 simdjson::error_message(err)));
    }
    if (doc.type() != simdjson::dom::element_type::OBJECT) {
      return fail(Error::invalid("chat_template: context must be a JSON object"));
    }
    context = from_json(doc);
  }
  try {
    Renderer renderer(program_->options, std::move(context));
    return renderer.run(*program_->root);
  } catch (const RenderError& e) {
    if (e.raised) return fail(Error::invalid(e.message));
    return fail(Error::invalid("chat_template: " + e.message));
  } catch (const std::bad_alloc&) {
    return fail(Error::invalid("chat_template: out of memory while rendering"));
  }
}

}  // namespace kvroute::chat_template
