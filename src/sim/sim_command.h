// File: sim/sim_command.h
//
// `kvroute sim`: flags for SimOptions (sim/server.h).
#pragma once

namespace CLI {
class App;
}

namespace kvroute::sim {

void add_sim_command(CLI::App& app, int& exit_code);

}  // namespace kvroute::sim
