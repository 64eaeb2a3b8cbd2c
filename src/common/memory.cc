#include "common/memory.h"

#include <malloc.h>

#include <thread>

#include "common/mutex.h"

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
  ~Releaser() {
    {
      MutexLock lock(mu_);
      stopping_ = true;
    }
    cv_.notify_one();
  }

  void request() {
    {
      MutexLock lock(mu_);
      pending_ = true;
      if (!thread_.joinable()) thread_ = std::jthread([this] { run(); });
    }
    cv_.notify_one();
  }

 private:
  void run() {
    MutexLock lock(mu_);
    while (true) {
      while (!pending_ && !stopping_) cv_.wait(mu_);
      if (stopping_) return;
      pending_ = false;
      lock.unlock();
      release_now();
      lock.lock();
    }
  }
  Mutex mu_;
  CondVar cv_;
  bool pending_ GUARDED_BY(mu_) = false;
  bool stopping_ GUARDED_BY(mu_) = false;
  std::jthread thread_ GUARDED_BY(mu_);  // last: joined (after ~Releaser stops it) first
};

}  // namespace

void release_free_memory() {
  static Releaser releaser;
  releaser.request();
}

}  // namespace kvroute
