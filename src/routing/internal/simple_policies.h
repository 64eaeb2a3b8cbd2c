// File: routing/internal/simple_policies.h
//
// Load-only policies (no cache awareness): the baselines users compare against.
//
// Thread-safety: pick() runs on every worker thread at once without locks: round-robin and
// least-inflight advance a relaxed atomic counter, random draws from a thread-local generator, and
// least-inflight reads the backends' atomic in-flight counts.
#pragma once

#include <memory>

#include "routing/policy.h"

namespace kvroute::routing {

std::unique_ptr<Policy> make_round_robin();
std::unique_ptr<Policy> make_random();
std::unique_ptr<Policy> make_least_inflight();

}  // namespace kvroute::routing
