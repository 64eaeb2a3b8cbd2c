// libFuzzer target: the Kubernetes objects discovery parses (kube_objects.h), as a broken or
// hostile API server could send them: pool, pod, pod list and watch lines. Invariants: no crash,
// and the backends of any parsed pool and pods are well-formed (ports in range, one per ready pod
// and port).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "discovery/internal/kube_objects.h"

using namespace kvroute::discovery::internal;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  auto pool = parse_pool(in);
  auto pod = parse_pod(in);
  auto list = parse_pod_list(in);
  (void)parse_event(in, true);
  (void)parse_event(in, false);
  if (pool) {
    if (pool->selector.empty() || pool->target_ports.empty()) std::abort();
    for (auto p : pool->target_ports) {
      if (p == 0) std::abort();
    }
    std::vector<Pod> pods;
    if (pod) pods.push_back(*pod);
    if (list) pods.insert(pods.end(), list->first.begin(), list->first.end());
    std::size_t ready = 0;
    for (const auto& p : pods) ready += p.ready ? 1 : 0;
    if (backends_of(*pool, pods).size() != ready * pool->target_ports.size()) std::abort();
  }
  return 0;
}
