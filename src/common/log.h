// File: common/log.h
//
// Logging through spdlog: one process-wide logger, level set at start-up from config or flags.
//
// Thread-safety: log from any thread: spdlog's default logger writes through a multi-threaded
// console sink, under the sink's mutex (one lock per line written). set_log_level() is safe from
// any thread too (spdlog's registry mutex; each logger's level is an atomic); kvroute calls it once
// at start-up.
#pragma once

#include <spdlog/spdlog.h>

#include <string_view>

namespace kvroute {

// Sets the global level from a name (trace, debug, info, warn, error, off). Returns false if
// unknown.
bool set_log_level(std::string_view level);

}  // namespace kvroute
