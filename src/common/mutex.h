// File: common/mutex.h
//
// Mutex, MutexLock and CondVar: std::mutex and std::condition_variable_any with clang's
// thread-safety annotations, so that the clang build (-Wthread-safety, scripts/lint.sh) proves that
// every field marked GUARDED_BY(mu) is touched only with mu held. libstdc++'s own types carry no
// annotations. The macros expand to nothing under GCC; the wrappers cost nothing at run time.
//
//   Mutex mu_;
//   int count_ GUARDED_BY(mu_) = 0;
//   void add() EXCLUDES(mu_) { MutexLock lock(mu_); ++count_; }
//
// A condition is waited for with an explicit loop while the lock is held (a predicate lambda
// would be analysed as a function that holds nothing):
//   MutexLock lock(mu_);
//   while (!ready_) cv_.wait(mu_);
//
// Thread-safety: these are the synchronization primitives; a Mutex is shared by the threads it
// serializes, a MutexLock belongs to the thread that made it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

#if defined(__clang__)
#define KVROUTE_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define KVROUTE_THREAD_ANNOTATION(x)
#endif
// abseil's legacy header (absl/base/internal/thread_annotations.h, which gRPC's headers include)
// defines GUARDED_BY, PT_GUARDED_BY and NO_THREAD_SAFETY_ANALYSIS through this macro. Ours are
// token for token the same definitions, so whichever header comes second redefines them
// identically, which the preprocessor accepts silently.
#ifndef THREAD_ANNOTATION_ATTRIBUTE__
#if defined(__clang__)
#define THREAD_ANNOTATION_ATTRIBUTE__(x) __attribute__((x))
#else
#define THREAD_ANNOTATION_ATTRIBUTE__(x)
#endif
#endif

// The rest are not in abseil's legacy header; undefined first in case another library defines them.
#undef CAPABILITY
#undef SCOPED_CAPABILITY
#undef REQUIRES
#undef REQUIRES_SHARED
#undef ACQUIRE
#undef ACQUIRE_SHARED
#undef RELEASE
#undef RELEASE_SHARED
#undef TRY_ACQUIRE
#undef EXCLUDES
#define CAPABILITY(x) KVROUTE_THREAD_ANNOTATION(capability(x))
#define SCOPED_CAPABILITY KVROUTE_THREAD_ANNOTATION(scoped_lockable)
#define GUARDED_BY(x) THREAD_ANNOTATION_ATTRIBUTE__(guarded_by(x))
#define PT_GUARDED_BY(x) THREAD_ANNOTATION_ATTRIBUTE__(pt_guarded_by(x))
#define REQUIRES(...) KVROUTE_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define REQUIRES_SHARED(...) KVROUTE_THREAD_ANNOTATION(requires_shared_capability(__VA_ARGS__))
#define ACQUIRE(...) KVROUTE_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define ACQUIRE_SHARED(...) KVROUTE_THREAD_ANNOTATION(acquire_shared_capability(__VA_ARGS__))
#define RELEASE(...) KVROUTE_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define RELEASE_SHARED(...) KVROUTE_THREAD_ANNOTATION(release_shared_capability(__VA_ARGS__))
#define TRY_ACQUIRE(...) KVROUTE_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
#define EXCLUDES(...) KVROUTE_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define NO_THREAD_SAFETY_ANALYSIS THREAD_ANNOTATION_ATTRIBUTE__(no_thread_safety_analysis)

namespace kvroute {

class CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() ACQUIRE() { mu_.lock(); }
  void unlock() RELEASE() { mu_.unlock(); }
  bool try_lock() TRY_ACQUIRE(true) { return mu_.try_lock(); }

 private:
  std::mutex mu_;
};

// Holds a Mutex for its scope; unlock() and lock() let a section in the middle run without it.
class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  ~MutexLock() RELEASE() {
    if (held_) mu_.unlock();
  }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

  void unlock() RELEASE() {
    mu_.unlock();
    held_ = false;
  }
  void lock() ACQUIRE() {
    mu_.lock();
    held_ = true;
  }

 private:
  Mutex& mu_;
  bool held_ = true;
};

// A condition variable used with a Mutex the caller holds. Spurious wake-ups happen: wait in a
// loop on the condition.
class CondVar {
 public:
  void wait(Mutex& mu) REQUIRES(mu) { cv_.wait(mu); }
  // False when the deadline passed.
  bool wait_until(Mutex& mu, std::chrono::steady_clock::time_point deadline) REQUIRES(mu) {
    return cv_.wait_until(mu, deadline) == std::cv_status::no_timeout;
  }
  void notify_one() { cv_.notify_one(); }
  void notify_all() { cv_.notify_all(); }

 private:
  std::condition_variable_any cv_;
};

// Scoped holds of a reader-writer capability (a type with lock()/unlock() and
// lock_shared()/unlock_shared() annotated as a capability).
template <class RwLock>
class SCOPED_CAPABILITY WriterLock {
 public:
  explicit WriterLock(RwLock& mu) ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  ~WriterLock() RELEASE() { mu_.unlock(); }
  WriterLock(const WriterLock&) = delete;
  WriterLock& operator=(const WriterLock&) = delete;

 private:
  RwLock& mu_;
};

template <class RwLock>
class SCOPED_CAPABILITY ReaderLock {
 public:
  explicit ReaderLock(RwLock& mu) ACQUIRE_SHARED(mu) : mu_(mu) { mu_.lock_shared(); }
  ~ReaderLock() RELEASE() { mu_.unlock_shared(); }
  ReaderLock(const ReaderLock&) = delete;
  ReaderLock& operator=(const ReaderLock&) = delete;

 private:
  RwLock& mu_;
};

}  // namespace kvroute
