#include "discovery/internal/kube_http.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace kvroute::discovery::internal {

namespace {

Result<std::string> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return fail(Error::not_found(fmt::format("cannot read {}", path)));
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

Result<std::string> base64_decode(std::string_view in, std::string_view what) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
  };
  std::string out;
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=' || c == '\n' || c == '\r' || c == ' ') continue;
    const int v = val(c);
    if (v < 0) return fail(Error::invalid(fmt::format("kubeconfig: {} is not base64", what)));
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

struct Url {
  bool tls = true;
  std::string host;
  std::uint16_t port = 443;
};

Result<Url> parse_server_url(std::string_view url) {
  Url u;
  if (url.starts_with("https://")) {
    url.remove_prefix(8);
  } else if (url.starts_with("http://")) {
    url.remove_prefix(7);
    u.tls = false;
    u.port = 80;
  } else {
    return fail(Error::invalid(fmt::format("API server URL '{}' is not http(s)://", url)));
  }
  if (auto slash = url.find('/'); slash != std::string_view::npos) url = url.substr(0, slash);
  std::string_view host = url;
  if (url.starts_with('[')) {
    const auto close = url.find(']');
    if (close == std::string_view::npos) return fail(Error::invalid("API server URL: bad IPv6"));
    host = url.substr(1, close - 1);
    url.remove_prefix(close + 1);
    if (url.starts_with(':')) {
      u.port = static_cast<std::uint16_t>(std::atoi(std::string(url.substr(1)).c_str()));
    }
  } else if (auto colon = url.rfind(':'); colon != std::string_view::npos) {
    host = url.substr(0, colon);
    const int p = std::atoi(std::string(url.substr(colon + 1)).c_str());
    if (p < 1 || p > 65535) return fail(Error::invalid("API server URL: bad port"));
    u.port = static_cast<std::uint16_t>(p);
  }
  if (host.empty()) return fail(Error::invalid("API server URL has no host"));
  u.host = std::string(host);
  return u;
}

// Reads a kubeconfig field that is either inline base64 (`<key>-data`) or a file path (`<key>`),
// relative paths from the kubeconfig's directory.
Result<std::string> data_or_file(const YAML::Node& n, const std::string& key,
                                 const std::string& dir) {
  if (auto d = n[key + "-data"]) return base64_decode(d.as<std::string>(), key + "-data");
  if (auto f = n[key]) {
    std::string path = f.as<std::string>();
    if (!path.empty() && path[0] != '/') path = dir + "/" + path;
    return read_file(path);
  }
  return std::string();
}

Result<ApiServer> from_kubeconfig(const std::string& path) {
  KVROUTE_TRY(auto text, read_file(path));
  ApiServer s;
  try {
    YAML::Node root = YAML::Load(text);
    const std::string dir =
        path.find('/') == std::string::npos ? std::string(".") : path.substr(0, path.rfind('/'));
    const std::string current =
        root["current-context"] ? root["current-context"].as<std::string>() : std::string();
    auto find = [&](const char* list, const std::string& name, const char* inner) -> YAML::Node {
      if (auto l = root[list]) {
        for (auto item : l) {
          if (item["name"] && item["name"].as<std::string>() == name) return item[inner];
        }
        if (name.empty() && l.size() == 1) return l[0][inner];
      }
      return YAML::Node();
    };
    YAML::Node ctx = find("contexts", current, "context");
    std::string cluster_name, user_name;
    if (ctx) {
      if (ctx["cluster"]) cluster_name = ctx["cluster"].as<std::string>();
      if (ctx["user"]) user_name = ctx["user"].as<std::string>();
      if (ctx["namespace"]) s.default_namespace = ctx["namespace"].as<std::string>();
    }
    YAML::Node cluster = find("clusters", cluster_name, "cluster");
    if (!cluster || !cluster["server"]) {
      return fail(
          Error::invalid(fmt::format("{}: no cluster server for context '{}'", path, current)));
    }
    KVROUTE_TRY(auto url, parse_server_url(cluster["server"].as<std::string>()));
    s.tls = url.tls;
    s.host = url.host;
    s.port = url.port;
    KVROUTE_TRY(s.ca_pem, data_or_file(cluster, "certificate-authority", dir));
    if (auto i = cluster["insecure-skip-tls-verify"]) s.insecure = i.as<bool>();
    YAML::Node user = find("users", user_name, "user");
    if (user) {
      if (user["token"]) s.token = user["token"].as<std::string>();
      if (user["tokenFile"]) s.token_file = user["tokenFile"].as<std::string>();
      KVROUTE_TRY(s.client_cert_pem, data_or_file(user, "client-certificate", dir));
      KVROUTE_TRY(s.client_key_pem, data_or_file(user, "client-key", dir));
    }
  } catch (const YAML::Exception& e) {
    return fail(Error::invalid(
        fmt::format("{}:{}:{}: {}", path, e.mark.line + 1, e.mark.column + 1, e.msg)));
  }
  return s;
}

std::string openssl_error() {
  const unsigned long e = ERR_get_error();
  if (e == 0) return "unknown TLS error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}

}  // namespace

Result<ApiServer> locate_api_server(const std::string& kubeconfig,
                                    const std::string& url_override) {
  ApiServer s;
  if (!kubeconfig.empty()) {
    KVROUTE_TRY(s, from_kubeconfig(kubeconfig));
  } else {
    const std::string dir = std::getenv("KVROUTE_SERVICE_ACCOUNT_DIR")
                                ? std::getenv("KVROUTE_SERVICE_ACCOUNT_DIR")
                                : kServiceAccountDir;
    const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
    const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
    if (url_override.empty() && (!host || !port)) {
      return fail(Error::invalid(
          "Kubernetes discovery: not in a cluster (KUBERNETES_SERVICE_HOST unset): give "
          "--kubeconfig or --kube-api-server"));
    }
    if (host && port) {
      s.host = host;
      s.port = static_cast<std::uint16_t>(std::atoi(port));
    }
    if (auto t = read_file(dir + "/token")) s.token_file = dir + "/token";
    if (auto ca = read_file(dir + "/ca.crt")) s.ca_pem = *ca;
    if (auto ns = read_file(dir + "/namespace")) s.default_namespace = trim(*ns);
  }
  if (!url_override.empty()) {
    KVROUTE_TRY(auto url, parse_server_url(url_override));
    s.tls = url.tls;
    s.host = url.host;
    s.port = url.port;
  }
  return s;
}

struct Connection::Tls {
  SSL_CTX* ctx = nullptr;
  SSL* ssl = nullptr;
  ~Tls() {
    if (ssl) SSL_free(ssl);
    if (ctx) SSL_CTX_free(ctx);
  }
};

Connection::~Connection() {
  tls_.reset();
  const int fd = fd_.exchange(-1);
  if (fd >= 0) ::close(fd);
}

void Connection::close() {
  const int fd = fd_.load();
  if (fd >= 0) ::shutdown(fd, SHUT_RDWR);  // the owner closes the descriptor
}

namespace {

Status setup_tls(SSL_CTX* ctx, const ApiServer& s) {
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  if (s.insecure) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
    return {};
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  if (s.ca_pem.empty()) {
    if (SSL_CTX_set_default_verify_paths(ctx) != 1)
      return fail(Error::internal("TLS: " + openssl_error()));
    return {};
  }
  BIO* bio = BIO_new_mem_buf(s.ca_pem.data(), static_cast<int>(s.ca_pem.size()));
  STACK_OF(X509_INFO)* infos = PEM_X509_INFO_read_bio(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (!infos) return fail(Error::invalid("TLS: the cluster CA is not PEM: " + openssl_error()));
  X509_STORE* store = SSL_CTX_get_cert_store(ctx);
  int added = 0;
  for (int i = 0; i < sk_X509_INFO_num(infos); ++i) {
    X509_INFO* info = sk_X509_INFO_value(infos, i);
    if (info->x509 && X509_STORE_add_cert(store, info->x509) == 1) ++added;
  }
  sk_X509_INFO_pop_free(infos, X509_INFO_free);
  if (added == 0) return fail(Error::invalid("TLS: no certificate in the cluster CA"));
  return {};
}

Status use_client_cert(SSL_CTX* ctx, const ApiServer& s) {
  if (s.client_cert_pem.empty()) return {};
  BIO* cb = BIO_new_mem_buf(s.client_cert_pem.data(), static_cast<int>(s.client_cert_pem.size()));
  X509* cert = PEM_read_bio_X509(cb, nullptr, nullptr, nullptr);
  BIO_free(cb);
  BIO* kb = BIO_new_mem_buf(s.client_key_pem.data(), static_cast<int>(s.client_key_pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(kb, nullptr, nullptr, nullptr);
  BIO_free(kb);
  const bool ok = cert && key && SSL_CTX_use_certificate(ctx, cert) == 1 &&
                  SSL_CTX_use_PrivateKey(ctx, key) == 1;
  if (cert) X509_free(cert);
  if (key) EVP_PKEY_free(key);
  if (!ok) return fail(Error::invalid("TLS: bad client certificate or key: " + openssl_error()));
  return {};
}

}  // namespace

Result<std::unique_ptr<Connection>> Connection::get(const ApiServer& s, std::string_view target,
                                                    std::chrono::milliseconds io_timeout) {
  std::unique_ptr<Connection> c(new Connection());
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string port = std::to_string(s.port);
  if (int rc = ::getaddrinfo(s.host.c_str(), port.c_str(), &hints, &res); rc != 0) {
    return fail(Error::unavailable(fmt::format("resolve {}: {}", s.host, gai_strerror(rc))));
  }
  timeval tv{};
  tv.tv_sec = io_timeout.count() / 1000;
  tv.tv_usec = static_cast<suseconds_t>((io_timeout.count() % 1000) * 1000);
  std::string last = "no address";
  for (addrinfo* a = res; a; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    // SO_SNDTIMEO bounds connect() too (Linux).
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      c->fd_.store(fd);
      break;
    }
    last = std::strerror(errno);
    ::close(fd);
  }
  ::freeaddrinfo(res);
  if (c->fd_.load() < 0) {
    return fail(Error::unavailable(fmt::format("connect {}:{}: {}", s.host, s.port, last)));
  }
  if (s.tls) {
    c->tls_ = std::make_unique<Tls>();
    c->tls_->ctx = SSL_CTX_new(TLS_client_method());
    if (!c->tls_->ctx) return fail(Error::internal("TLS: " + openssl_error()));
    KVROUTE_TRY(setup_tls(c->tls_->ctx, s));
    KVROUTE_TRY(use_client_cert(c->tls_->ctx, s));
    c->tls_->ssl = SSL_new(c->tls_->ctx);
    SSL* ssl = c->tls_->ssl;
    SSL_set_fd(ssl, c->fd_.load());
    in6_addr a6{};
    in_addr a4{};
    const bool is_ip = inet_pton(AF_INET, s.host.c_str(), &a4) == 1 ||
                       inet_pton(AF_INET6, s.host.c_str(), &a6) == 1;
    if (!s.insecure) {
      X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
      if (is_ip) {
        X509_VERIFY_PARAM_set1_ip_asc(param, s.host.c_str());
      } else {
        X509_VERIFY_PARAM_set1_host(param, s.host.c_str(), 0);
      }
    }
    if (!is_ip) SSL_set_tlsext_host_name(ssl, s.host.c_str());
    if (SSL_connect(ssl) != 1) {
      const long vr = SSL_get_verify_result(ssl);
      std::string why = vr != X509_V_OK ? X509_verify_cert_error_string(vr) : openssl_error();
      return fail(Error::unavailable(fmt::format("TLS to {}:{}: {}", s.host, s.port, why)));
    }
  }
  std::string token = s.token;
  if (!s.token_file.empty()) {
    if (auto t = read_file(s.token_file)) token = trim(*t);
  }
  std::string req = fmt::format(
      "GET {} HTTP/1.1\r\nHost: {}:{}\r\nAccept: application/json\r\nUser-Agent: kvroute\r\n",
      target, s.host, s.port);
  if (!token.empty()) req += "Authorization: Bearer " + token + "\r\n";
  req += "\r\n";
  KVROUTE_TRY(c->raw_write(req));
  KVROUTE_TRY(c->read_head());
  return c;
}

Status Connection::raw_write(std::string_view data) {
  while (!data.empty()) {
    long n;
    if (tls_) {
      n = SSL_write(tls_->ssl, data.data(), static_cast<int>(data.size()));
      if (n <= 0) return fail(Error::unavailable("TLS write: " + openssl_error()));
    } else {
      n = ::send(fd_.load(), data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        return fail(Error::unavailable(std::string("write: ") + std::strerror(errno)));
      }
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return {};
}

Result<std::size_t> Connection::raw_read(char* buf, std::size_t n) {
  for (;;) {
    if (tls_) {
      const int r = SSL_read(tls_->ssl, buf, static_cast<int>(n));
      if (r > 0) return static_cast<std::size_t>(r);
      const int err = SSL_get_error(tls_->ssl, r);
      if (err == SSL_ERROR_ZERO_RETURN) return std::size_t{0};
      if (err == SSL_ERROR_SYSCALL && errno == 0) return std::size_t{0};  // closed without notify
      return fail(Error::unavailable("TLS read: " + (err == SSL_ERROR_SYSCALL
                                                         ? std::string(std::strerror(errno))
                                                         : openssl_error())));
    }
    const long r = ::recv(fd_.load(), buf, n, 0);
    if (r >= 0) return static_cast<std::size_t>(r);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      return fail(Error::timeout("read: no data within the timeout"));
    return fail(Error::unavailable(std::string("read: ") + std::strerror(errno)));
  }
}

Result<bool> Connection::fill() {
  char buf[16384];
  KVROUTE_TRY(auto n, raw_read(buf, sizeof buf));
  if (n == 0) return false;
  in_.append(buf, n);
  return true;
}

Status Connection::read_head() {
  std::size_t end;
  while ((end = in_.find("\r\n\r\n")) == std::string::npos) {
    if (in_.size() > 64 * 1024) return fail(Error::invalid("response head over 64 KiB"));
    KVROUTE_TRY(auto more, fill());
    if (!more) return fail(Error::unavailable("connection closed before the response head"));
  }
  const std::string head = in_.substr(0, end);
  in_.erase(0, end + 4);
  // "HTTP/1.1 200 OK"
  if (head.size() < 12 || !head.starts_with("HTTP/1.")) {
    return fail(Error::invalid("not an HTTP response"));
  }
  status_ = std::atoi(head.c_str() + 9);
  std::size_t pos = head.find("\r\n");
  while (pos != std::string::npos) {
    const std::size_t next = head.find("\r\n", pos + 2);
    std::string line =
        head.substr(pos + 2, next == std::string::npos ? std::string::npos : next - pos - 2);
    pos = next;
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    for (auto& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    std::string value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.erase(0, 1);
    if (name == "transfer-encoding" && value.find("chunked") != std::string::npos) chunked_ = true;
    if (name == "content-length") remaining_ = std::atoll(value.c_str());
  }
  if (chunked_) remaining_ = 0;  // at a chunk boundary
  return {};
}

Result<bool> Connection::read_some(std::string& out) {
  if (done_) return false;
  if (!chunked_) {
    if (remaining_ == 0) {
      done_ = true;
      return false;
    }
    if (in_.empty()) {
      KVROUTE_TRY(auto more, fill());
      if (!more) {
        if (remaining_ > 0) return fail(Error::unavailable("connection closed mid-body"));
        done_ = true;
        return false;
      }
    }
    std::size_t n = in_.size();
    if (remaining_ > 0) n = std::min<std::size_t>(n, static_cast<std::size_t>(remaining_));
    out.append(in_, 0, n);
    in_.erase(0, n);
    if (remaining_ > 0) remaining_ -= static_cast<std::int64_t>(n);
    return true;
  }
  // Chunked: "size[;ext]\r\n" data "\r\n" ... "0\r\n" trailers "\r\n".
  if (remaining_ == 0) {
    std::size_t eol;
    while ((eol = in_.find("\r\n")) == std::string::npos) {
      if (in_.size() > 4096) return fail(Error::invalid("chunk size line too long"));
      KVROUTE_TRY(auto more, fill());
      if (!more) return fail(Error::unavailable("connection closed mid-stream"));
    }
    char* endp = nullptr;
    const long long size = std::strtoll(in_.c_str(), &endp, 16);
    if (endp == in_.c_str() || size < 0) return fail(Error::invalid("bad chunk size"));
    in_.erase(0, eol + 2);
    if (size == 0) {
      done_ = true;  // trailers are not read: the connection is not reused
      return false;
    }
    remaining_ = size + 2;  // with the chunk's CRLF
  }
  if (in_.empty()) {
    KVROUTE_TRY(auto more, fill());
    if (!more) return fail(Error::unavailable("connection closed mid-chunk"));
  }
  const std::size_t n = std::min<std::size_t>(in_.size(), static_cast<std::size_t>(remaining_));
  // The chunk's trailing CRLF is not body.
  const std::size_t data_left = remaining_ > 2 ? static_cast<std::size_t>(remaining_ - 2) : 0;
  out.append(in_, 0, std::min(n, data_left));
  in_.erase(0, n);
  remaining_ -= static_cast<std::int64_t>(n);
  return true;
}

Result<std::string> Connection::read_body(std::size_t max) {
  std::string body;
  for (;;) {
    KVROUTE_TRY(auto more, read_some(body));
    if (!more) return body;
    if (body.size() > max) return fail(Error::invalid("response body too large"));
  }
}

}  // namespace kvroute::discovery::internal
