// File: discovery/internal/kube_http.h
//
// A blocking HTTP/1.1 client for the Kubernetes API server: one GET per connection (a watch keeps
// its connection for the stream), bearer-token auth, TLS through OpenSSL with the cluster's CA and
// hostname (or IP) verification, optional client certificates. Bodies: Content-Length, chunked,
// or to end of stream; a watch reads its chunked body piece by piece. Discovery runs on threads of
// its own, so blocking sockets with timeouts keep this small; close() from another thread cuts a
// blocked read short.
//
// Also where the API server is: in-cluster (KUBERNETES_SERVICE_HOST/PORT and the service-account
// token, CA and namespace files) or a kubeconfig file (current context).
//
// Thread-safety: a Connection is used by one thread; close() may come from any other.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/result.h"

namespace kvroute::discovery::internal {

struct ApiServer {
  bool tls = true;
  std::string host;
  std::uint16_t port = 443;
  std::string token;       // bearer token ("" none)
  std::string token_file;  // re-read at every connection (projected tokens rotate)
  std::string ca_pem;      // trusted CAs (PEM); "" with tls: the system's default paths
  bool insecure = false;   // insecure-skip-tls-verify
  std::string client_cert_pem, client_key_pem;
  std::string default_namespace;  // the pod's, or the kubeconfig context's
};

// `url_override` ("" none) replaces the server's URL; `kubeconfig` ("" none) is read when given,
// else the in-cluster environment. Errors name what is missing.
Result<ApiServer> locate_api_server(const std::string& kubeconfig, const std::string& url_override);
// The in-cluster service-account directory (tests point it elsewhere).
inline constexpr const char* kServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount";

class Connection {
 public:
  // Connects (TCP, then TLS) and sends GET `target`. `io_timeout` bounds connect, each write and
  // each read's wait for data.
  static Result<std::unique_ptr<Connection>> get(const ApiServer& server, std::string_view target,
                                                 std::chrono::milliseconds io_timeout);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  int status() const { return status_; }
  // The whole body (at most `max` bytes).
  Result<std::string> read_body(std::size_t max);
  // The next piece of the body appended to `out`; false at its end.
  Result<bool> read_some(std::string& out);
  // Cuts the connection: a blocked read returns an error. Safe from any thread.
  void close();

 private:
  Connection() = default;
  Result<std::size_t> raw_read(char* buf, std::size_t n);  // 0: end of stream
  Status raw_write(std::string_view data);
  Result<bool> fill();  // more raw bytes into in_; false at end of stream
  Status read_head();

  struct Tls;
  std::unique_ptr<Tls> tls_;
  std::atomic<int> fd_{-1};
  int status_ = 0;
  bool chunked_ = false;
  std::int64_t remaining_ = -1;  // Content-Length left, or the current chunk's; -1: to the end
  bool done_ = false;
  std::string in_;  // raw bytes read, not yet consumed
};

}  // namespace kvroute::discovery::internal
