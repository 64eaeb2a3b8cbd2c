// File: common/json.h
//
// JSON string escaping for the few places that write JSON by hand (error bodies, SSE chunks,
// template contexts). Control characters become \n, \r, \t or \u00XX; everything else, UTF-8
// included, is copied.
//
// Thread-safety: pure functions (constant tables only); safe from any thread.
#pragma once

#include <string>
#include <string_view>

namespace kvroute {

// Appends `s` escaped for use between JSON double quotes. Bytes >= 0x80 are copied as they are:
// `s` must be valid UTF-8 for the result to be valid JSON.
void append_json_escaped(std::string& out, std::string_view s);

// As append_json_escaped, but each ill-formed UTF-8 sequence in `s` (a stray continuation or
// invalid byte, an overlong form, an encoded surrogate, a code point past U+10FFFF, a truncated
// sequence) becomes \ufffd, one per maximal subpart (Unicode section 3.9, as Python's
// errors="replace"); well-formed sequences are copied. The result is valid UTF-8 whatever `s`
// holds: for text that quotes a client's bytes (error messages). Runs of plain ASCII are copied
// whole.
void append_json_escaped_valid_utf8(std::string& out, std::string_view s);

}  // namespace kvroute
