#include "epp/internal/health.h"

namespace kvroute::epp {

using grpc::health::v1::HealthCheckResponse;

HealthCheckResponse::ServingStatus HealthService::status_of(std::string_view service) const {
  if (service == "liveness") return HealthCheckResponse::SERVING;
  if (service.empty() || service == "readiness" ||
      service == "envoy.service.ext_proc.v3.ExternalProcessor" ||
      service == "inference-extension") {
    return ready_() ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING;
  }
  return HealthCheckResponse::SERVICE_UNKNOWN;
}

grpc::ServerUnaryReactor* HealthService::Check(grpc::CallbackServerContext* ctx,
                                               const grpc::health::v1::HealthCheckRequest* req,
                                               HealthCheckResponse* resp) {
  resp->set_status(status_of(req->service()));
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace kvroute::epp
