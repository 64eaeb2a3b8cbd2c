// libFuzzer target for the Prometheus text parser (build with -DKVROUTE_FUZZ=ON and clang).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "metrics/prom_parser.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto p = kvroute::metrics::parse_exposition(
      std::string_view(reinterpret_cast<const char*>(data), size));
  return p.samples.size() > size ? 1 : 0;
}
