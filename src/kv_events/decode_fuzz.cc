// libFuzzer target: decode_batch must never crash, read out of bounds or loop on any input, and
// whatever it accepts must survive an encode/decode round trip unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "kv_events/codec.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace kvroute::kv_events;
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  DecodedBatch d;
  if (decode_batch_into(in, d) != nullptr) return 0;
  for (Encoding enc : {Encoding::kArray, Encoding::kMap}) {
    DecodedBatch again;
    if (decode_batch_into(encode_batch(d.batch, enc), again) != nullptr) std::abort();
    // NaN timestamps compare unequal to themselves: compare the bits.
    if (std::memcmp(&again.batch.ts, &d.batch.ts, sizeof(double)) != 0) std::abort();
    again.batch.ts = 0;
    DecodedBatch first = d;
    first.batch.ts = 0;
    if (!(again.batch == first.batch)) std::abort();
  }
  return 0;
}
