#include "top/top_command.h"

#include <CLI/CLI.hpp>
#include <memory>

#include "auth/auth.h"
#include "common/log.h"
#include "top/top.h"

namespace kvroute::top {

void add_top_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "top", "Live terminal view of routers and their engines from their /metrics (q quits)");
  auto o = std::make_shared<Options>();
  auto interval_s = std::make_shared<double>(1.0);
  auto token_file = std::make_shared<std::string>();
  cmd->add_option("routers", o->routers,
                  "Routers' base URLs serving /metrics (the admin port when it has one)")
      ->required();
  cmd->add_option("--engine", o->engines,
                  "More engine URLs (the routers' backends that are URLs are found)");
  cmd->add_option("--interval", *interval_s, "Seconds between refreshes")->capture_default_str();
  cmd->add_option("--frames", o->frames, "Stop after this many frames (0: until q)")
      ->capture_default_str();
  cmd->add_option("--token-file", *token_file, "Bearer token of the routers' admin listener");
  cmd->callback([o, interval_s, token_file, &exit_code] {
    set_log_level("off");
    if (!token_file->empty()) {
      auto t = auth::read_secret_file(*token_file);
      if (!t) {
        std::fprintf(stderr, "%s\n", t.error().message.c_str());
        exit_code = 2;
        return;
      }
      o->token = *t;
    }
    o->interval =
        std::chrono::milliseconds(static_cast<std::int64_t>(std::max(0.1, *interval_s) * 1000));
    exit_code = run(*o);
  });
}

}  // namespace kvroute::top
