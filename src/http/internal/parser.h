// File: http/internal/parser.h
//
// The server's HTTP/1.1 request parser (RFC 9112), written for the proxy's hot path: the head is
// parsed in place from the bytes received so far into a Request (one copy per field, no
// intermediate header container), and the body framing (Content-Length or chunked) is decoded
// without a composed read operation per layer. Strict where laxness enables request smuggling:
// CRLF line endings only, no whitespace before a header's colon, no obsolete line folding, one
// Content-Length value, never both Content-Length and Transfer-Encoding, and "chunked" as the only
// transfer coding. Never throws.
//
// Thread-safety: the parse functions are pure (they write only the objects passed in); safe from
// any thread. A ChunkedDecoder holds one body's state: not synchronized, one per exchange.
//
//   BodyFraming framing;
//   auto r = parse_request_head(bytes, 64 * 1024, req, framing);
//   if (r.status == ParseStatus::kDone) { /* head is bytes[0, r.consumed) */ }
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "http/message.h"

namespace kvroute::http {

enum class ParseStatus {
  kIncomplete,       // more bytes needed
  kDone,             // parsed; `consumed` bytes used
  kBad,              // malformed: 400
  kHeadersTooLarge,  // the head exceeds the limit: 431
  kBodyTooLarge,     // the body exceeds the limit: 413
  kNotImplemented,   // a transfer coding other than chunked: 501
};

struct ParseResult {
  ParseStatus status = ParseStatus::kIncomplete;
  std::size_t consumed = 0;
  std::string_view error;  // what was wrong (static text), for kBad and kNotImplemented
};

struct BodyFraming {
  bool chunked = false;
  std::uint64_t length = 0;  // Content-Length (0 when absent and not chunked)
  bool until_close = false;  // responses only: no length and not chunked, the body ends at EOF
  bool expect_continue = false;
};

// Parses a request head from the start of `data` into `out` (method, target, headers, keep_alive)
// and `framing`. kIncomplete while no complete head is in `data` and `data` is within
// `max_header_bytes`; kHeadersTooLarge past it; kBad as soon as a bare LF arrives (a client that
// ends its lines with LF alone gets a 400, not a wait for a blank line it never sends). `searched`:
// how many leading bytes of `data` an earlier call already searched for the end of the head (pass
// the size it saw), so that a head arriving a byte at a time costs linear, not quadratic, time.
ParseResult parse_request_head(std::string_view data, std::size_t max_header_bytes, Request& out,
                               BodyFraming& framing, std::size_t searched = 0);

struct ResponseHead {
  int status = 0;
  Headers headers;
  bool keep_alive = true;
};

// Parses a response head from the start of `data`, like parse_request_head. 1xx, 204 and 304
// responses have no body; a response without Content-Length or chunked coding is read until the
// connection closes (and the connection is not kept alive).
ParseResult parse_response_head(std::string_view data, std::size_t max_header_bytes,
                                ResponseHead& out, BodyFraming& framing, std::size_t searched = 0);

// Decodes a chunked body incrementally: feed() consumes what it can from `in` (a partial line
// stays unconsumed until more bytes arrive) and appends chunk data to `body`. kDone after the last
// chunk and its trailers (which are dropped); kBodyTooLarge when `body` would exceed `limit`; kBad
// also when size lines and trailers add up to more than the data plus 64 KiB.
class ChunkedDecoder {
 public:
  ParseResult feed(std::string_view in, std::string& body, std::size_t limit);

 private:
  enum class State { kSize, kData, kDataEnd, kTrailer, kDone };
  State state_ = State::kSize;
  std::uint64_t remaining_ = 0;
  std::uint64_t data_bytes_ = 0;     // chunk data decoded so far
  std::uint64_t framing_bytes_ = 0;  // size lines and trailers so far
};

namespace internal {
// Header fields are parsed in one pass, falling back to a line-by-line parse that names the fault
// when the pass meets anything unexpected. For tests and the fuzzer: whether both parses of a field
// block (every line ending with CRLF) give the same result.
bool header_parsers_agree(std::string_view fields);
}  // namespace internal

}  // namespace kvroute::http
