#include "routing/backend.h"

namespace kvroute::routing {

std::int64_t steady_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

bool Backend::serves(std::string_view model) const {
  auto m = models.load();
  if (!m || model.empty()) return true;  // unknown: do not exclude
  for (const auto& name : *m) {
    if (name == model) return true;
  }
  return false;
}

bool Backend::available(std::int64_t now_ms) const {
  return healthy.load(std::memory_order_relaxed) &&
         ejected_until_ms.load(std::memory_order_relaxed) <= now_ms;
}

}  // namespace kvroute::routing
