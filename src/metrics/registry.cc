#include "metrics/registry.h"

#include <fmt/format.h>

#include <cmath>
#include <new>

#include "common/mutex.h"

namespace kvroute::metrics {

namespace {
void append_escaped_label(std::string& out, std::string_view v) {
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
}

void append_labels(std::string& out, const std::vector<std::string>& names,
                   const std::vector<std::string>& values, std::string_view extra_name = {},
                   std::string_view extra_value = {}) {
  if (names.empty() && extra_name.empty()) return;
  out += '{';
  bool first = true;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (!first) out += ',';
    first = false;
    out += names[i];
    out += "=\"";
    append_escaped_label(out, values[i]);
    out += '"';
  }
  if (!extra_name.empty()) {
    if (!first) out += ',';
    out += extra_name;
    out += "=\"";
    out += extra_value;
    out += '"';
  }
  out += '}';
}
}  // namespace

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15)
    return fmt::format("{}", static_cast<long long>(v));
  return fmt::format("{}", v);
}

std::vector<double> latency_buckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

Histogram::Histogram(const std::vector<double>& bounds)
    : bounds_(bounds), stride_((bounds.size() + 1 + 7) / 8 * 8) {
  const std::size_t n = internal::kShards * stride_;
  counts_ = static_cast<std::atomic<std::uint64_t>*>(
      ::operator new (n * sizeof(std::atomic<std::uint64_t>), std::align_val_t{64}));
  for (std::size_t i = 0; i < n; ++i) new (&counts_[i]) std::atomic<std::uint64_t>(0);
}

Histogram::~Histogram() { ::operator delete (counts_, std::align_val_t{64}); }

void Histogram::observe(double v) {
  const std::size_t s = internal::shard();
  std::atomic<std::uint64_t>* c = counts(s);
  for (std::size_t i = 0; i < bounds_.size(); ++i) {
    if (v <= bounds_[i]) {
      c[1 + i].fetch_add(1, std::memory_order_relaxed);
      break;
    }
  }
  c[0].fetch_add(1, std::memory_order_relaxed);
  sums_[s].value.fetch_add(v, std::memory_order_relaxed);
}

std::uint64_t Histogram::count() const {
  std::uint64_t n = 0;
  for (std::size_t s = 0; s < internal::kShards; ++s)
    n += counts(s)[0].load(std::memory_order_relaxed);
  return n;
}

double Histogram::sum() const {
  double v = 0;
  for (const auto& s : sums_) v += s.value.load(std::memory_order_relaxed);
  return v;
}

std::uint64_t Histogram::cumulative(std::size_t i) const {
  std::uint64_t c = 0;
  for (std::size_t s = 0; s < internal::kShards; ++s) {
    const std::atomic<std::uint64_t>* shard = counts(s);
    for (std::size_t j = 0; j <= i && j < bounds_.size(); ++j)
      c += shard[1 + j].load(std::memory_order_relaxed);
  }
  return c;
}

template <typename Cell>
Family<Cell>::Family(std::string name, std::string help, Type type, std::vector<std::string> labels,
                     std::vector<double> bounds)
    : name_(std::move(name)),
      help_(std::move(help)),
      type_(type),
      labels_(std::move(labels)),
      bounds_(std::move(bounds)) {}

template <typename Cell>
Cell& Family<Cell>::with(const std::vector<std::string>& values) {
  MutexLock lock(mu_);
  auto it = cells_.find(values);
  if (it != cells_.end()) return *it->second;
  std::unique_ptr<Cell> cell;
  if constexpr (std::is_same_v<Cell, Histogram>) {
    cell = std::make_unique<Histogram>(bounds_);
  } else {
    cell = std::make_unique<Cell>();
  }
  auto& ref = *cell;
  cells_.emplace(values, std::move(cell));
  return ref;
}

template <typename Cell>
Cell& Family<Cell>::with(std::initializer_list<std::string_view> values) {
  std::vector<std::string> v;
  v.reserve(values.size());
  for (auto s : values) v.emplace_back(s);
  return with(v);
}

template <typename Cell>
void Family<Cell>::remove(std::initializer_list<std::string_view> values) {
  std::vector<std::string> v(values.begin(), values.end());
  MutexLock lock(mu_);
  auto it = cells_.find(v);
  if (it == cells_.end()) return;
  retired_.push_back(std::move(it->second));
  cells_.erase(it);
}

template <typename Cell>
void Family<Cell>::render(std::string& out) const {
  out += "# HELP ";
  out += name_;
  out += ' ';
  out += help_;
  out += "\n# TYPE ";
  out += name_;
  out += type_ == Type::kCounter ? " counter\n"
         : type_ == Type::kGauge ? " gauge\n"
                                 : " histogram\n";
  MutexLock lock(mu_);
  for (const auto& [values, cell] : cells_) {
    if constexpr (std::is_same_v<Cell, Histogram>) {
      for (std::size_t i = 0; i < bounds_.size(); ++i) {
        out += name_;
        out += "_bucket";
        append_labels(out, labels_, values, "le", format_value(bounds_[i]));
        out += ' ';
        out += std::to_string(cell->cumulative(i));
        out += '\n';
      }
      out += name_;
      out += "_bucket";
      append_labels(out, labels_, values, "le", "+Inf");
      out += ' ';
      out += std::to_string(cell->count());
      out += '\n';
      out += name_;
      out += "_sum";
      append_labels(out, labels_, values);
      out += ' ';
      out += format_value(cell->sum());
      out += '\n';
      out += name_;
      out += "_count";
      append_labels(out, labels_, values);
      out += ' ';
      out += std::to_string(cell->count());
      out += '\n';
    } else {
      out += name_;
      append_labels(out, labels_, values);
      out += ' ';
      out += format_value(cell->value());
      out += '\n';
    }
  }
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

CounterFamily& Registry::counter(std::string name, std::string help,
                                 std::vector<std::string> labels) {
  MutexLock lock(mu_);
  counters_.push_back(std::make_unique<CounterFamily>(std::move(name), std::move(help),
                                                      Type::kCounter, std::move(labels)));
  order_.emplace_back(Type::kCounter, counters_.size() - 1);
  return *counters_.back();
}

GaugeFamily& Registry::gauge(std::string name, std::string help, std::vector<std::string> labels) {
  MutexLock lock(mu_);
  gauges_.push_back(std::make_unique<GaugeFamily>(std::move(name), std::move(help), Type::kGauge,
                                                  std::move(labels)));
  order_.emplace_back(Type::kGauge, gauges_.size() - 1);
  return *gauges_.back();
}

HistogramFamily& Registry::histogram(std::string name, std::string help, std::vector<double> bounds,
                                     std::vector<std::string> labels) {
  MutexLock lock(mu_);
  histograms_.push_back(std::make_unique<HistogramFamily>(
      std::move(name), std::move(help), Type::kHistogram, std::move(labels), std::move(bounds)));
  order_.emplace_back(Type::kHistogram, histograms_.size() - 1);
  return *histograms_.back();
}

std::string Registry::render() const {
  std::string out;
  out.reserve(8192);
  MutexLock lock(mu_);
  for (auto [type, i] : order_) {
    switch (type) {
      case Type::kCounter:
        counters_[i]->render(out);
        break;
      case Type::kGauge:
        gauges_[i]->render(out);
        break;
      case Type::kHistogram:
        histograms_[i]->render(out);
        break;
    }
  }
  return out;
}

}  // namespace kvroute::metrics
