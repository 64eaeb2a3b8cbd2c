// libFuzzer target: the template parser and the interpreter on arbitrary template sources.
// Every input must compile or fail with an Error; whatever compiles must render or fail with an
// Error, within the limits (no crash, no hang, no unbounded memory).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "chat_template/chat_template.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using kvroute::chat_template::ChatTemplate;
  using kvroute::chat_template::Options;
  Options options;
  options.max_output_bytes = 1 << 16;
  options.max_loop_iterations = 1 << 12;
  options.max_recursion_depth = 64;
  options.clock = [] { return 0LL; };
  std::string_view source(reinterpret_cast<const char*>(data), size);
  auto compiled = ChatTemplate::compile(source, options);
  if (!compiled) return 0;
  static constexpr std::string_view kContext =
      R"({"messages":[{"role":"system","content":"sys"},{"role":"user","content":"hi ü"},)"
      R"({"role":"assistant","content":"<think>r</think>a","tool_calls":[{"id":"abcdefghi","function":{"name":"f","arguments":{"x":1}}}]},)"
      R"({"role":"tool","content":"ok"}],"add_generation_prompt":true,"bos_token":"<s>","eos_token":"</s>",)"
      R"("tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"n":3,"f":0.5,"x":null})";
  (void)compiled->render(kContext);
  return 0;
}
