// File: metrics/registry.h
//
// Prometheus metrics: families are declared once (name, help, type, label names) and hand out
// stable cells per label-value tuple; render() writes the text exposition format (0.0.4), clean
// under `promtool check metrics`. Hot paths keep the cell pointers they need (cells never move).
//
// Thread-safety: everything is thread-safe. Cell updates are lock-free atomics; every with() call
// (a lookup, or the creation of a new label tuple) and rendering take the family's mutex, and
// declaring a family takes the registry's.
//
//   Registry reg;
//   auto& reqs = reg.counter("kvroute_requests_total", "Requests handled.", {"endpoint", "code"});
//   reqs.with({"/v1/completions", "200"}).inc();
#pragma once

#include <atomic>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/mutex.h"

namespace kvroute::metrics {

namespace internal {
// Counters and histograms keep one slot per shard, each on its own cache line: the workers update
// them on every request, and one shared line bouncing between cores cost every update a transfer.
// A thread takes the next shard on first use; threads beyond kShards share (updates stay atomic).
inline constexpr std::size_t kShards = 8;
inline std::atomic<std::size_t> next_shard{0};
inline std::size_t shard() {
  thread_local const std::size_t s = next_shard.fetch_add(1, std::memory_order_relaxed) % kShards;
  return s;
}
struct alignas(64) Slot {
  std::atomic<double> value{0};
};
}  // namespace internal

class Counter {
 public:
  void inc(double v = 1) {
    slots_[internal::shard()].value.fetch_add(v, std::memory_order_relaxed);
  }
  double value() const {
    double sum = 0;
    for (const auto& s : slots_) sum += s.value.load(std::memory_order_relaxed);
    return sum;
  }

 private:
  internal::Slot slots_[internal::kShards];
};

class Gauge {
 public:
  void set(double v) { value_.store(v, std::memory_order_relaxed); }
  void add(double v) { value_.fetch_add(v, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Histogram {
 public:
  explicit Histogram(const std::vector<double>& bounds);
  ~Histogram();
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;
  void observe(double v);
  std::uint64_t count() const;
  double sum() const;
  // Cumulative count of observations <= bounds[i].
  std::uint64_t cumulative(std::size_t i) const;
  const std::vector<double>& bounds() const { return bounds_; }

 private:
  // A shard's counts: observations, then one per bucket; shards start on separate cache lines.
  std::atomic<std::uint64_t>* counts(std::size_t shard) const { return counts_ + shard * stride_; }
  const std::vector<double>& bounds_;
  std::size_t stride_;                      // counts per shard, rounded up to a cache line
  std::atomic<std::uint64_t>* counts_;      // kShards * stride_, 64-byte aligned
  internal::Slot sums_[internal::kShards];  // sum of observations, per shard
};

enum class Type { kCounter, kGauge, kHistogram };

template <typename Cell>
class Family {
 public:
  Family(std::string name, std::string help, Type type, std::vector<std::string> labels,
         std::vector<double> bounds = {});
  // The cell for these label values (created on first use). Requires: values.size() == labels.
  Cell& with(std::initializer_list<std::string_view> values);
  Cell& with(const std::vector<std::string>& values);
  // Stops exporting the series (a backend that left the pool). The cell stays valid for anyone
  // holding it; a later with() of the same values starts a new one.
  void remove(std::initializer_list<std::string_view> values);
  void render(std::string& out) const;
  const std::string& name() const { return name_; }

 private:
  std::string name_, help_;
  Type type_;
  std::vector<std::string> labels_;
  std::vector<double> bounds_;
  mutable Mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<Cell>> cells_ GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Cell>> retired_ GUARDED_BY(mu_);
};

using CounterFamily = Family<Counter>;
using GaugeFamily = Family<Gauge>;
using HistogramFamily = Family<Histogram>;

class Registry {
 public:
  CounterFamily& counter(std::string name, std::string help, std::vector<std::string> labels = {});
  GaugeFamily& gauge(std::string name, std::string help, std::vector<std::string> labels = {});
  HistogramFamily& histogram(std::string name, std::string help, std::vector<double> bounds,
                             std::vector<std::string> labels = {});
  // Text exposition of every family, in declaration order.
  std::string render() const;

 private:
  mutable Mutex mu_;
  std::vector<std::unique_ptr<CounterFamily>> counters_ GUARDED_BY(mu_);
  std::vector<std::unique_ptr<GaugeFamily>> gauges_ GUARDED_BY(mu_);
  std::vector<std::unique_ptr<HistogramFamily>> histograms_ GUARDED_BY(mu_);
  std::vector<std::pair<Type, std::size_t>> order_ GUARDED_BY(mu_);
};

// Default latency buckets in seconds (1 ms .. 60 s).
std::vector<double> latency_buckets();
// Formats a sample value the way Prometheus clients do ("1", "0.25", "+Inf", "NaN").
std::string format_value(double v);

}  // namespace kvroute::metrics
