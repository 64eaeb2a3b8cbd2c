#include "testing/raw_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace kvroute::testing {

namespace {
using Clock = std::chrono::steady_clock;

int connect_local(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

void send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
}

// Whether `raw` holds a complete response (by Content-Length or chunked terminator).
bool complete(const std::string& raw) {
  auto end = raw.find("\r\n\r\n");
  if (end == std::string::npos) return false;
  std::string head = raw.substr(0, end);
  for (auto& c : head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  auto cl = head.find("content-length:");
  if (cl != std::string::npos) {
    std::size_t len = std::strtoul(head.c_str() + cl + 15, nullptr, 10);
    return raw.size() >= end + 4 + len;
  }
  if (head.find("transfer-encoding: chunked") != std::string::npos) {
    return raw.size() >= 5 && raw.compare(raw.size() - 5, 5, "0\r\n\r\n") == 0;
  }
  return false;
}

std::string dechunk(std::string_view body) {
  std::string out;
  while (!body.empty()) {
    auto nl = body.find("\r\n");
    if (nl == std::string_view::npos) break;
    std::size_t len = std::strtoul(std::string(body.substr(0, nl)).c_str(), nullptr, 16);
    if (len == 0) break;
    out.append(body.substr(nl + 2, len));
    if (nl + 2 + len + 2 > body.size()) break;
    body.remove_prefix(nl + 2 + len + 2);
  }
  return out;
}
}  // namespace

RawResponse raw_request(std::uint16_t port, std::string_view req, std::chrono::milliseconds timeout,
                        bool half_close) {
  RawResponse r;
  int fd = connect_local(port);
  if (fd < 0) return r;
  send_all(fd, req);
  if (half_close) ::shutdown(fd, SHUT_WR);
  const auto deadline = Clock::now() + timeout;
  char buf[65536];
  while (Clock::now() < deadline && !complete(r.raw)) {
    pollfd p{fd, POLLIN, 0};
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (::poll(&p, 1, static_cast<int>(std::max<long>(left, 1))) <= 0) break;
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    r.raw.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  auto end = r.raw.find("\r\n\r\n");
  if (r.raw.starts_with("HTTP/1.1 ") && r.raw.size() > 12) r.status = std::atoi(r.raw.c_str() + 9);
  if (end != std::string::npos) {
    r.head = r.raw.substr(0, end);
    std::string lower = r.head;
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string_view rest = std::string_view(r.raw).substr(end + 4);
    r.body = lower.find("transfer-encoding: chunked") != std::string::npos ? dechunk(rest)
                                                                           : std::string(rest);
  }
  return r;
}

RawResponse post_json(std::uint16_t port, std::string_view path, std::string_view json,
                      std::string_view extra_headers) {
  std::string req = "POST " + std::string(path) +
                    " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n";
  req += extra_headers;
  req += "Content-Length: " + std::to_string(json.size()) + "\r\nConnection: close\r\n\r\n";
  req += json;
  return raw_request(port, req);
}

RawResponse get(std::uint16_t port, std::string_view path) {
  std::string req =
      "GET " + std::string(path) + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  return raw_request(port, req);
}

std::string send_then_disconnect(std::uint16_t port, std::string_view req, std::size_t min_bytes,
                                 std::chrono::milliseconds wait) {
  std::string got;
  int fd = connect_local(port);
  if (fd < 0) return got;
  send_all(fd, req);
  const auto deadline = Clock::now() + wait;
  char buf[4096];
  while (got.size() < min_bytes && Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 20) <= 0) continue;
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<std::size_t>(n));
  }
  linger l{1, 0};  // RST: an abrupt disconnect
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  ::close(fd);
  return got;
}

}  // namespace kvroute::testing
