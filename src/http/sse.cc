#include "http/sse.h"

#include <cstring>

namespace kvroute::http {

namespace {
// The next event end at or after `from`: {start of its blank line's terminators, just past them}.
// A blank line is a line terminator (LF, CRLF or CR) right after another one. {npos, npos}: none.
struct EventEnd {
  std::size_t at;
  std::size_t next;
};
EventEnd next_event_end(std::string_view s, std::size_t from) {
  constexpr auto npos = std::string_view::npos;
  for (std::size_t i = from; i < s.size(); ++i) {
    const char c = s[i];
    if (c != '\n' && c != '\r') {
      // Skip to the next terminator quickly.
      const void* nl = std::memchr(s.data() + i, '\n', s.size() - i);
      const void* cr = std::memchr(s.data() + i, '\r', s.size() - i);
      if (!nl && !cr) break;
      const char* p = !nl   ? static_cast<const char*>(cr)
                      : !cr ? static_cast<const char*>(nl)
                            : std::min(static_cast<const char*>(nl), static_cast<const char*>(cr));
      i = static_cast<std::size_t>(p - s.data()) - 1;
      continue;
    }
    // One terminator at i: LF, CRLF, or CR (a CR at the very end may still become a CRLF).
    std::size_t j = i + 1;
    if (c == '\r') {
      if (j == s.size()) break;
      if (s[j] == '\n') ++j;
    }
    // A second terminator right after it ends the event.
    if (j < s.size() && (s[j] == '\n' || s[j] == '\r')) {
      // The blank line is complete at its first byte; a CR's LF is taken along when it is here
      // (when it comes later, relay() passes it on as the tail of this boundary).
      std::size_t k = j + 1;
      if (s[j] == '\r' && k < s.size() && s[k] == '\n') ++k;
      return {i, k};
    }
    i = j - 1;
  }
  return {npos, npos};
}
}  // namespace

std::size_t sse_whole_events_end(std::string_view s) {
  std::size_t end = 0;
  for (EventEnd e = next_event_end(s, 0); e.at != std::string_view::npos;
       e = next_event_end(s, e.next)) {
    end = e.next;
  }
  return end;
}

void SseSplitter::feed(std::string_view bytes,
                       const std::function<void(std::string_view)>& on_event) {
  pending_.append(bytes);
  std::size_t start = 0;
  for (EventEnd e = next_event_end(pending_, 0); e.at != std::string_view::npos;
       e = next_event_end(pending_, start)) {
    std::string_view event(pending_.data() + start, e.at - start);
    std::string data;
    bool has_data = false;
    while (!event.empty()) {
      auto eol = event.find_first_of("\r\n");
      std::string_view line = event.substr(0, eol);
      if (line.starts_with("data:")) {
        line.remove_prefix(5);
        if (line.starts_with(' ')) line.remove_prefix(1);
        if (has_data) data += '\n';
        data.append(line);
        has_data = true;
      }
      if (eol == std::string_view::npos) break;
      if (event[eol] == '\r' && eol + 1 < event.size() && event[eol + 1] == '\n') ++eol;
      event.remove_prefix(eol + 1);
    }
    if (has_data) {
      ++events_;
      on_event(data);
    }
    start = e.next;
  }
  pending_.erase(0, start);
}

std::string_view SseSplitter::relay(std::string_view bytes, std::size_t max_pending) {
  const bool lf_of_last_cr = after_cr_ && pending_.empty() && bytes.starts_with('\n');
  after_cr_ = false;
  std::string_view out;
  if (pending_.empty()) {
    const std::size_t skip = lf_of_last_cr ? 1 : 0;
    const std::size_t cut = skip + sse_whole_events_end(bytes.substr(skip));
    if (cut == bytes.size()) {
      out = bytes;  // the usual case: whole events per read
    } else if (bytes.size() - cut >= max_pending) {
      out_.assign(bytes);
      out = out_;
    } else {
      pending_.assign(bytes.substr(cut));
      out = bytes.substr(0, cut);
    }
  } else {
    pending_.append(bytes);
    std::size_t cut = sse_whole_events_end(pending_);
    if (cut == 0 && pending_.size() < max_pending) return {};
    if (cut == 0) cut = pending_.size();
    out_.assign(pending_, 0, cut);
    pending_.erase(0, cut);
    out = out_;
  }
  after_cr_ = pending_.empty() && out.ends_with('\r');
  return out;
}

std::string SseSplitter::take_pending() {
  after_cr_ = false;
  std::string rest;
  rest.swap(pending_);
  return rest;
}

std::string sse_event(std::string_view data) {
  std::string out;
  out.reserve(data.size() + 8);
  out += "data: ";
  out += data;
  out += "\n\n";
  return out;
}

}  // namespace kvroute::http
