// File: top/top_command.h
//
// `kvroute top`: its flags and entry point (top/top.h).
#pragma once

namespace CLI {
class App;
}

namespace kvroute::top {

void add_top_command(CLI::App& app, int& exit_code);

}  // namespace kvroute::top
