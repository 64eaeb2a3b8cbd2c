// File: bench/bench_command.h
//
// The CLI of the benchmark component:
//   kvroute bench --url URL [workload and load flags] [--check thresholds] [--json FILE]
//   kvroute bench compare --policies a,b,c [same flags] [--json FILE] [--plots DIR]
//   kvroute demo
// Exit codes: 0 success, 1 a --check threshold failed, 2 the run could not be done (bad flags,
// unreachable URL, no request completed).
//
// Thread-safety: not synchronized. Register from the thread that builds the CLI; a run (and
// run_demo) blocks the calling thread, which drives the load generator, while the simulated
// engines and routers it starts run on threads of their own (bench/internal/compare.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace kvroute::bench {

struct Summary;  // bench/internal/report.h

void add_bench_command(CLI::App& app, int& exit_code);
void add_demo_command(CLI::App& app, int& exit_code);

// The demo's body (also used by the test suite with a smaller workload): prints the comparison to
// stdout; returns the exit code. ADR 0203: it measures round-robin's capacity, then runs every
// policy at once, open loop at `load` x capacity, each on its own engines.
struct DemoOptions {
  int engines = 4;
  double time_scale = 0;  // engines' speed, x real time; 0: chosen from the free CPU
  double load = 0.8;      // offered load, a fraction of the measured capacity
  double seconds = 25;    // the comparison's length at the offered rate (sizes the workload)
  double scale = 1.0;     // multiplies the number of requests (tests use less)
  double think_s = 0.25;  // mean think time between chat turns
  std::uint64_t seed = 7;
  std::vector<std::string> policies;  // empty: the demo's set
};
int run_demo(const DemoOptions& options);

// Policies whose max/mean requests per engine exceed this are "unbalanced" in the demo's verdict.
inline constexpr double kDemoBalanced = 1.25;

// The demo's last line: whether `policy` has the lowest TTFT p50 and p99 among the summaries with
// imbalance <= max_imbalance, with the runner-up's figures.
std::string demo_verdict(const std::vector<Summary>& summaries, const std::string& policy,
                         double max_imbalance);

// The engines' speed for `policies` simultaneous comparisons on `free_cores` of CPU (0.5x-4x).
double demo_time_scale(double free_cores, std::size_t policies);

}  // namespace kvroute::bench
