// File: discovery/internal/kube_objects.h
//
// The Kubernetes API objects discovery reads, parsed from their JSON (simdjson): an InferencePool
// (inference.networking.k8s.io/v1: spec.selector.matchLabels and spec.targetPorts[].number;
// v1alpha2's spec.selector map and spec.targetPortNumber too), a pod (name, IP, the Ready
// condition, deletion), a list's items and resourceVersion, and one watch event line. Pure
// functions: no I/O, any input (fuzzed by kube_objects_fuzz).
//
// Thread-safety: pure functions; safe from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "config/config.h"

namespace kvroute::discovery::internal {

struct PoolSpec {
  std::map<std::string, std::string> selector;  // matchLabels
  std::vector<std::uint16_t> target_ports;
  bool operator==(const PoolSpec&) const = default;
};

struct Pod {
  std::string name;
  std::string ip;
  bool ready = false;  // Ready condition True, running, not being deleted
  bool operator==(const Pod&) const = default;
};

enum class EventType { kAdded, kModified, kDeleted, kBookmark, kError };

struct WatchEvent {
  EventType type = EventType::kError;
  std::string resource_version;  // the object's metadata.resourceVersion
  int error_code = 0;            // ERROR events: the Status object's code (410: Gone)
  std::optional<Pod> pod;        // pod watches
  std::optional<PoolSpec> pool;  // pool watches (nullopt when its spec is invalid)
};

// `json` is one InferencePool object.
Result<PoolSpec> parse_pool(std::string_view json);
// One pod object (a parsed element is reused by list and watch parsing).
Result<Pod> parse_pod(std::string_view json);
// A PodList: the pods and the list's resourceVersion.
Result<std::pair<std::vector<Pod>, std::string>> parse_pod_list(std::string_view json);
// One line of a watch stream; `pods`: a pod watch, else a pool watch.
Result<WatchEvent> parse_event(std::string_view line, bool pods);

// The backends of a pool: one per Ready pod with an IP and per target port, named "pod:port"
// (just "pod" when the pool has one port), sorted by name.
std::vector<config::BackendConfig> backends_of(const PoolSpec& pool, const std::vector<Pod>& pods);

// labelSelector's value for the query string (k1=v1,k2=v2, percent-encoded).
std::string label_selector_query(const std::map<std::string, std::string>& labels);

}  // namespace kvroute::discovery::internal
