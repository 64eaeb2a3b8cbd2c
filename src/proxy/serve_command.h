// File: proxy/serve_command.h
//
// `kvroute serve`: flags and config file share one schema (config/config.h); flags override.
#pragma once

namespace CLI {
class App;
}

namespace kvroute::proxy {

void add_serve_command(CLI::App& app, int& exit_code);

}  // namespace kvroute::proxy
