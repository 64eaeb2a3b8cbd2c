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
  std::string_view session_key;       // session header, else the OpenAI `user` field
  std::vector<std::uint32_t> tokens;  // prompt token ids when the router tokenizes
  // Chained block hashes of the prompt (token blocks with a tokenizer, else character blocks),
  // and how many prompt tokens one block stands for.
  std::vector<std::uint64_t> blocks;
  std::uint32_t tokens_per_block = 16;
  std::uint32_t prompt_tokens = 0;  // exact with a tokenizer, else estimated (chars / 4)
  std::uint32_t expected_output_tokens = 0;
  // A chat request that carries earlier turns of its conversation (an assistant message): the
  // matched prefix is that conversation's own history, which no other request shares.
  bool conversation = false;
  // The caller wants the decision's detail (scores per candidate) even without debug logging:
  // the router's sample for the status page.
  bool want_detail = false;
  // The router counted this request's prompt and predicted tokens (a retry picks again: once).
  bool prediction_counted = false;
  // Filled by the policy at routing time, used by its completion hooks.
  std::int64_t charged_tokens = 0;  // uncached prefill tokens charged to the backend's queue
  bool kv_pinned = false;  // `blocks` and expected output are charged to the backend's KV memory
  bool prefill_done = false;
  // Another replica's decision (Policy::on_peer_routed): `blocks` are token blocks, though
  // `tokens` is empty (the peer does not send them).
  bool peer_token_blocks = false;
};

struct Decision {
  Backend* backend = nullptr;
  std::string reason;  // a short label: "round-robin", "prefix-hit", "session", "least-loaded", ...
  std::string detail;  // optional: scores per backend for the debug log and the status page
  // Prompt blocks the policy believes the chosen backend holds (0 for policies that do not
  // predict): the router's predicted hits, exported beside the engines' own.
  std::uint32_t predicted_blocks = 0;
};

class Policy {
 public:
  virtual ~Policy() = default;
  virtual std::string_view name() const = 0;
  // Requires: !candidates.empty().
  virtual Decision pick(const RouteRequest& req, std::span<Backend* const> candidates) = 0;
  // False for policies that never look at the prompt (load, rotation, session key): the proxy then
  // skips tokenization and block hashing.
  virtual bool uses_prompt() const { return true; }
  virtual void on_routed(RouteRequest&, Backend&) {}
  // The first response byte arrived (prefill is over for a streaming request).
  virtual void on_first_byte(RouteRequest&, Backend&) {}
  virtual void on_done(RouteRequest&, Backend&, bool /*success*/) {}
  // Another replica routed a request with these blocks (and expected output) to this backend
  // (replication/): learn what on_routed and on_done would have, except load, which peers report
  // apart. Default: nothing (policies without a prefix index).
  virtual void on_peer_routed(RouteRequest&, Backend&) {}
};

// Names of the built-in policies.
std::vector<std::string> policy_names();
struct RoutingContext;
// Builds the policy named in the config (policy name, or plugins + schedulingProfiles) for
// `backends`; `ctx` (the shared prefix index) is created when null.
Result<std::unique_ptr<Policy>> make_policy(const config::Config& cfg,
                                            std::span<Backend* const> backends,
                                            std::shared_ptr<RoutingContext> ctx = nullptr);

}  // namespace kvroute::routing
