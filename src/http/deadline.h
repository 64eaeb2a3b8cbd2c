// File: http/deadline.h
//
// Connection timeouts counted in sweeps (docs/adr/0009): the server's workers and the upstream pool
// each run a periodic sweep, at least `tick` apart, that closes the sockets whose deadline it
// reached. Setting a deadline reads no clock; a sweep that runs late delays a timeout, never fires
// it early.
#pragma once

#include <chrono>
#include <cstdint>

namespace kvroute::http {

inline constexpr std::uint64_t kNoDeadline = ~std::uint64_t{0};

// The deadline `d` from now, in sweeps, when `sweeps` have run: the sweep ceil(d / tick) + 1 after
// the current one comes no earlier than d from now (and, on time, at most two ticks later).
inline std::uint64_t deadline_after(std::uint64_t sweeps, std::chrono::milliseconds d,
                                    std::chrono::milliseconds tick) {
  return sweeps + static_cast<std::uint64_t>((d.count() + tick.count() - 1) / tick.count()) + 1;
}

}  // namespace kvroute::http
