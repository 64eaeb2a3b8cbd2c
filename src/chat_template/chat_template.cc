#include "chat_template/chat_template.h"

namespace kvroute::chat_template {

struct ChatTemplate::Program {
  Options options;
};

Result<ChatTemplate> ChatTemplate::compile(std::string_view source) { return compile(source, Options{}); }

Result<ChatTemplate> ChatTemplate::compile(std::string_view, Options) {
  return fail(Error::internal("chat_template: interpreter not implemented yet"));
}

Result<std::string> ChatTemplate::render(std::string_view) const {
  return fail(Error::internal("chat_template: interpreter not implemented yet"));
}

}  // namespace kvroute::chat_template
