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

namespace CLI {
class App;
}

namespace kvroute::bench {

void add_bench_command(CLI::App& app, int& exit_code);
void add_demo_command(CLI::App& app, int& exit_code);

// The demo's body (also used by the test suite with a smaller workload): prints the comparison to
// stdout; returns the exit code.
struct DemoOptions {
  int engines = 4;
  double time_scale = 10.0;
  double scale = 1.0;     // multiplies the number of sessions (tests use less)
  double think_s = 0.25;  // mean think time between chat turns
  bool progress = true;
};
int run_demo(const DemoOptions& options);

}  // namespace kvroute::bench
