#include "http/message.h"

#include <fmt/format.h>

#include <charconv>

namespace kvroute::http {

namespace internal {
bool iequals_out_of_line(const char* x, const char* y, std::size_t n) {
  return iequals_n(x, y, n, [](std::uint64_t v) { return lower8(v); });
}
}  // namespace internal

bool header_list_has(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    const auto comma = value.find(',');
    if (iequals(trim_ows(value.substr(0, comma)), token)) return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

void HeadBuffer::append_decimal(std::uint64_t v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  append(buf, static_cast<std::size_t>(r.ptr - buf));
}

Headers::Headers(std::initializer_list<value_type> fields) {
  for (const auto& [name, value] : fields) emplace_back(name, value);
}

void Headers::emplace_back(std::string_view name, std::string_view value) {
  const std::size_t name_off = data_.size();
  data_.append(name);
  const std::size_t value_off = data_.size();
  data_.append(value);
  add_parsed(name_off, name.size(), value_off, value.size());
}

std::string_view find_header(const Headers& headers, std::string_view name) {
  for (const auto& [k, v] : headers) {
    if (iequals(k, name)) return v;
  }
  return {};
}

std::string_view Request::path() const {
  std::string_view t = target;
  auto q = t.find('?');
  return q == std::string_view::npos ? t : t.substr(0, q);
}

std::string_view reason_phrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 204:
      return "No Content";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 411:
      return "Length Required";
    case 413:
      return "Payload Too Large";
    case 415:
      return "Unsupported Media Type";
    case 422:
      return "Unprocessable Entity";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 499:
      return "Client Closed Request";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "Unknown";
  }
}

}  // namespace kvroute::http
