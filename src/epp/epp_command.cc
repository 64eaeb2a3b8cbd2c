#include "epp/epp_command.h"

#include <CLI/CLI.hpp>

#include "common/log.h"
#include "epp/epp.h"
#include "router/flags.h"

namespace kvroute::epp {

namespace {
struct EppFlags {
  router::RoutingFlags routing;
  EppOptions opts;
  bool debug_headers = false;
};
}  // namespace

void add_epp_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<EppFlags>();
  auto* cmd = app.add_subcommand(
      "epp", "Run as a Gateway API Inference Extension endpoint picker (Envoy ext_proc)");
  router::add_routing_flags(*cmd, flags->routing);
  const EppOptions d;
  cmd->add_option("--address", flags->opts.address, "Listen address of the three listeners")
      ->default_str(d.address);
  cmd->add_option("--grpc-port", flags->opts.grpc_port, "ext_proc gRPC port (0: the OS picks)")
      ->default_str(std::to_string(d.grpc_port));
  cmd->add_option("--grpc-health-port", flags->opts.health_port,
                  "gRPC health port (grpc.health.v1; 0: the OS picks)")
      ->default_str(std::to_string(d.health_port));
  cmd->add_option("--metrics-port", flags->opts.metrics_port,
                  "HTTP port of /metrics, /health and /ready (0: the OS picks)")
      ->default_str(std::to_string(d.metrics_port));
  cmd->add_option("--body-mode", flags->opts.body_mode,
                  "auto (Envoy's protocol_config, else full duplex), full-duplex or buffered")
      ->default_str(d.body_mode);
  cmd->add_option("--max-body-bytes", flags->opts.max_body_bytes,
                  "Largest request body routed (413 beyond)")
      ->default_str(std::to_string(d.max_body_bytes));
  cmd->add_flag("--debug-headers", flags->debug_headers,
                "Add x-kvroute-reason to the request the gateway forwards");
  cmd->callback([flags, &exit_code] {
    auto cfg = router::routing_config(flags->routing);
    if (!cfg) {
      spdlog::error("{}", cfg.error().message);
      exit_code = 2;
      return;
    }
    if (flags->debug_headers) cfg->debug_headers = true;
    if (auto ok = config::validate(*cfg); !ok) {
      spdlog::error("{}", ok.error().message);
      exit_code = 2;
      return;
    }
    if (flags->routing.check) {
      exit_code = router::check_config(*cfg);
      return;
    }
    exit_code = run_epp(std::move(*cfg), flags->opts);
  });
}

}  // namespace kvroute::epp
