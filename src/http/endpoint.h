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
  bool operator==(const Endpoint&) const = default;
};

// Parses "http://host:port[/]" (https is not supported: a clear error). IPv6 hosts are bracketed
// ("http://[::1]:8000"); the port defaults to 80.
Result<Endpoint> parse_http_url(std::string_view url);

}  // namespace kvroute::http
