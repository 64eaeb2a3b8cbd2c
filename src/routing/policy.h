// File: routing/policy.h
//
// The routing contract: a Policy picks one backend for a request among the candidates the proxy
// passes (healthy, serving the model, not yet tried for this request) and says why. The proxy
// calls on_routed() once the request is sent and on_done() when it finished, so stateful
// policies (prefix indexes, sessions) learn from their own decisions.
//
// Thread-safety: implementations must be safe to call from all worker threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "config/config.h"
#include "openai/request.h"
#include "routing/backend.h"

namespace kvroute::routing {

struct RouteRequest {
  const openai::ParsedRequest* request = nullptr;
  std::string_view session_key;        // session header, else the OpenAI `user` field
  std::vector<std::uint32_t> tokens;   // prompt token ids when the router tokenizes
};

struct Decision {
  Backend* backend = nullptr;
  std::string reason;  // a short label: "round-robin", "prefix-hit", "session", "least-loaded", ...
  std::string detail;  // optional: scores per backend for the debug log
};

class Policy {
 public:
  virtual ~Policy() = default;
  virtual std::string_view name() const = 0;
  // Requires: !candidates.empty().
  virtual Decision pick(const RouteRequest& req, std::span<Backend* const> candidates) = 0;
  virtual void on_routed(const RouteRequest&, Backend&) {}
  virtual void on_done(const RouteRequest&, Backend&, bool /*success*/) {}
};

// Names of the built-in policies.
std::vector<std::string> policy_names();
// Builds the policy named in the config (policy name, plugins, profiles) for `backends`.
Result<std::unique_ptr<Policy>> make_policy(const config::Config& cfg,
                                            std::span<Backend* const> backends);

}  // namespace kvroute::routing
