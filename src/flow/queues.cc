#include "flow/queues.h"

#include <algorithm>
#include <limits>

namespace kvroute::flow {

Queues::Queues(std::vector<BandOptions> bands, BandOptions default_band, VtcWeights weights,
               std::size_t max_requests, std::size_t max_bytes)
    : default_band_(default_band),
      weights_(weights),
      max_requests_(max_requests),
      max_bytes_(max_bytes) {
  for (const auto& o : bands) {
    auto b = std::make_unique<Band>();
    b->options = o;
    bands_[o.priority] = std::move(b);
  }
}

Queues::~Queues() = default;

Queues::Band& Queues::band(int priority) {
  auto& slot = bands_[priority];
  if (!slot) {
    slot = std::make_unique<Band>();
    slot->options = default_band_;
    slot->options.priority = priority;
  }
  return *slot;
}

Push Queues::push(QueueItem* item) {
  if ((max_requests_ > 0 && size_ + 1 > max_requests_) ||
      (max_bytes_ > 0 && bytes_ + item->bytes > max_bytes_))
    return Push::kGlobalFull;
  Band& b = band(item->priority);
  if (b.size + 1 > b.options.max_requests || b.bytes + item->bytes > b.options.max_bytes)
    return Push::kBandFull;
  auto [it, fresh] = b.flows.try_emplace(item->fairness_id);
  Flow& f = it->second;
  if (fresh) {
    f.id = item->fairness_id;
    // Lift to the lowest active counter: a tenant does not bank the time it sent nothing.
    double lowest = std::numeric_limits<double>::infinity();
    for (const auto& [id, other] : b.flows)
      if (&other != &f) lowest = std::min(lowest, other.counter);
    if (lowest != std::numeric_limits<double>::infinity()) b.floor = std::max(b.floor, lowest);
    double own = 0;
    if (auto idle = b.idle_counters.find(f.id); idle != b.idle_counters.end()) {
      own = idle->second;
      b.idle_counters.erase(idle);
    }
    f.counter = std::max(own, b.floor);
  }
  f.items.push_back(item);
  item->flow_ = &f;
  item->pos_ = std::prev(f.items.end());
  item->seq_ = ++seq_;
  ++b.size;
  b.bytes += item->bytes;
  ++b.pools[item->pool];
  ++size_;
  bytes_ += item->bytes;
  return Push::kQueued;
}

void Queues::take(QueueItem* item) {
  Flow* f = item->flow_;
  Band& b = band(item->priority);
  f->items.erase(item->pos_);
  item->flow_ = nullptr;
  --b.size;
  b.bytes -= item->bytes;
  if (auto p = b.pools.find(item->pool); p != b.pools.end() && --p->second == 0) b.pools.erase(p);
  --size_;
  bytes_ -= item->bytes;
  if (f->items.empty()) {
    const std::string id = f->id;  // the key of the node erased
    if (f->counter > b.floor) b.idle_counters[id] = f->counter;
    b.flows.erase(id);
    // Counters at or under the floor would be lifted to it anyway.
    if (b.idle_counters.size() > 1024) {
      std::erase_if(b.idle_counters, [&](const auto& kv) { return kv.second <= b.floor; });
    }
  }
}

bool Queues::remove(QueueItem* item) {
  if (item->flow_ == nullptr) return false;
  take(item);
  return true;
}

QueueItem* Queues::next_head(Band& b) {
  Flow* best = nullptr;
  switch (b.options.fairness) {
    case Fairness::kRoundRobin: {
      // The first unblocked tenant after the last one offered in this cycle (which starts at
      // the tenant served last), wrapping around: each tenant is looked at about once a cycle.
      auto it = b.flows.upper_bound(b.scan);
      for (std::size_t i = 0; i < b.flows.size(); ++i, ++it) {
        if (it == b.flows.end()) it = b.flows.begin();
        if (it->second.blocked_cycle != cycle_) {
          best = &it->second;
          b.scan = it->first;
          break;
        }
      }
      break;
    }
    case Fairness::kVtc:
      for (auto& [id, f] : b.flows) {
        if (f.blocked_cycle == cycle_) continue;
        if (!best || f.counter < best->counter) best = &f;
      }
      break;
    case Fairness::kGlobalStrict:
      for (auto& [id, f] : b.flows) {
        if (f.blocked_cycle == cycle_) continue;
        if (!best || f.items.front()->seq_ < best->items.front()->seq_) best = &f;
      }
      break;
  }
  return best ? best->items.front() : nullptr;
}

void Queues::charge(Band& b, QueueItem& item) {
  item.flow_->counter += weights_.input * item.input_tokens + weights_.output * item.output_tokens;
  (void)b;
}

std::vector<QueueItem*> Queues::expire(std::int64_t now_ms) {
  std::vector<QueueItem*> out;
  for (auto& [priority, b] : bands_) {
    for (auto& [id, f] : b->flows) {
      for (QueueItem* item : f.items) {
        if (item->deadline_ms > 0 && item->deadline_ms <= now_ms) out.push_back(item);
      }
    }
  }
  for (QueueItem* item : out) take(item);
  return out;
}

std::size_t Queues::size(int priority) const {
  auto it = bands_.find(priority);
  return it == bands_.end() ? 0 : it->second->size;
}

bool Queues::waiting_at_or_above(int priority) const {
  for (const auto& [p, b] : bands_) {
    if (p < priority) break;
    if (b->size > 0) return true;
  }
  return false;
}

double Queues::counter(int priority, const std::string& fairness_id) const {
  auto it = bands_.find(priority);
  if (it == bands_.end()) return 0;
  const Band& b = *it->second;
  if (auto f = b.flows.find(fairness_id); f != b.flows.end()) return f->second.counter;
  if (auto i = b.idle_counters.find(fairness_id); i != b.idle_counters.end()) return i->second;
  return 0;
}

}  // namespace kvroute::flow
