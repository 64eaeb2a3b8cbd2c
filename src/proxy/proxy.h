// File: proxy/proxy.h
//
// The router's data plane: an OpenAI-compatible reverse proxy. It parses each request once, asks
// the routing policy for a backend, forwards the body byte for byte over a per-thread keep-alive
// pool, relays the response (SSE events as they arrive), retries elsewhere only when the chosen
// backend failed before it could have started work, and keeps health, metrics and logs.
// Life of a request, threading model and shutdown: ARCHITECTURE.md.
//
// Thread-safety: start()/stop() from one controlling thread; everything else is internal.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>

#include "common/result.h"
#include "config/config.h"
#include "metrics/registry.h"
#include "router/router.h"
#include "routing/backend.h"

namespace kvroute::proxy {

class Proxy {
 public:
  explicit Proxy(config::Config cfg);
  ~Proxy();
  Proxy(const Proxy&) = delete;
  Proxy& operator=(const Proxy&) = delete;

  // Validates the config, builds the policy, binds and starts serving. Returns the bound port.
  Result<std::uint16_t> start();
  // Graceful: stop accepting, finish in-flight requests up to `grace`, then close everything.
  void stop(std::chrono::milliseconds grace);

  metrics::Registry& registry();
  router::BackendSet backends() const;
  std::uint16_t port() const;
  // The routing core (after start(); null before): bench compare joins replicas through it.
  router::Router* router() const;
  // The admin listener's port (0 when the admin paths are on the data port).
  std::uint16_t admin_port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// `kvroute serve`: runs until SIGTERM/SIGINT, then shuts down gracefully; returns the exit code.
int run_serve(config::Config cfg);

}  // namespace kvroute::proxy
