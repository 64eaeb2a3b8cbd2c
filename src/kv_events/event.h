// File: kv_events/event.h
//
// vLLM's KV-cache events as native structs (the msgspec Structs of vLLM's
// vllm/distributed/kv_events.py: KVEventBatch, BlockStored, BlockRemoved, AllBlocksCleared). The
// codec (kv_events/codec.h) turns them into and out of msgpack; the simulator produces them; the
// precise index consumes them. Hashes are the engine's 64-bit block hashes as published on the wire
// (a bin digest is reduced to its last 8 bytes, big-endian, as vLLM's maybe_convert_block_hash
// does).
//
// Thread-safety: plain value types, not synchronized: a batch is used by one thread at a time (the
// simulator's engine thread builds it and publish() encodes it there; the subscriber's thread
// decodes it and passes it to the callbacks, which run on that thread).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace kvroute::kv_events {

struct BlockStored {
  std::vector<std::uint64_t> block_hashes;
  std::optional<std::uint64_t> parent_block_hash;  // nil when the run starts at block 0
  std::vector<std::uint32_t> token_ids;            // block_hashes.size() * block_size tokens
  std::uint32_t block_size = 16;
  std::optional<std::int64_t> lora_id;  // deprecated, always on the wire (maybe nil)
  std::optional<std::string> medium;    // "GPU", "CPU", ...
  std::optional<std::string> lora_name;
  std::optional<std::int64_t> group_idx;
  // Later optional fields (extension, kv_events/codec.h carries them byte-exactly):
  // extra_keys: empty = absent/nil; else one entry per block holding that entry's raw msgpack
  // bytes ("\xc0" for nil). Opaque on purpose: its shape changed across vLLM versions.
  std::vector<std::string> extra_keys;
  std::optional<std::string> kv_cache_spec_kind;  // e.g. "full_attention"
  std::optional<std::int64_t> kv_cache_spec_sliding_window;
  bool operator==(const BlockStored&) const = default;
};

struct BlockRemoved {
  std::vector<std::uint64_t> block_hashes;
  std::optional<std::string> medium;
  std::optional<std::int64_t> group_idx;
  bool operator==(const BlockRemoved&) const = default;
};

struct AllBlocksCleared {
  bool operator==(const AllBlocksCleared&) const = default;
};

using Event = std::variant<BlockStored, BlockRemoved, AllBlocksCleared>;

struct EventBatch {
  double ts = 0;
  std::vector<Event> events;
  std::optional<std::int64_t> data_parallel_rank;
  bool operator==(const EventBatch&) const = default;
};

}  // namespace kvroute::kv_events
