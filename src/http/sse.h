// File: http/sse.h
//
// Incremental Server-Sent Events framing, the one splitter for every SSE consumer. The proxy relays
// SSE bytes untouched but only in whole events (relay()): a stream that breaks then ends on an
// event boundary, followed by an error event. The load generator reads `data:` payloads (feed()).
// An event ends at a blank line; lines end in LF, CRLF or CR (the SSE grammar), so "\n\n",
// "\r\n\r\n" and "\r\r" all end one (sse-starlette's default is CRLF).
//
// Thread-safety: an SseSplitter is not synchronized: one per stream, used by the coroutine that
// reads that stream. The free functions are pure; safe from any thread.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace kvroute::http {

class SseSplitter {
 public:
  // Feeds raw bytes; calls on_event(data) for each complete event with its `data:` lines joined
  // by '\n' (events without data are skipped, as a browser does).
  void feed(std::string_view bytes, const std::function<void(std::string_view data)>& on_event);

  // Feeds raw bytes and returns those that complete events, untouched: the input itself when it
  // ends on a boundary and nothing was pending (no copy), else whole events from an internal
  // buffer. The rest waits for the next call; a pending tail of `max_pending` bytes or more is
  // returned as is (bounded memory). The view is valid until the next call.
  std::string_view relay(std::string_view bytes, std::size_t max_pending = 1u << 20);
  // The bytes held back (an incomplete event at the end of the stream); empties the splitter.
  std::string take_pending();

  // True when every byte fed so far belongs to complete events.
  bool at_boundary() const { return pending_.empty(); }
  std::size_t events() const { return events_; }

 private:
  std::string pending_;
  std::string out_;  // relay()'s returned bytes when they span calls
  std::size_t events_ = 0;
  bool after_cr_ = false;  // the last relay() ended on a CR, whose LF may come next
};

// The end of the last complete event in `s` (just past its blank line); 0 when there is none.
std::size_t sse_whole_events_end(std::string_view s);

// Formats one SSE event carrying `data` ("data: <data>\n\n").
std::string sse_event(std::string_view data);

}  // namespace kvroute::http
