// File: testing/tls_client.h
//
// Test support: a blocking TLS client on OpenSSL, apart from the router's own client, for tests
// that must see the handshake's facts (the certificate presented, ALPN) and keep one TLS
// connection open across a certificate rotation. Every read and write is bounded by a timeout.
//
// Thread-safety: one TlsClient per thread.
#pragma once

#include <openssl/ssl.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "testing/raw_http.h"

namespace kvroute::testing {

struct TlsClientOptions {
  std::string ca_file;                    // verify the server against it ("" : no verification)
  std::string cert_file, key_file;        // client certificate (mTLS)
  std::string verify_host = "127.0.0.1";  // the name or address the certificate must carry
  std::string alpn = "http/1.1";          // offered protocols, comma-separated ("" : none)
  int max_version = 0;                    // e.g. TLS1_2_VERSION (0: the library's newest)
  int min_version = 0;                    // e.g. TLS1_1_VERSION (0: the library's default)
};

class TlsClient {
 public:
  TlsClient() = default;
  ~TlsClient();
  TlsClient(const TlsClient&) = delete;
  TlsClient& operator=(const TlsClient&) = delete;

  // Connects to 127.0.0.1:port and completes the handshake. False: `error()` says why.
  bool connect(std::uint16_t port, const TlsClientOptions& opts);
  // Sends a request and reads one response (Content-Length framed, or until the peer closes).
  RawResponse request(std::string_view raw);
  // Sends `raw` without waiting for an answer.
  bool send(std::string_view raw);
  // Leaves as TLS clients do: close_notify, then the socket closes (a FIN).
  void close_notify();
  const std::string& error() const { return error_; }
  // The common name of the certificate the server presented.
  std::string peer_common_name() const;
  std::string alpn() const;
  // "TLSv1.3", "TLSv1.2"
  std::string version() const;

 private:
  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  std::string error_;
};

}  // namespace kvroute::testing
