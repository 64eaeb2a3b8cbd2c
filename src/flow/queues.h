// File: flow/queues.h
//
// The waiting room of flow control (issue 18, docs/design/flow-control.md): requests that found
// no engine with room wait here in priority bands; inside a band each tenant (fairness id) has
// its own first-come-first-served queue, and the band's fairness policy decides whose head goes
// next: round-robin over the tenants with requests, a virtual token counter (VTC: the tenant that
// has been served the fewest weighted tokens goes first; a tenant that rejoins is lifted to the
// lowest active counter so idle time is not banked), or global strict (oldest request first).
// Bands dispatch from the highest priority down. Requests of one pool (one model: the same
// candidate engines) share their room: when a request of a pool finds no engine with room, the
// pool is full for the rest of the cycle, and its other requests, in this band and lower ones, are
// not tried (a lower band cannot take room that frees while the cycle runs, and a saturated
// cycle costs one try per pool, not one per queued request); the cycle goes on with other pools
// (work-conserving across models).
//
// Items are owned by their waiters; the queues hold pointers. Thread-safety: none (the flow
// controller holds its mutex around every call).
#pragma once

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace kvroute::flow {

enum class Fairness { kRoundRobin, kVtc, kGlobalStrict };

struct Flow;

struct BandOptions {
  int priority = 0;
  std::size_t max_requests = 5000;
  std::size_t max_bytes = std::size_t{1} << 30;
  Fairness fairness = Fairness::kRoundRobin;
};

struct VtcWeights {
  double input = 1;   // per uncached prompt token
  double output = 2;  // per expected output token
};

struct QueueItem {
  int priority = 0;
  std::string fairness_id;
  std::string pool;  // requests with the same candidate engines (the model)
  std::size_t bytes = 0;
  std::int64_t enqueued_ms = 0;
  std::int64_t deadline_ms = 0;  // 0: none
  double input_tokens = 0;       // VTC charge when dispatched
  double output_tokens = 0;

 private:
  friend class Queues;
  Flow* flow_ = nullptr;  // non-null while queued
  std::list<QueueItem*>::iterator pos_;
  std::uint64_t seq_ = 0;
};

enum class Push { kQueued, kBandFull, kGlobalFull };

class Queues {
 public:
  // Bands not listed are created on first use with `default_band`'s limits and policy.
  Queues(std::vector<BandOptions> bands, BandOptions default_band, VtcWeights weights = {},
         std::size_t max_requests = 0, std::size_t max_bytes = 0);
  ~Queues();
  Queues(const Queues&) = delete;
  Queues& operator=(const Queues&) = delete;

  Push push(QueueItem* item);
  // Takes a queued item out (its client left, or its deadline passed); false if not queued.
  bool remove(QueueItem* item);

  // One dispatch cycle: offers queued heads in dispatch order to `try_dispatch(QueueItem&)`,
  // which returns true when it dispatched the item (the item then leaves the queues and its
  // tenant is charged) and false when the item's engines have no room (its pool is then full for
  // the rest of the cycle). Returns the number dispatched.
  template <typename F>
  std::size_t dispatch(F&& try_dispatch);

  // Items whose deadline is at or before now_ms, taken out of the queues.
  std::vector<QueueItem*> expire(std::int64_t now_ms);

  std::size_t size() const { return size_; }
  std::size_t bytes() const { return bytes_; }
  std::size_t size(int priority) const;
  // Whether anything waits at `priority` or above (a new request of that priority must then
  // queue behind it rather than take a free slot first).
  bool waiting_at_or_above(int priority) const;
  // The VTC counter of a tenant in a band (0 if none): for tests and the status page.
  double counter(int priority, const std::string& fairness_id) const;

 private:
  struct Band;
  Band& band(int priority);
  QueueItem* next_head(Band& b);
  void charge(Band& b, QueueItem& item);
  void take(QueueItem* item);

  std::map<int, std::unique_ptr<Band>, std::greater<>> bands_;  // highest priority first
  BandOptions default_band_;
  VtcWeights weights_;
  std::size_t max_requests_, max_bytes_;
  std::size_t size_ = 0, bytes_ = 0;
  std::uint64_t seq_ = 0;
  std::uint64_t cycle_ = 0;
};

// --- implementation details the template needs ---------------------------------------------

struct Flow {
  std::string id;
  std::list<QueueItem*> items;
  double counter = 0;               // VTC
  std::uint64_t blocked_cycle = 0;  // skipped in this dispatch cycle
};

struct Queues::Band {
  BandOptions options;
  std::map<std::string, Flow> flows;         // tenants with a queue (emptied flows are erased)
  std::string cursor;                        // round-robin: the tenant served last
  std::string scan;                          // round-robin: the tenant offered last in this cycle
  std::map<std::string, std::size_t> pools;  // queued items per pool
  std::size_t size = 0, bytes = 0;
  // VTC: counters of tenants whose queue emptied, kept while above the band's floor (the lowest
  // active counter when last seen); a tenant that comes back resumes at max(its own, floor).
  std::map<std::string, double> idle_counters;
  double floor = 0;
};

template <typename F>
std::size_t Queues::dispatch(F&& try_dispatch) {
  ++cycle_;
  std::size_t n = 0;
  std::vector<std::string> full;  // pools without room in this cycle (a few: one per model)
  auto is_full = [&full](const std::string& pool) {
    for (const auto& p : full)
      if (p == pool) return true;
    return false;
  };
  for (auto& [priority, bp] : bands_) {
    Band& b = *bp;
    b.scan = b.cursor;
    for (;;) {
      bool open = false;  // a pool of this band may still have room
      for (const auto& [pool, count] : b.pools) {
        if (!is_full(pool)) {
          open = true;
          break;
        }
      }
      if (!open) break;
      QueueItem* head = next_head(b);
      if (head == nullptr) break;
      Flow* f = head->flow_;
      if (is_full(head->pool)) {
        f->blocked_cycle = cycle_;
      } else if (try_dispatch(*head)) {
        // Round-robin: the turn passes only when the tenant was served (a blocked head keeps it).
        b.cursor = f->id;
        charge(b, *head);
        take(head);
        ++n;
      } else {
        f->blocked_cycle = cycle_;
        full.push_back(head->pool);
      }
    }
  }
  return n;
}

}  // namespace kvroute::flow
