// File: http/sse.h
//
// Incremental Server-Sent Events framing. The proxy relays SSE bytes untouched; it only needs to
// know where events end (to count them, time the first one, and end a broken stream on an event
// boundary). The load generator uses the same splitter to read `data:` payloads.
// Not synchronized: one per stream.
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace kvroute::http {

class SseSplitter {
 public:
  // Feeds raw bytes; calls on_event(data) for each complete event with its `data:` lines joined
  // by '\n' (events without data are skipped, as a browser does).
  void feed(std::string_view bytes, const std::function<void(std::string_view data)>& on_event);
  // True when every byte fed so far belongs to complete events.
  bool at_boundary() const { return pending_.empty(); }
  std::size_t events() const { return events_; }

 private:
  std::string pending_;
  std::size_t events_ = 0;
};

// Formats one SSE event carrying `data` ("data: <data>\n\n").
std::string sse_event(std::string_view data);

}  // namespace kvroute::http
