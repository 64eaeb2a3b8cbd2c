// File: flow/controller.h
//
// Flow control's admission and dispatch (issue 18, docs/design/flow-control.md). A front door
// (serve, epp) hands each request over as a Ticket: its band, tenant, size, deadline and two
// callbacks of its own. try_dispatch() asks the routing core to pick among the request's
// candidates that have room now (flow/saturation.h) and returns true when it did; done() tells
// the waiter how admission ended. admit() tries at once when nothing of the same or higher
// priority waits (the unsaturated path costs one mutex and the pick), sheds sheddable requests
// (negative priority) under saturation, and otherwise queues the ticket (flow/queues.h). A
// dispatcher thread then offers queued tickets in band and fairness order whenever something may
// have freed room (wake(): a request started or ended, a scrape landed) and at least every
// `tick`, expires tickets past their deadline, and answers every ticket exactly once.
//
// Thread-safety: every method is safe from any thread. Callbacks run without the controller's
// lock, except try_dispatch of queued tickets, which runs on the dispatcher thread under it (it
// must not call back into the controller; wake() is the exception and is lock-free).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/mutex.h"
#include "flow/queues.h"
#include "flow/rate_limit.h"

namespace kvroute::flow {

enum class Outcome {
  kDispatched,
  kRejectedSaturated,  // sheddable under saturation: 429
  kRejectedCapacity,   // the band's or the router's queue is full: 429
  kExpired,            // waited past its deadline: 503
  kCancelled,          // the client left while queued
  kShuttingDown,       // 503
  kRateLimited,        // the tenant's token bucket is empty: 429 with Retry-After
};
std::string_view to_string(Outcome o);
int http_status(Outcome o);  // 200 for dispatched; 499 for cancelled

struct Admission {
  Outcome outcome = Outcome::kDispatched;
  std::int64_t queued_ms = 0;  // time spent queued (0 on the fast path)
  bool queued = false;
  int retry_after_s = 0;  // for 429/503
};

struct FlowOptions {
  std::vector<BandOptions> bands;
  BandOptions default_band;
  VtcWeights vtc;
  std::size_t max_requests = 0;  // all bands (0: none)
  std::size_t max_bytes = 0;
  std::chrono::milliseconds default_ttl{60000};  // queue-wait deadline (0: none)
  bool shed_sheddable = true;  // negative priority: 429 under saturation instead of queueing
  std::chrono::milliseconds tick{20};  // dispatch cycles at least this often while queued
  // Token buckets by tenant (the ticket's fairness id); `default_limit` for the others.
  std::unordered_map<std::string, RateLimit> tenant_limits;
  RateLimit default_limit;
};

class FlowController;

struct Ticket : QueueItem {
  std::function<bool()> try_dispatch;
  std::function<void(const Admission&)> done;
};

class FlowController {
 public:
  explicit FlowController(FlowOptions options);
  ~FlowController();  // stop()
  FlowController(const FlowController&) = delete;
  FlowController& operator=(const FlowController&) = delete;

  // Answers `t` at once (dispatched through its try_dispatch, or refused; done() is not called),
  // or queues it: then the Admission returned has `queued` set and done() is called later, once,
  // on the dispatcher thread. A queued `t` must live until done() returns or cancel() returned
  // true.
  Admission admit(Ticket& t, std::int64_t now_ms);
  // Takes a queued ticket out (its client left). True when it was queued: done() will not be
  // called. False when it was already answered (or being dispatched: done() runs or ran).
  bool cancel(Ticket& t);
  // Something may have freed room: run a dispatch cycle soon. Lock-free; nothing (not even a
  // thread wake-up) when nothing waits, so the requests of an unsaturated pool pay no context
  // switch for it.
  void wake();
  // Answers every queued ticket kShuttingDown and stops the dispatcher.
  void stop();

  std::size_t queued() const;
  std::size_t queued(int priority) const;

 private:
  void run();
  void cycle(std::int64_t now_ms);
  using Answers = std::vector<std::pair<Ticket*, Admission>>;
  static void answer(Answers& answers);

  const FlowOptions options_;
  RateLimiter limiter_;
  mutable Mutex mu_;
  Queues queues_ GUARDED_BY(mu_);
  bool stopping_ GUARDED_BY(mu_) = false;
  std::atomic<bool> stopped_{false};  // stopping_, for admit()'s lock-free try
  std::atomic<bool> woken_{false};
  std::atomic<std::size_t> waiting_{0};  // queues_.size(), mirrored after every change under mu_
  std::mutex wake_mu_;
  std::condition_variable wake_cv_;
  std::thread thread_;
};

}  // namespace kvroute::flow
