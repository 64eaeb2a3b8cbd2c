#include "testing/fake_kube_api.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace kvroute::testing {

namespace {

void send_all(int fd, const std::string& s) { (void)::send(fd, s.data(), s.size(), MSG_NOSIGNAL); }

std::string chunk(const std::string& line) {
  char size[32];
  std::snprintf(size, sizeof size, "%zx\r\n", line.size() + 1);
  return size + line + "\n\r\n";
}

}  // namespace

FakeKubeApi::FakeKubeApi(std::string pool_json) : pool_json_(std::move(pool_json)) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  (void)::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
  (void)::listen(listen_fd_, 64);
  socklen_t len = sizeof a;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
  port_ = ntohs(a.sin_port);
  accept_ = std::thread([this] { serve(); });
}

FakeKubeApi::~FakeKubeApi() {
  stopping_ = true;
  ::shutdown(listen_fd_, SHUT_RDWR);
  accept_.join();
  std::vector<std::thread> handlers;
  {
    MutexLock lk(mu_);
    for (int c : conns_) ::shutdown(c, SHUT_RDWR);
    handlers.swap(handlers_);
  }
  for (auto& t : handlers) t.join();
  MutexLock lk(mu_);
  for (int c : conns_) ::close(c);
  ::close(listen_fd_);
}

std::string FakeKubeApi::url() const { return "http://127.0.0.1:" + std::to_string(port_); }

std::string FakeKubeApi::pod_json(const std::string& name) const {
  const auto& p = pods_.at(name);
  return R"({"kind":"Pod","metadata":{"name":")" + name + R"(","resourceVersion":")" +
         std::to_string(p.rv) + R"("},"status":{"phase":"Running","podIP":")" + p.ip +
         R"(","conditions":[{"type":"Ready","status":")" + (p.ready ? "True" : "False") +
         R"("}]}})";
}

void FakeKubeApi::emit(const std::string& type, const std::string& object) {
  const std::string line = R"({"type":")" + type + R"(","object":)" + object + "}";
  log_.emplace_back(rv_, line);
  for (int fd : pod_watches_) send_all(fd, chunk(line));
}

void FakeKubeApi::set_pod(const std::string& name, const std::string& ip, bool ready) {
  MutexLock lk(mu_);
  const bool known = pods_.contains(name);
  pods_[name] = {ip, ready, ++rv_};
  emit(known ? "MODIFIED" : "ADDED", pod_json(name));
}

void FakeKubeApi::remove_pod(const std::string& name) {
  MutexLock lk(mu_);
  if (!pods_.contains(name)) return;
  pods_[name].rv = ++rv_;
  const std::string obj = pod_json(name);
  pods_.erase(name);
  emit("DELETED", obj);
}

void FakeKubeApi::drop_watches() {
  MutexLock lk(mu_);
  for (int fd : pod_watches_) ::shutdown(fd, SHUT_RDWR);
  pod_watches_.clear();
}

void FakeKubeApi::compact() {
  MutexLock lk(mu_);
  rv_ += 5;
  compacted_ = rv_;
}

void FakeKubeApi::serve() {
  for (;;) {
    const int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0 || stopping_) {
      if (c >= 0) ::close(c);
      return;
    }
    MutexLock lk(mu_);
    conns_.push_back(c);
    handlers_.emplace_back([this, c] { handle(c); });
  }
}

void FakeKubeApi::handle(int c) {
  std::string req;
  char buf[4096];
  while (req.find("\r\n\r\n") == std::string::npos) {
    const auto n = ::recv(c, buf, sizeof buf, 0);
    if (n <= 0) return;
    req.append(buf, static_cast<std::size_t>(n));
  }
  const std::string target = req.substr(4, req.find(' ', 4) - 4);
  const bool watch = target.find("watch=1") != std::string::npos;
  const bool pods = target.find("/pods") != std::string::npos;
  const std::string chunked_head =
      "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
  if (watch) {
    ++watches_;
    std::uint64_t from = 0;
    if (auto at = target.find("resourceVersion="); at != std::string::npos) {
      from = std::strtoull(target.c_str() + at + 16, nullptr, 10);
    }
    {
      MutexLock lk(mu_);
      send_all(c, chunked_head);
      if (pods && from < compacted_) {
        send_all(c, chunk(R"({"type":"ERROR","object":{"kind":"Status","status":"Failure",)"
                          R"("reason":"Expired","code":410}})"));
        send_all(c, "0\r\n\r\n");
        return;
      }
      if (pods) {
        for (const auto& [rv, line] : log_) {
          if (rv > from) send_all(c, chunk(line));
        }
        pod_watches_.push_back(c);
      }
    }
    while (::recv(c, buf, sizeof buf, 0) > 0) {
    }  // open until the client, drop_watches() or the destructor ends it
    MutexLock lk(mu_);
    std::erase(pod_watches_, c);
    return;
  }
  std::string body;
  {
    MutexLock lk(mu_);
    if (pods && target.find("/pods?") != std::string::npos) {
      ++lists_;
      body = R"({"kind":"PodList","metadata":{"resourceVersion":")" + std::to_string(rv_) +
             R"("},"items":[)";
      bool first = true;
      for (const auto& [name, _] : pods_) {
        body += (first ? "" : ",") + pod_json(name);
        first = false;
      }
      body += "]}";
    } else if (target.find("/inferencepools/") != std::string::npos) {
      body = pool_json_;
    }
  }
  send_all(c, (body.empty() ? std::string("HTTP/1.1 404 Not Found\r\n") : "HTTP/1.1 200 OK\r\n") +
                  "content-type: application/json\r\ncontent-length: " +
                  std::to_string(body.size()) + "\r\n\r\n" + body);
}

}  // namespace kvroute::testing
