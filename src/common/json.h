// File: common/json.h
//
// JSON string escaping for the few places that write JSON by hand (error bodies, SSE chunks,
// template contexts). Control characters become \n, \r, \t or \u00XX; everything else, UTF-8
// included, is copied. Thread-safe: pure function.
#pragma once

#include <string>
#include <string_view>

namespace kvroute {

// Appends `s` escaped for use between JSON double quotes.
void append_json_escaped(std::string& out, std::string_view s);

}  // namespace kvroute
