// File: sim/sim_command.h
//
// `kvroute sim`: flags for SimOptions (sim/server.h).
//
// Thread-safety: register from the thread that builds the CLI. The callback runs on the thread
// that parses argv and blocks it until SIGINT/SIGTERM; the SimCluster (sim/server.h) owns the
// engines' threads.
#pragma once

namespace CLI {
class App;
}

namespace kvroute::sim {

void add_sim_command(CLI::App& app, int& exit_code);

}  // namespace kvroute::sim
