#include "doctor/doctor_command.h"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>

#include "auth/auth.h"
#include "common/log.h"
#include "doctor/doctor.h"

namespace kvroute::doctor {

void add_doctor_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "doctor",
      "Diagnose engines (and a router in front of them): prefix caching on and effective, block "
      "size, hashing, versions, one model per name, session stickiness, prefix routing");
  auto o = std::make_shared<Options>();
  auto json = std::make_shared<bool>(false);
  auto api_key_file = std::make_shared<std::string>();
  auto timeout_s = std::make_shared<double>(10.0);
  cmd->add_option("engines", o->engines, "Engine base URLs (http://host:port)")->required();
  cmd->add_option("--router", o->router, "The router's base URL: also check routing through it");
  cmd->add_option("--router-metrics", o->router_metrics,
                  "Where the router serves /metrics, when not on --router (its admin port)");
  cmd->add_option("--kv-events", o->kv_events,
                  "KV-event endpoint of the engine in the same position (tcp://host:port; "
                  "repeatable): events must arrive and hash alike");
  cmd->add_option("--session-header", o->session_header, "The router's session header")
      ->capture_default_str();
  cmd->add_option("--api-key-file", *api_key_file,
                  "File holding the API key sent as Bearer to the router and engines");
  cmd->add_option("--block-size", o->block_size, "The router's routing.blockSize")
      ->capture_default_str();
  cmd->add_option("--timeout", *timeout_s, "Seconds to wait for one answer")->capture_default_str();
  cmd->add_flag("--json", *json, "One JSON object on stdout (for CI)");
  cmd->callback([o, json, api_key_file, timeout_s, &exit_code] {
    if (!api_key_file->empty()) {
      auto key = auth::read_secret_file(*api_key_file);
      if (!key) {
        spdlog::error("{}", key.error().message);
        exit_code = 2;
        return;
      }
      o->api_key = *key;
    }
    o->timeout = std::chrono::milliseconds(static_cast<std::int64_t>(*timeout_s * 1000));
    set_log_level("warn");
    const Report report = diagnose(*o);
    const std::string out = *json ? to_json(report) : to_text(report);
    std::fwrite(out.data(), 1, out.size(), stdout);
    exit_code = report.failed() ? 1 : 0;
  });
}

}  // namespace kvroute::doctor
