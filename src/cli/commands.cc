#include "cli/commands.h"

#include <CLI/CLI.hpp>

#include <cstdio>

#include "proxy/serve_command.h"

namespace kvroute::cli {

int run(int argc, char** argv) {
  CLI::App app{"kvroute: a KV-cache-aware router for LLM inference"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "kvroute 0.1.0");
  int rc = 0;
  auto* version = app.add_subcommand("version", "Print the version");
  version->callback([] { std::puts("kvroute 0.1.0"); });
  proxy::add_serve_command(app, rc);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return rc;
}

}  // namespace kvroute::cli
