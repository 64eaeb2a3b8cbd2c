// File: http/internal/deadline.h
//
// Connection timeouts counted in sweeps (docs/adr/0009): the server's workers and the upstream pool
// each run a periodic sweep, at least `tick` apart, that closes the sockets whose deadline it
// reached. Setting a deadline reads no clock. A sweep's number is the ticks elapsed since the
// sweeper's epoch (sweep_number), not a count of sweeps: a timer re-armed for 50 ms fires after
// 55-60 ms, and counting sweeps let that slack add up (a 30 s timeout fired after 36 s). A timeout
// fires between its time and two ticks later (plus the event loop's lag when it is set).
//
// Thread-safety: pure functions; safe from any thread. The sweep numbers and deadlines they
// compute are kept per worker (the server's Worker, each ConnectionPool) and used only on that
// worker's thread, so they need no synchronization.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <ctime>

namespace kvroute::http {

inline constexpr std::uint64_t kNoDeadline = ~std::uint64_t{0};

// The deadline `d` from now, in sweeps, when `sweeps` have run: the sweep ceil(d / tick) + 1 after
// the current one comes no earlier than d from now (and, on time, at most two ticks later).
inline std::uint64_t deadline_after(std::uint64_t sweeps, std::chrono::milliseconds d,
                                    std::chrono::milliseconds tick) {
  return sweeps + static_cast<std::uint64_t>((d.count() + tick.count() - 1) / tick.count()) + 1;
}

// The monotonic clock at the kernel tick's resolution (a few ms), cheaper than a full reading.
inline std::chrono::steady_clock::time_point coarse_now() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return std::chrono::steady_clock::time_point(std::chrono::seconds(ts.tv_sec) +
                                               std::chrono::nanoseconds(ts.tv_nsec));
}

// The number of the sweep that runs now, after `last` ran: the ticks elapsed since `epoch`, and
// always past `last`.
inline std::uint64_t sweep_number(std::uint64_t last, std::chrono::steady_clock::time_point epoch,
                                  std::chrono::milliseconds tick) {
  const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(coarse_now() - epoch);
  return std::max(last + 1, static_cast<std::uint64_t>(std::max<std::int64_t>(0, elapsed / tick)));
}

}  // namespace kvroute::http
