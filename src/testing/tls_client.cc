#include "testing/tls_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdlib>

namespace kvroute::testing {

namespace {
std::string ssl_errors() {
  std::string out;
  while (const unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    out += out.empty() ? "" : "; ";
    out += buf;
  }
  return out;
}
}  // namespace

TlsClient::~TlsClient() {
  if (ssl_ != nullptr) SSL_free(ssl_);
  if (ctx_ != nullptr) SSL_CTX_free(ctx_);
  if (fd_ >= 0) ::close(fd_);
}

bool TlsClient::connect(std::uint16_t port, const TlsClientOptions& opts) {
  ERR_clear_error();
  ctx_ = SSL_CTX_new(TLS_client_method());
  if (opts.max_version != 0) SSL_CTX_set_max_proto_version(ctx_, opts.max_version);
  if (opts.min_version != 0) {
    SSL_CTX_set_min_proto_version(ctx_, opts.min_version);
    SSL_CTX_set_security_level(ctx_, 0);  // old versions need the old ciphers
  }
  if (!opts.ca_file.empty()) {
    if (SSL_CTX_load_verify_locations(ctx_, opts.ca_file.c_str(), nullptr) != 1) {
      error_ = "CA: " + ssl_errors();
      return false;
    }
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
  }
  if (!opts.cert_file.empty() &&
      (SSL_CTX_use_certificate_chain_file(ctx_, opts.cert_file.c_str()) != 1 ||
       SSL_CTX_use_PrivateKey_file(ctx_, opts.key_file.c_str(), SSL_FILETYPE_PEM) != 1)) {
    error_ = "client certificate: " + ssl_errors();
    return false;
  }
  if (!opts.alpn.empty()) {
    std::string wire;
    std::string_view rest = opts.alpn;
    while (!rest.empty()) {
      const auto comma = rest.find(',');
      const std::string_view p = rest.substr(0, comma);
      wire += static_cast<char>(p.size());
      wire += p;
      rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    }
    SSL_CTX_set_alpn_protos(ctx_, reinterpret_cast<const unsigned char*>(wire.data()),
                            static_cast<unsigned>(wire.size()));
  }
  fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  timeval tv{10, 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    error_ = "connect failed";
    return false;
  }
  ssl_ = SSL_new(ctx_);
  SSL_set_fd(ssl_, fd_);
  if (!opts.ca_file.empty())
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), opts.verify_host.c_str());
  if (SSL_connect(ssl_) != 1) {
    const long v = SSL_get_verify_result(ssl_);
    error_ = "handshake: " + ssl_errors();
    if (v != X509_V_OK) error_ += std::string(" (") + X509_verify_cert_error_string(v) + ")";
    return false;
  }
  return true;
}

RawResponse TlsClient::request(std::string_view raw) {
  RawResponse r;
  if (SSL_write(ssl_, raw.data(), static_cast<int>(raw.size())) <= 0) return r;
  std::size_t want = std::string::npos;
  for (;;) {
    if (want != std::string::npos && r.raw.size() >= want) break;
    char buf[16384];
    const int n = SSL_read(ssl_, buf, sizeof buf);
    if (n <= 0) break;
    r.raw.append(buf, static_cast<std::size_t>(n));
    const auto end = r.raw.find("\r\n\r\n");
    if (want == std::string::npos && end != std::string::npos) {
      std::size_t len = 0;
      const auto cl = r.raw.find("Content-Length: ");
      if (cl != std::string::npos && cl < end)
        len = std::strtoul(r.raw.c_str() + cl + 16, nullptr, 10);
      want = end + 4 + len;
    }
  }
  const auto end = r.raw.find("\r\n\r\n");
  if (r.raw.starts_with("HTTP/1.1 ") && end != std::string::npos) {
    r.status = std::atoi(r.raw.c_str() + 9);
    r.head = r.raw.substr(0, end);
    r.body = r.raw.substr(end + 4);
  }
  return r;
}

bool TlsClient::send(std::string_view raw) {
  return SSL_write(ssl_, raw.data(), static_cast<int>(raw.size())) > 0;
}

void TlsClient::close_notify() {
  // Unread bytes (the server's session tickets) would make the kernel reset the connection instead
  // of closing it: read them off first, so that the server sees close_notify and then a FIN.
  char buf[4096];
  while (::recv(fd_, buf, sizeof buf, MSG_DONTWAIT) > 0) {
  }
  SSL_shutdown(ssl_);
  ::close(fd_);
  fd_ = -1;
}

std::string TlsClient::peer_common_name() const {
  X509* cert = SSL_get1_peer_certificate(ssl_);
  if (cert == nullptr) return {};
  char cn[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
  X509_free(cert);
  return cn;
}

std::string TlsClient::version() const { return SSL_get_version(ssl_); }

std::string TlsClient::alpn() const {
  const unsigned char* p = nullptr;
  unsigned len = 0;
  SSL_get0_alpn_selected(ssl_, &p, &len);
  return std::string(reinterpret_cast<const char*>(p), len);
}

}  // namespace kvroute::testing
