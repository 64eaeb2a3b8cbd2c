// File: doctor/doctor.h
//
// `kvroute doctor ENGINE_URL... [--router URL]`: diagnoses a deployment the way teams do by hand
// (docs/doctor.md) and says what to fix. Against each engine: reachable, prefix caching enabled
// (vllm:cache_config_info) and effective (a repeated prompt must find cached blocks: a KV-transfer
// connector that bypasses the local cache shows up here), the same block size and hash algorithm
// everywhere and as the router's, the same version, and engines that serve one model name but
// tokenize differently (different models or tokenizers under one name), clocks (the Date header);
// with their KV-event endpoints, that events arrive and that every engine hashes one prompt alike
// (PYTHONHASHSEED, the hash algorithm). Through the router: a
// session stays on one engine, a repeated prompt returns to the engine that holds it (which engine
// served a request is read from the engines' own request counters), and the router's predicted
// cached tokens agree with what the engines found over those probes.
//
// Thread-safety: diagnose() runs everything on a private io_context in the calling thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace kvroute::doctor {

enum class Severity { kOk, kWarn, kFail };
std::string_view to_string(Severity s);

struct Finding {
  std::string check;   // "prefix-caching-effective"
  std::string target;  // the engine or router URL, or "engines"
  Severity severity = Severity::kOk;
  std::string message;  // what was seen
  std::string fix;      // what to do (empty when ok)
};

struct Options {
  std::vector<std::string> engines;  // engine base URLs
  // The engines' KV-event PUB endpoints, by position (like serve's --kv-events; "" for none): they
  // must publish when a prompt is stored, and hash one prompt alike.
  std::vector<std::string> kv_events;
  std::string router;          // optional router base URL
  std::string router_metrics;  // where the router serves /metrics ("": the router URL)
  std::string session_header = "x-session-id";
  std::string api_key;            // sent as Bearer to the router and the engines
  std::uint32_t block_size = 16;  // the router's routing.blockSize
  std::chrono::milliseconds timeout{10000};
};

struct Report {
  std::vector<Finding> findings;
  bool failed() const;
  // The findings of one check (tests).
  std::vector<const Finding*> of(std::string_view check) const;
};

Report diagnose(const Options& options);
std::string to_text(const Report& report);
std::string to_json(const Report& report);

}  // namespace kvroute::doctor
