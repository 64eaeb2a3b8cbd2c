#include "cli/commands.h"

#include <CLI/CLI.hpp>
#include <cstdio>

#include "bench/bench_command.h"
#include "doctor/doctor_command.h"
#include "epp/epp_command.h"
#include "proxy/serve_command.h"
#include "sim/sim_command.h"
#include "tokenizer/tokenize_command.h"
#include "top/top_command.h"

namespace kvroute::cli {

int run(int argc, char** argv) {
  CLI::App app{"kvroute: a KV-cache-aware router for LLM inference"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "kvroute 0.1.0");
  int rc = 0;
  auto* version = app.add_subcommand("version", "Print the version");
  version->callback([] { std::puts("kvroute 0.1.0"); });
  proxy::add_serve_command(app, rc);
  epp::add_epp_command(app, rc);
  sim::add_sim_command(app, rc);
  bench::add_bench_command(app, rc);
  bench::add_demo_command(app, rc);
  doctor::add_doctor_command(app, rc);
  top::add_top_command(app, rc);

  auto tok = std::make_shared<tokenizer::TokenizeCommandOptions>();
  auto* tokenize = app.add_subcommand("tokenize", "Print the token ids vLLM computes for stdin");
  tokenize
      ->add_option("--tokenizer", tok->tokenizer_path, "HF tokenizer directory or tokenizer.json")
      ->required();
  tokenize->add_flag("--chat", tok->chat, "stdin is a JSON array of chat messages");
  tokenize->add_flag("--add-generation-prompt", tok->add_generation_prompt,
                     "With --chat: add the assistant header");
  tokenize->add_flag("--render", tok->render, "With --chat: print the rendered prompt, not ids");
  tokenize->add_option("--chat-template", tok->chat_template_name,
                       "A named chat template (e.g. tool_use)");
  tokenize->add_option("--max-input-bytes", tok->max_input_bytes, "Input size limit");
  tokenize->callback([tok, &rc] { rc = tokenizer::run_tokenize_command(*tok); });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return rc;
}

}  // namespace kvroute::cli
