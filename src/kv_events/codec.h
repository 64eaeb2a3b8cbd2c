// File: kv_events/codec.h
//
// msgpack codec for vLLM KV-cache event batches (msgspec's encoding of the structs in vLLM's
// vllm/distributed/kv_events.py, in every wire shape since v0.9.0), our own small encoder/decoder
// (docs/adr/0160-kv-events-own-msgpack-codec.md).
//
// Encoding reproduces msgspec byte for byte: smallest int forms, float64 `cb` timestamps,
// `omit_defaults` (trailing default fields cut in array mode, default keys left out in map mode),
// the tag as element 0 (array mode) or key "type" (map mode), and a positional outer batch
// `[ts, events, data_parallel_rank?]` in every mode.
//
// Decoding accepts every shape seen on the wire: batch as array or map, events as positional arrays
// of any length >= the required prefix or as maps carrying "type", hashes as uint/negative int/bin,
// optional fields absent or nil, unknown positions and keys ignored, unknown event tags (and map
// events without "type") skipped and counted; a tag that is not a string (array element 0, or the
// value of "type") is malformed. Malformed input yields an Error value; the decoder never reads out
// of bounds, never allocates more than a constant factor of the input size, and limits nesting
// depth.
//
// Thread-safety: pure functions, safe to call concurrently.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"
#include "kv_events/event.h"

namespace kvroute::kv_events {

enum class Encoding {
  kArray,      // array_like events, vLLM v0.9.x .. ~v0.25 (trailing default fields cut)
  kMap,        // events as maps with key "type", vLLM v0.26+ (PR #42892)
  kArrayV0_9,  // vLLM v0.9.0: BlockStored 6 elements, BlockRemoved 2, no data_parallel_rank
};

// Appends the msgpack encoding of `batch` to `out`.
void encode_batch(const EventBatch& batch, Encoding encoding, std::string& out);
std::string encode_batch(const EventBatch& batch, Encoding encoding);

struct DecodeStats {
  std::uint32_t events = 0;          // events decoded into the batch
  std::uint32_t unknown_events = 0;  // events with an unknown tag: skipped
  std::uint32_t ignored_fields = 0;  // unknown array positions or map keys: skipped
  std::uint32_t blocks = 0;          // block hashes in BlockStored events
};

struct DecodedBatch {
  EventBatch batch;
  DecodeStats stats;
};

// Limits that bound the work done on hostile input.
inline constexpr int kMaxDepth = 32;  // nesting of skipped values / extra_keys entries

// Decodes into a caller-owned object (reset first); returns nullptr on success, else a static
// message. For hot loops: the caller reuses one DecodedBatch.
const char* decode_batch_into(std::string_view bytes, DecodedBatch& out);

// Decodes one msgpack EventBatch. Trailing bytes after the batch are an error.
Result<DecodedBatch> decode_batch(std::string_view bytes);

// Reads a hash value as llm-d's getHashAsUint64 does: unsigned ints of any width, signed ints
// reinterpreted as uint64, bin = its last 8 bytes big-endian (all bytes when shorter).
// Exposed for tests; `bytes` must hold exactly one msgpack value.
Result<std::uint64_t> decode_hash(std::string_view bytes);

}  // namespace kvroute::kv_events
