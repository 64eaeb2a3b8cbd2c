// File: discovery/discovery.h
//
// Where the backends come from while the router runs (docs/adr/0021). A Source reports the whole
// current set of backends each time it changes; the router (router/router.h, set_backends) adds
// the new ones and removes the missing ones. Two sources:
//   - an endpoints file (`backends:` as in the config file), checked every poll interval and
//     reloaded when its contents change (what llm-d offers outside Kubernetes);
//   - a Kubernetes InferencePool (inference.networking.k8s.io/v1): its selector and target ports,
//     the Ready pods it selects, one backend per pod and target port. List, then watch with
//     resourceVersion and bookmarks; 410 Gone re-lists; a dropped watch reconnects with backoff.
//     In-cluster service-account token and CA, or a kubeconfig; TLS through OpenSSL.
//
// Thread-safety: a Source runs on a thread of its own between start() and stop(); `on_change` is
// called from that thread (or from the constructor's caller for a file's first load). stop() is
// idempotent and joins.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "common/result.h"
#include "config/config.h"

namespace kvroute::discovery {

using OnChange = std::function<void(std::vector<config::BackendConfig>)>;

class Source {
 public:
  virtual ~Source() = default;
  virtual void start() = 0;
  virtual void stop() = 0;
};

// The source `cfg` names (endpoints_file or pool_name), or null when the backends are static.
// The file is read once here: a missing or invalid file fails start-up, with file, line and field.
// For Kubernetes the kubeconfig or in-cluster credentials are read here; the pool's pods arrive
// once started.
Result<std::unique_ptr<Source>> make_source(const config::Config& cfg, OnChange on_change);

}  // namespace kvroute::discovery
