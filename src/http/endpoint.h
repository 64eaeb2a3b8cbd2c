// File: http/endpoint.h
//
// Where an upstream listens, and the parsing of the backend URLs users write ("http://host:port").
// Asio-free on purpose: routing, config, kv_index and bench name endpoints without compiling the
// network layer (http/client.h is the one header that connects to them).
//
// Thread-safety: value types and a pure function; safe from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"

namespace kvroute::http {

struct Endpoint {
  std::string host;  // numeric address or name
  std::uint16_t port = 0;
  bool tls = false;  // https: TLS to the engine (docs/adr/0022)
  bool operator==(const Endpoint&) const = default;
};

// Parses "http://host:port[/]" or "https://host:port[/]". IPv6 hosts are bracketed
// ("http://[::1]:8000"); the port defaults to 80 (443 for https). No scheme: http.
Result<Endpoint> parse_http_url(std::string_view url);

}  // namespace kvroute::http
