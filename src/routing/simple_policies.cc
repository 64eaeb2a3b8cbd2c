// Load-only policies: round-robin, random, least-inflight.
#include "routing/internal/simple_policies.h"

#include <atomic>
#include <random>

#include "routing/policy.h"

namespace kvroute::routing {

namespace {

class RoundRobin final : public Policy {
 public:
  std::string_view name() const override { return "round-robin"; }
  bool uses_prompt() const override { return false; }
  Decision pick(const RouteRequest&, std::span<Backend* const> c) override {
    auto n = next_.fetch_add(1, std::memory_order_relaxed);
    return {c[n % c.size()], "round-robin", {}};
  }

 private:
  std::atomic<std::uint64_t> next_{0};
};

class Random final : public Policy {
 public:
  std::string_view name() const override { return "random"; }
  bool uses_prompt() const override { return false; }
  Decision pick(const RouteRequest&, std::span<Backend* const> c) override {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    return {c[rng() % c.size()], "random", {}};
  }
};

class LeastInflight final : public Policy {
 public:
  std::string_view name() const override { return "least-inflight"; }
  bool uses_prompt() const override { return false; }
  Decision pick(const RouteRequest&, std::span<Backend* const> c) override {
    // Ties rotate so that equal backends share the load.
    auto start = next_.fetch_add(1, std::memory_order_relaxed) % c.size();
    Backend* best = nullptr;
    int best_load = 0;
    for (std::size_t k = 0; k < c.size(); ++k) {
      Backend* b = c[(start + k) % c.size()];
      int load = b->inflight.load(std::memory_order_relaxed);
      if (!best || load < best_load) {
        best = b;
        best_load = load;
      }
    }
    return {best, "least-inflight", {}};
  }

 private:
  std::atomic<std::uint64_t> next_{0};
};

}  // namespace

std::unique_ptr<Policy> make_round_robin() { return std::make_unique<RoundRobin>(); }
std::unique_ptr<Policy> make_random() { return std::make_unique<Random>(); }
std::unique_ptr<Policy> make_least_inflight() { return std::make_unique<LeastInflight>(); }

}  // namespace kvroute::routing
