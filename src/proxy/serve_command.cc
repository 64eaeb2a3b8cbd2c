#include "proxy/serve_command.h"

#include <fmt/format.h>

#include <CLI/CLI.hpp>

#include "common/log.h"
#include "proxy/proxy.h"
#include "router/flags.h"

namespace kvroute::proxy {

namespace {
// serve's own flags; the routing core's are router::RoutingFlags.
struct ServeFlags {
  router::RoutingFlags routing;
  std::string address;
  int port = -1;
  int threads = 0;
  bool debug_headers = false;
  int max_retries = -1;
};
}  // namespace

void add_serve_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<ServeFlags>();
  auto* cmd = app.add_subcommand("serve", "Run the OpenAI-compatible routing proxy");
  // Every flag's help names its default: the values of a default-constructed config::Config, so the
  // help cannot drift from the code.
  const config::Config d;
  const auto ms = [](std::chrono::milliseconds v) { return std::to_string(v.count()) + "ms"; };
  router::add_routing_flags(*cmd, flags->routing);
  cmd->add_option("--address", flags->address, "Listen address")->default_str(d.address);
  cmd->add_option("--port", flags->port, "Listen port (0 lets the OS pick)")
      ->default_str(std::to_string(d.port));
  cmd->add_option("--threads", flags->threads, "Worker threads")
      ->default_str(std::to_string(d.threads));
  cmd->add_option("--max-retries", flags->max_retries, "Retries on another backend before any byte")
      ->default_str(std::to_string(d.max_retries));
  cmd->add_flag("--debug-headers", flags->debug_headers,
                "Add x-kvroute-backend/x-kvroute-reason headers")
      ->default_str(d.debug_headers ? "true" : "false");
  cmd->footer(fmt::format(
      "Config-file defaults (docs/config.md): maxBodyBytes {}, maxConnections {}, requestTimeout "
      "{}, "
      "keepaliveTimeout {}, shutdownGracePeriod {}, connectTimeout {}, firstByteTimeout {}, "
      "idleTimeout {}, "
      "maxIdlePerBackend {}, health interval {}, timeout {}, path {}, failureThreshold {}, "
      "ejectionTime {}, "
      "metricsScrapeInterval {}, blockSize {}.",
      d.max_body_bytes, d.max_connections, ms(d.request_timeout), ms(d.keepalive_timeout),
      ms(d.shutdown_grace), ms(d.connect_timeout), ms(d.first_byte_timeout), ms(d.idle_timeout),
      d.max_idle_per_backend, ms(d.health_interval), ms(d.health_timeout), d.health_path,
      d.failure_threshold, ms(d.ejection_time), ms(d.metrics_scrape_interval), d.block_size));
  cmd->callback([flags, &exit_code] {
    auto loaded = router::routing_config(flags->routing);
    if (!loaded) {
      spdlog::error("{}", loaded.error().message);
      exit_code = 2;
      return;
    }
    config::Config cfg = std::move(*loaded);
    if (!flags->address.empty()) cfg.address = flags->address;
    if (flags->port >= 0) cfg.port = static_cast<std::uint16_t>(flags->port);
    if (flags->threads > 0) cfg.threads = flags->threads;
    if (flags->debug_headers) cfg.debug_headers = true;
    if (flags->max_retries >= 0) cfg.max_retries = flags->max_retries;
    if (auto ok = config::validate(cfg); !ok) {
      spdlog::error("{}", ok.error().message);
      exit_code = 2;
      return;
    }
    if (flags->routing.check) {
      exit_code = router::check_config(cfg);
      return;
    }
    exit_code = run_serve(std::move(cfg));
  });
}

}  // namespace kvroute::proxy
