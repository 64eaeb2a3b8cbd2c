// File: bench/test_support.h
//
// Helpers shared by the bench tests (bench_test.cc, classes_test.cc): zero-time simulated engines
// and a comparison of one user over two of them. Test-only; not part of the bench library.
#pragma once

#include <chrono>

#include "bench/internal/compare.h"
#include "sim/server.h"

namespace kvroute::bench::test_support {

// `engines` simulated engines on OS-picked ports whose steps take no time (preset "none").
inline sim::SimOptions fast_sim(int engines) {
  sim::SimOptions o;
  o.engines = engines;
  o.port = 0;
  o.preset = "none";
  return o;
}

// A comparison on two zero-time engines without KV events: one user, at most 20 s, no progress.
inline CompareOptions one_user_on_two_engines() {
  CompareOptions co;
  co.sim = fast_sim(2);
  co.kv_events = false;
  co.load.concurrency = 1;
  co.load.duration = std::chrono::seconds(20);
  co.load.progress = false;
  return co;
}

}  // namespace kvroute::bench::test_support
