#include "flow/controller.h"

#include <algorithm>

#include "routing/backend.h"

namespace kvroute::flow {

std::string_view to_string(Outcome o) {
  switch (o) {
    case Outcome::kDispatched:
      return "dispatched";
    case Outcome::kRejectedSaturated:
      return "rejected-saturated";
    case Outcome::kRejectedCapacity:
      return "rejected-capacity";
    case Outcome::kExpired:
      return "rejected-ttl-expired";
    case Outcome::kCancelled:
      return "rejected-context-cancelled";
    case Outcome::kShuttingDown:
      return "rejected-shutting-down";
    case Outcome::kRateLimited:
      return "rejected-rate-limited";
  }
  return "unknown";
}

int http_status(Outcome o) {
  switch (o) {
    case Outcome::kDispatched:
      return 200;
    case Outcome::kRejectedSaturated:
    case Outcome::kRejectedCapacity:
    case Outcome::kRateLimited:
      return 429;
    case Outcome::kCancelled:
      return 499;
    case Outcome::kExpired:
    case Outcome::kShuttingDown:
      return 503;
  }
  return 503;
}

FlowController::FlowController(FlowOptions options)
    : options_(std::move(options)),
      limiter_(options_.tenant_limits, options_.default_limit),
      queues_(options_.bands, options_.default_band, options_.vtc, options_.max_requests,
              options_.max_bytes) {
  thread_ = std::thread([this] { run(); });
}

FlowController::~FlowController() { stop(); }

Admission FlowController::admit(Ticket& t, std::int64_t now_ms) {
  Admission a;
  if (limiter_.enabled()) {
    if (const int wait = limiter_.take(t.fairness_id, t.input_tokens + t.output_tokens, now_ms)) {
      a.outcome = Outcome::kRateLimited;
      a.retry_after_s = wait;
      return a;
    }
  }
  // Nothing waits in any band (the pool was not saturated a moment ago): try without the lock, so
  // the requests of an unsaturated pool do not serialize on it. A request queued meanwhile by
  // another thread may be overtaken once, as it could be by one that took the lock first.
  bool tried = false;
  if (waiting_.load(std::memory_order_acquire) == 0 && !stopped_.load(std::memory_order_acquire)) {
    if (t.try_dispatch()) return a;
    tried = true;
  }
  {
    MutexLock lock(mu_);
    if (stopping_) {
      a.outcome = Outcome::kShuttingDown;
      return a;
    }
    // Behind requests of the same or a higher band that wait already: no overtaking.
    if (!tried && !queues_.waiting_at_or_above(t.priority)) {
      lock.unlock();
      if (t.try_dispatch()) return a;
      lock.lock();
      if (stopping_) {
        a.outcome = Outcome::kShuttingDown;
        return a;
      }
    }
    if (t.priority < 0 && options_.shed_sheddable) {
      a.outcome = Outcome::kRejectedSaturated;
      a.retry_after_s = 1;
      return a;
    }
    t.enqueued_ms = now_ms;
    if (t.deadline_ms == 0 && options_.default_ttl.count() > 0)
      t.deadline_ms = now_ms + options_.default_ttl.count();
    if (queues_.push(&t) != Push::kQueued) {
      a.outcome = Outcome::kRejectedCapacity;
      a.retry_after_s = 1;
      return a;
    }
    waiting_.store(queues_.size(), std::memory_order_release);
  }
  a.queued = true;
  wake();  // room may have freed between the try and the push
  return a;
}

bool FlowController::cancel(Ticket& t) {
  MutexLock lock(mu_);
  const bool removed = queues_.remove(&t);
  waiting_.store(queues_.size(), std::memory_order_release);
  return removed;
}

void FlowController::wake() {
  if (waiting_.load(std::memory_order_acquire) == 0) return;
  if (!woken_.exchange(true)) {
    std::lock_guard l(wake_mu_);
    wake_cv_.notify_one();
  }
}

void FlowController::answer(Answers& answers) {
  for (auto& [t, a] : answers) t->done(a);
  answers.clear();
}

void FlowController::stop() {
  Answers answers;
  {
    MutexLock lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    stopped_.store(true, std::memory_order_release);
    const auto now = routing::steady_now_ms();
    // One cycle that takes every queued ticket.
    queues_.dispatch([&](QueueItem& item) {
      auto* t = static_cast<Ticket*>(&item);
      answers.emplace_back(t, Admission{Outcome::kShuttingDown, now - t->enqueued_ms, true, 0});
      return true;
    });
    waiting_.store(queues_.size(), std::memory_order_release);
  }
  {
    std::lock_guard l(wake_mu_);
    woken_ = true;
    wake_cv_.notify_one();
  }
  if (thread_.joinable()) thread_.join();
  answer(answers);
}

void FlowController::cycle(std::int64_t now_ms) {
  Answers answers;
  {
    MutexLock lock(mu_);
    if (stopping_) return;
    for (QueueItem* item : queues_.expire(now_ms)) {
      auto* t = static_cast<Ticket*>(item);
      answers.emplace_back(t, Admission{Outcome::kExpired, now_ms - t->enqueued_ms, true, 1});
    }
    queues_.dispatch([&](QueueItem& item) {
      auto* t = static_cast<Ticket*>(&item);
      if (!t->try_dispatch()) return false;
      answers.emplace_back(t, Admission{Outcome::kDispatched, now_ms - t->enqueued_ms, true, 0});
      return true;
    });
    waiting_.store(queues_.size(), std::memory_order_release);
  }
  answer(answers);
}

void FlowController::run() {
  for (;;) {
    {
      // Idle (nothing queued): sleep until woken; else cycle at least every tick, as room also
      // frees without a wake (a scrape that lowers an engine's queue).
      const bool idle = queued() == 0;
      std::unique_lock l(wake_mu_);
      if (idle) {
        wake_cv_.wait(l, [&] { return woken_.load(); });
      } else {
        wake_cv_.wait_for(l, options_.tick, [&] { return woken_.load(); });
      }
    }
    woken_ = false;
    {
      MutexLock lock(mu_);
      if (stopping_) return;
    }
    cycle(routing::steady_now_ms());
  }
}

std::size_t FlowController::queued() const {
  MutexLock lock(mu_);
  return queues_.size();
}

std::size_t FlowController::queued(int priority) const {
  MutexLock lock(mu_);
  return queues_.size(priority);
}

}  // namespace kvroute::flow
