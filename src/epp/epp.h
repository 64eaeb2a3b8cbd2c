// File: epp/epp.h
//
// `kvroute epp`: kvroute as a Gateway API Inference Extension endpoint picker. Envoy-based
// gateways (Istio, kgateway, Envoy Gateway, GKE) open one Envoy ext_proc v3 stream per request;
// the picker routes it with the same router::Router as `kvroute serve` (one routing core, two front
// doors) and answers with the chosen endpoint in `x-gateway-destination-endpoint` and the
// `envoy.lb` dynamic metadata. Three listeners, by the llm-d conventions:
//   - ext_proc gRPC (9002): envoy.service.ext_proc.v3.ExternalProcessor/Process;
//   - gRPC health (9003): grpc.health.v1.Health/Check for "liveness", "readiness", "" and the
//     service names gateways and manifests probe (docs/adr/0240-epp-ext-proc-over-grpc.md);
//   - HTTP metrics (9090): /metrics (kvroute's names and llm-d's llm_d_epp_*), /health, /ready.
// Protocol details: epp/internal/processor.h.
//
// Thread-safety: start(), drain() and stop() from one controlling thread; streams are served by
// gRPC's callback threads, probes and scrapes by the metrics listener's thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "common/result.h"
#include "config/config.h"
#include "metrics/registry.h"
#include "router/router.h"

namespace kvroute::epp {

struct EppOptions {
  std::string address = "0.0.0.0";
  int grpc_port = 9002;     // 0: the OS picks
  int health_port = 9003;   // 0: the OS picks
  int metrics_port = 9090;  // 0: the OS picks
  // "auto" (Envoy's protocol_config, else full duplex), "full-duplex" or "buffered".
  std::string body_mode = "auto";
  std::size_t max_body_bytes = 64u << 20;
};

struct EppPorts {
  std::uint16_t grpc = 0;
  std::uint16_t health = 0;
  std::uint16_t metrics = 0;
};

class Epp {
 public:
  Epp(config::Config cfg, EppOptions opts);
  ~Epp();
  Epp(const Epp&) = delete;
  Epp& operator=(const Epp&) = delete;

  // Builds the routing core and starts the three listeners; returns their bound ports.
  Result<EppPorts> start();
  // Health reports NOT_SERVING for readiness (gateways steer new streams away); streams go on.
  void drain();
  // Drains, then lets open streams finish up to `grace`, then cancels the rest and stops.
  void stop(std::chrono::milliseconds grace);

  metrics::Registry& registry();
  router::Router& router();
  // Streams open right now.
  std::size_t open_streams() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// `kvroute epp`: runs until SIGTERM/SIGINT, then drains and stops; returns the exit code.
int run_epp(config::Config cfg, EppOptions opts);

}  // namespace kvroute::epp
