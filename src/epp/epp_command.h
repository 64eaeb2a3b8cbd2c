// File: epp/epp_command.h
//
// Registers `kvroute epp` (flags: the routing core's, router/flags.h, and the listeners').
//
// Thread-safety: start-up only.
#pragma once

namespace CLI {
class App;
}

namespace kvroute::epp {
void add_epp_command(CLI::App& app, int& exit_code);
}  // namespace kvroute::epp
