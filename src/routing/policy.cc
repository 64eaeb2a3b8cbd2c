#include "routing/policy.h"

#include "routing/simple_policies.h"

namespace kvroute::routing {

std::vector<std::string> policy_names() { return {"round-robin", "random", "least-inflight"}; }

Result<std::unique_ptr<Policy>> make_policy(const config::Config& cfg, std::span<Backend* const>) {
  const auto& n = cfg.policy;
  if (n == "round-robin") return make_round_robin();
  if (n == "random") return make_random();
  if (n == "least-inflight") return make_least_inflight();
  std::string known;
  for (const auto& p : policy_names()) known += (known.empty() ? "" : ", ") + p;
  return fail(Error::invalid("unknown policy '" + n + "' (known: " + known + ")"));
}

}  // namespace kvroute::routing
