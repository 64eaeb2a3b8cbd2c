// File: testing/raw_http.h
//
// Test support: a blocking HTTP/1.1 client over a plain socket, for tests that need exact bytes
// (malformed requests, oversize headers, disconnects). Every call is bounded by a timeout.
//
// Thread-safety: no shared state: each call opens, uses and closes its own socket and blocks the
// calling thread, so tests may call it from several threads at once.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace kvroute::testing {

struct RawResponse {
  int status = 0;    // 0 when no status line arrived
  std::string head;  // status line and headers
  std::string body;  // de-chunked
  std::string raw;   // everything received
};

// Sends `raw_request` to 127.0.0.1:port and reads until the response is complete or the peer
// closes (or the timeout passes).
// With `half_close`, the client then shuts down its sending side (it has nothing more to say).
RawResponse raw_request(std::uint16_t port, std::string_view raw_request,
                        std::chrono::milliseconds timeout = std::chrono::seconds(10),
                        bool half_close = false);

// Convenience: a POST with a JSON body (Connection: close).
RawResponse post_json(std::uint16_t port, std::string_view path, std::string_view json,
                      std::string_view extra_headers = {});
RawResponse get(std::uint16_t port, std::string_view path);

// Opens a connection, sends `raw_request`, reads at least `min_bytes` of the response (or waits
// `wait`), then closes the socket abruptly (the client went away). Returns what was read.
std::string send_then_disconnect(std::uint16_t port, std::string_view raw_request,
                                 std::size_t min_bytes, std::chrono::milliseconds wait);

}  // namespace kvroute::testing
