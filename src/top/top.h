// File: top/top.h
//
// `kvroute top ROUTER_URL...`: a live terminal view of routers and their engines from their
// /metrics, like htop (docs/observability.md). Per router (its admin or data port): requests per
// second, 5xx per second, TTFT p50/p99 over the last interval (from the histogram's buckets),
// routing decisions by reason; per engine (the routers' backends that are URLs, plus --engine):
// healthy, in flight at the router, running and waiting, KV-cache usage, prefix-cache hit rate over
// the interval, requests per second. Refreshes every interval; q quits.
//
// Thread-safety: sample() and render() are used from one thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace kvroute::top {

struct Options {
  std::vector<std::string> routers;  // base URLs serving /metrics (the admin port)
  std::vector<std::string> engines;  // more engine URLs (backends that are URLs are found)
  std::string token;                 // Bearer for the routers' admin listener
  std::chrono::milliseconds interval{1000};
  int frames = 0;  // 0: until q; else stop after this many frames
};

// One scrape of everything, cumulative values as read.
struct Snapshot {
  std::chrono::steady_clock::time_point at;
  struct Router {
    bool up = false;
    double requests = 0, errors = 0;
    std::map<std::string, double> decisions;          // reason -> total
    std::map<double, double> ttfb_buckets;            // le -> cumulative count
    std::map<std::string, double> inflight, healthy;  // backend -> value
  };
  struct Engine {
    bool up = false;
    double running = 0, waiting = 0, kv_usage = 0, hits = 0, queries = 0, requests = 0;
  };
  std::map<std::string, Router> routers;
  std::map<std::string, Engine> engines;
};

Snapshot sample(const Options& o);
// The frame between two snapshots (rates over their interval), `width` columns wide.
std::string render(const Options& o, const Snapshot& before, const Snapshot& now, int width);
// Runs the live view on the terminal; returns the exit code.
int run(const Options& o);

}  // namespace kvroute::top
