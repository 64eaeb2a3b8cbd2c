// File: routing/simple_policies.h
//
// Load-only policies (no cache awareness): the baselines users compare against.
#pragma once

#include <memory>

#include "routing/policy.h"

namespace kvroute::routing {

std::unique_ptr<Policy> make_round_robin();
std::unique_ptr<Policy> make_random();
std::unique_ptr<Policy> make_least_inflight();

}  // namespace kvroute::routing
