// File: proxy/serve_command.h
//
// `kvroute serve`: flags and config file share one schema (config/config.h); flags override.
//
// Thread-safety: register from the thread that builds the CLI. The callback runs on the thread
// that parses argv and blocks it until SIGINT/SIGTERM; the Proxy (proxy/proxy.h) owns the workers.
#pragma once

namespace CLI {
class App;
}

namespace kvroute::proxy {

void add_serve_command(CLI::App& app, int& exit_code);

}  // namespace kvroute::proxy
