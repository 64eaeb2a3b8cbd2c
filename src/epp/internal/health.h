// File: epp/internal/health.h
//
// grpc.health.v1.Health for the endpoint picker: "liveness" is SERVING while the process runs;
// "readiness", "" (the whole server), "envoy.service.ext_proc.v3.ExternalProcessor" (Envoy's
// grpc_health_check.service_name) and "inference-extension" (the conformance manifests' probe)
// follow `ready` (a backend available and not draining); any other name is SERVICE_UNKNOWN, as
// llm-d's EPP answers. Watch is not offered (clients get UNIMPLEMENTED and fall back to Check).
//
// Thread-safety: Check runs on gRPC's threads; `ready` must be safe to call from any thread.
#pragma once

#include <functional>
#include <string_view>

#include "grpc/health/v1/health.grpc.pb.h"

namespace kvroute::epp {

class HealthService final : public grpc::health::v1::Health::CallbackService {
 public:
  explicit HealthService(std::function<bool()> ready) : ready_(std::move(ready)) {}
  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* ctx,
                                  const grpc::health::v1::HealthCheckRequest* req,
                                  grpc::health::v1::HealthCheckResponse* resp) override;
  grpc::health::v1::HealthCheckResponse::ServingStatus status_of(std::string_view service) const;

 private:
  std::function<bool()> ready_;
};

}  // namespace kvroute::epp
