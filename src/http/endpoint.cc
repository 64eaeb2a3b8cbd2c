#include "http/endpoint.h"

#include <fmt/format.h>

#include <charconv>

namespace kvroute::http {

Result<Endpoint> parse_http_url(std::string_view url) {
  std::string_view rest = url;
  Endpoint ep;
  if (rest.starts_with("https://")) {
    ep.tls = true;
    rest.remove_prefix(8);
  } else if (rest.starts_with("http://")) {
    rest.remove_prefix(7);
  } else if (const auto scheme = rest.find("://"); scheme != std::string_view::npos) {
    return fail(Error::invalid(fmt::format("'{}': the scheme must be http:// or https://", url)));
  }
  if (auto slash = rest.find('/'); slash != std::string_view::npos) {
    if (rest.substr(slash) != "/") {
      return fail(Error::invalid(fmt::format("'{}': a backend URL has no path", url)));
    }
    rest = rest.substr(0, slash);
  }
  std::string_view port_str;
  if (rest.starts_with('[')) {
    auto close = rest.find(']');
    if (close == std::string_view::npos)
      return fail(Error::invalid(fmt::format("'{}': bad IPv6 address", url)));
    ep.host = std::string(rest.substr(1, close - 1));
    rest.remove_prefix(close + 1);
    if (rest.starts_with(':')) port_str = rest.substr(1);
  } else {
    auto colon = rest.rfind(':');
    ep.host = std::string(rest.substr(0, colon));
    if (colon != std::string_view::npos) port_str = rest.substr(colon + 1);
  }
  if (ep.host.empty()) return fail(Error::invalid(fmt::format("'{}': missing host", url)));
  if (port_str.empty()) {
    ep.port = ep.tls ? 443 : 80;
  } else {
    unsigned p = 0;
    auto [ptr, ec] = std::from_chars(port_str.data(), port_str.data() + port_str.size(), p);
    if (ec != std::errc() || ptr != port_str.data() + port_str.size() || p == 0 || p > 65535) {
      return fail(Error::invalid(fmt::format("'{}': bad port", url)));
    }
    ep.port = static_cast<std::uint16_t>(p);
  }
  return ep;
}

}  // namespace kvroute::http
