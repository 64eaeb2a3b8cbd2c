// File: admin/admin.h
//
// The admin side of a front door (docs/adr/0023): /metrics, /health, /ready, and the status page
// (/status, /status.json: docs/observability.md). `kvroute serve` and `kvroute epp` both use it, on
// a listener of its own (admin.address/admin.port) so that the data port can be public and the
// admin port private; serve without an admin port answers these paths on its data port, as before.
// With a token file, everything but /health and /ready (the kubelet's probes) needs "Authorization:
// Bearer <token>"; refusals are 401 in OpenAI's shape and counted by auth::Gate.
//
// Thread-safety: handle() runs on the listener's worker threads; the hooks must be safe there.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "auth/auth.h"
#include "common/result.h"
#include "http/server.h"

namespace kvroute::admin {

struct Hooks {
  std::function<std::string()> metrics;                 // the Prometheus exposition text
  std::function<std::pair<bool, std::string>()> ready;  // ready?, and the JSON body saying why
  std::function<std::string()> status;  // /status.json (router::Router::status_json); null: no page
};

// The status page (/status): self-contained HTML and JavaScript, nothing fetched from elsewhere. It
// polls /status.json and /metrics on the same listener every second.
extern const std::string_view kStatusPage;

// Answers an admin path. False: not an admin path (nothing was written).
http::Task<bool> handle(const Hooks& hooks, const auth::Gate& gate, http::Request& req,
                        http::ResponseWriter& w);

struct Options {
  std::string address = "0.0.0.0";
  std::uint16_t port = 0;  // 0: the OS picks
  int threads = 1;
};

// A listener that serves only handle()'s paths (404 for the rest).
class AdminServer {
 public:
  AdminServer(Options opts, Hooks hooks, const auth::Gate& gate);
  Result<std::uint16_t> start();
  void stop();
  std::uint16_t port() const { return server_->port(); }
  // The listener's worker: the EPP runs the router's probes and scrapes on it.
  http::Executor executor() const { return server_->executor(0); }

 private:
  Hooks hooks_;
  const auth::Gate& gate_;
  std::unique_ptr<http::Server> server_;
};

}  // namespace kvroute::admin
