// libFuzzer target: replication::decode must never crash, read out of bounds or allocate beyond
// its bounds on any input, and whatever it accepts must encode back to the same bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "replication/replication.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace kvroute::replication;
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  auto m = decode(in);
  if (!m) return 0;
  std::string out;
  if (m->type == MessageType::kRouted) {
    // Flags other than bit 0 are not kept: compare what the encoder writes back.
    encode_routed(m->sender, m->seq, m->routed, out);
    auto again = decode(out);
    if (!again || again->routed.blocks != m->routed.blocks ||
        again->routed.backend != m->routed.backend ||
        again->routed.token_blocks != m->routed.token_blocks ||
        again->routed.output_blocks != m->routed.output_blocks)
      std::abort();
  } else if (m->type == MessageType::kSnapshot) {
    // Records' flags beyond bit 0 are not kept: compare what decoding the re-encoding gives.
    const auto& sn = m->snapshot;
    encode_snapshot(sn.requester, m->sender, sn.index, sn.count, sn.records, out);
    auto again = decode(out);
    if (!again || again->type != MessageType::kSnapshot ||
        again->snapshot.records.size() != sn.records.size() || again->snapshot.index != sn.index ||
        again->snapshot.count != sn.count || again->sender != m->sender ||
        again->snapshot.requester != sn.requester)
      std::abort();
    for (std::size_t i = 0; i < sn.records.size(); ++i)
      if (again->snapshot.records[i].blocks != sn.records[i].blocks ||
          again->snapshot.records[i].backend != sn.records[i].backend)
        std::abort();
  } else {
    encode_load(m->sender, m->seq, m->load, out);
    if (out != in) std::abort();
  }
  return 0;
}
