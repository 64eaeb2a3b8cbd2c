// File: testing/wait.h
//
// wait_until: the one way tests wait for something another thread or process does. It returns as
// soon as the condition holds (checked every 2 ms), or false after `limit`, so a test neither
// sleeps a guessed time nor hangs.
//
// Thread-safety: call from any thread; `pred` runs on the caller's thread.
#pragma once

#include <chrono>
#include <functional>
#include <thread>

namespace kvroute::testing {

inline bool wait_until(const std::function<bool()>& pred,
                       std::chrono::milliseconds limit = std::chrono::seconds(5)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return pred();
}

}  // namespace kvroute::testing
