#include "common/memory.h"

#include <malloc.h>

#include <condition_variable>
#include <mutex>
#include <thread>

// gperftools' C entry point, present only when tcmalloc is linked (a weak reference: no
// dependency on it).
extern "C" void MallocExtension_ReleaseFreeMemory(void) __attribute__((weak));

namespace kvroute {

namespace {

void release_now() {
  if (MallocExtension_ReleaseFreeMemory != nullptr) {
    MallocExtension_ReleaseFreeMemory();
  } else {
    ::malloc_trim(0);
  }
}

class Releaser {
 public:
  void request() {
    {
      std::lock_guard lock(mu_);
      pending_ = true;
      if (!thread_.joinable()) thread_ = std::jthread([this](std::stop_token st) { run(st); });
    }
    cv_.notify_one();
  }

 private:
  void run(std::stop_token st) {
    std::unique_lock lock(mu_);
    while (cv_.wait(lock, st, [&] { return pending_; })) {
      pending_ = false;
      lock.unlock();
      release_now();
      lock.lock();
    }
  }
  std::mutex mu_;
  std::condition_variable_any cv_;
  bool pending_ = false;
  std::jthread thread_;  // last: stopped and joined before the rest goes
};

}  // namespace

void release_free_memory() {
  static Releaser releaser;
  releaser.request();
}

}  // namespace kvroute
