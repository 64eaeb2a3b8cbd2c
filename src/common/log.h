// File: common/log.h
//
// Logging through spdlog: one process-wide logger, level set at start-up from config or flags.
// Thread-safe (spdlog's multi-threaded sinks).
#pragma once

#include <spdlog/spdlog.h>

#include <string_view>

namespace kvroute {

// Sets the global level from a name (trace, debug, info, warn, error, off). Returns false if unknown.
bool set_log_level(std::string_view level);

}  // namespace kvroute
