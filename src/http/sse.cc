#include "http/sse.h"

namespace kvroute::http {

void SseSplitter::feed(std::string_view bytes,
                       const std::function<void(std::string_view)>& on_event) {
  pending_.append(bytes);
  std::size_t start = 0;
  for (;;) {
    // An event ends at a blank line: "\n\n" or "\r\n\r\n".
    std::size_t end = pending_.find("\n\n", start);
    std::size_t crlf = pending_.find("\r\n\r\n", start);
    std::size_t sep_len = 2;
    if (crlf != std::string::npos && (end == std::string::npos || crlf < end)) {
      end = crlf;
      sep_len = 4;
    }
    if (end == std::string::npos) break;
    std::string_view event(pending_.data() + start, end - start);
    std::string data;
    bool has_data = false;
    while (!event.empty()) {
      auto nl = event.find('\n');
      std::string_view line = event.substr(0, nl);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.starts_with("data:")) {
        line.remove_prefix(5);
        if (line.starts_with(' ')) line.remove_prefix(1);
        if (has_data) data += '\n';
        data.append(line);
        has_data = true;
      }
      if (nl == std::string_view::npos) break;
      event.remove_prefix(nl + 1);
    }
    if (has_data) {
      ++events_;
      on_event(data);
    }
    start = end + sep_len;
  }
  pending_.erase(0, start);
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
