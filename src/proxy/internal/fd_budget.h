// File: proxy/internal/fd_budget.h
//
// How many client connections and pooled upstream connections a process may hold with the open-file
// limit it runs under. Every client connection may hold one upstream connection besides its own,
// and each worker pools idle connections per backend: with systemd's common 1024 a few hundred
// idle connections would otherwise exhaust the descriptors, and accept() would fail for everyone.
// The soft limit is raised to the hard one first (what nginx's worker_rlimit_nofile and Envoy's
// deployment guides ask for by hand).
//
// Thread-safety: plan_fds() is pure; safe from any thread. raise_open_file_limit() changes the
// process's RLIMIT_NOFILE (getrlimit/setrlimit, no lock of ours): Proxy::start() calls it once,
// from the controlling thread.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvroute::proxy {

struct OpenFileLimit {
  std::uint64_t before = 0;  // the soft limit the process started with
  std::uint64_t now = 0;     // the soft limit after raising it to the hard one
};
// Raises RLIMIT_NOFILE's soft limit to its hard limit (capped at 1,048,576 when unlimited).
OpenFileLimit raise_open_file_limit();

struct FdPlan {
  std::size_t max_connections = 0;       // client connections
  std::size_t max_idle_per_backend = 0;  // per worker thread
  bool clamped = false;                  // either is below what was asked
};
// Descriptors kept for listeners, epoll, timers, logs and ZMQ, besides the per-thread ones.
inline constexpr std::size_t kReservedFds = 64;
inline constexpr std::size_t kReservedFdsPerThread = 16;
// Fits the asked limits into `fds`: pooled idle connections take at most a quarter of what is left
// after the reserve, and every client connection counts twice (its own and its upstream one).
FdPlan plan_fds(std::uint64_t fds, int threads, std::size_t backends, std::size_t max_connections,
                std::size_t max_idle_per_backend);

}  // namespace kvroute::proxy
