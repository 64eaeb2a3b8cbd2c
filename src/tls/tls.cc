#include "tls/tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <cstring>
#include <ctime>

#include "common/log.h"

namespace kvroute::tls {

namespace ssl = boost::asio::ssl;

std::string openssl_errors() {
  std::string out;
  while (const unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

namespace {

FileStamp stamp_of(const std::string& path) {
  FileStamp s;
  struct stat st {};
  if (path.empty() || ::stat(path.c_str(), &st) != 0) return s;
  s.dev = st.st_dev;
  s.ino = st.st_ino;
  s.size = static_cast<std::uint64_t>(st.st_size);
  s.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  return s;
}

std::int64_t monotonic_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// TLS 1.2 and 1.3 only; no compression, no renegotiation.
void set_protocols(SSL_CTX* ctx) {
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(
      ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
}

// ALPN: http/1.1 when the client offers it. A client that offers only other protocols (h2) goes on
// without ALPN, as nginx does, and speaks HTTP/1.1 or leaves.
int select_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                unsigned int inlen, void*) {
  static constexpr unsigned char kHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, outlen, kHttp11, sizeof kHttp11, in, inlen) ==
      OPENSSL_NPN_NEGOTIATED) {
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

Error load_file_error(const std::string& what, const std::string& path) {
  return Error::invalid(fmt::format("TLS: cannot load {} '{}': {}", what, path, openssl_errors()));
}

// The certificate chain and its key into `h`; errors name the files.
Status use_pair(SSL_CTX* h, const std::string& cert_file, const std::string& key_file,
                const char* what) {
  if (SSL_CTX_use_certificate_chain_file(h, cert_file.c_str()) != 1)
    return fail(load_file_error(fmt::format("the {} certificate", what), cert_file));
  BIO* bio = BIO_new_file(key_file.c_str(), "r");
  EVP_PKEY* key =
      bio != nullptr ? PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr) : nullptr;
  BIO_free(bio);
  if (key == nullptr) return fail(load_file_error(fmt::format("the {} key", what), key_file));
  const bool ok = SSL_CTX_use_PrivateKey(h, key) == 1 && SSL_CTX_check_private_key(h) == 1;
  EVP_PKEY_free(key);
  if (!ok) {
    ERR_clear_error();
    return fail(Error::invalid(
        fmt::format("TLS: the key '{}' does not match the certificate '{}'", key_file, cert_file)));
  }
  return {};
}

}  // namespace

Result<std::shared_ptr<Context>> make_server_context(const ServerConfig& cfg) {
  ERR_clear_error();
  auto ctx = std::make_shared<Context>(Context::tls_server);
  SSL_CTX* h = ctx->native_handle();
  set_protocols(h);
  KVROUTE_TRY(use_pair(h, cfg.cert_file, cfg.key_file, "server"));
  SSL_CTX_set_alpn_select_cb(h, &select_alpn, nullptr);
  static constexpr unsigned char kSessionContext[] = "kvroute";
  SSL_CTX_set_session_id_context(h, kSessionContext, sizeof kSessionContext - 1);
  if (!cfg.client_ca_file.empty()) {
    if (SSL_CTX_load_verify_locations(h, cfg.client_ca_file.c_str(), nullptr) != 1)
      return fail(load_file_error("the client CA", cfg.client_ca_file));
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(cfg.client_ca_file.c_str());
    if (names == nullptr) return fail(load_file_error("the client CA", cfg.client_ca_file));
    SSL_CTX_set_client_CA_list(h, names);
    SSL_CTX_set_verify(h, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  }
  return ctx;
}

Result<std::shared_ptr<ServerContexts>> ServerContexts::create(ServerConfig cfg) {
  std::shared_ptr<ServerContexts> s(new ServerContexts(std::move(cfg)));
  {
    MutexLock lock(s->mu_);
    s->stamps_[0] = stamp_of(s->cfg_.cert_file);
    s->stamps_[1] = stamp_of(s->cfg_.key_file);
    s->stamps_[2] = stamp_of(s->cfg_.client_ca_file);
  }
  KVROUTE_TRY(auto ctx, make_server_context(s->cfg_));
  s->ctx_.store(std::move(ctx));
  s->next_check_ns_.store(monotonic_ns() + s->cfg_.reload_interval.count() * 1000000);
  return s;
}

bool ServerContexts::reload_if_changed() {
  if (!mu_.try_lock()) return false;  // another thread is at it
  const bool reloaded = reload_locked();
  mu_.unlock();
  return reloaded;
}

bool ServerContexts::reload_locked() {
  const FileStamp now[3] = {stamp_of(cfg_.cert_file), stamp_of(cfg_.key_file),
                            stamp_of(cfg_.client_ca_file)};
  if (now[0] == stamps_[0] && now[1] == stamps_[1] && now[2] == stamps_[2]) return false;
  for (int i = 0; i < 3; ++i) stamps_[i] = now[i];
  auto ctx = make_server_context(cfg_);
  if (!ctx) {
    failures_.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("TLS: the changed certificate files do not load; keeping the previous ones: {}",
                 ctx.error().message);
    return false;
  }
  ctx_.store(std::move(*ctx));
  reloads_.fetch_add(1, std::memory_order_relaxed);
  spdlog::info("TLS: reloaded the certificate from '{}'", cfg_.cert_file);
  return true;
}

std::shared_ptr<Context> ServerContexts::current() {
  const std::int64_t now = monotonic_ns();
  std::int64_t due = next_check_ns_.load(std::memory_order_relaxed);
  if (now >= due &&
      next_check_ns_.compare_exchange_strong(due, now + cfg_.reload_interval.count() * 1000000,
                                             std::memory_order_relaxed)) {
    reload_if_changed();
  }
  return ctx_.load();
}

Result<std::shared_ptr<Context>> make_client_context(const ClientConfig& cfg) {
  ERR_clear_error();
  auto ctx = std::make_shared<Context>(Context::tls_client);
  SSL_CTX* h = ctx->native_handle();
  set_protocols(h);
  static constexpr unsigned char kHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  SSL_CTX_set_alpn_protos(h, kHttp11, sizeof kHttp11);
  if (!cfg.insecure_skip_verify) {
    const int ok = cfg.ca_file.empty()
                       ? SSL_CTX_set_default_verify_paths(h)
                       : SSL_CTX_load_verify_locations(h, cfg.ca_file.c_str(), nullptr);
    if (ok != 1) {
      return fail(load_file_error("the CA", cfg.ca_file.empty() ? "(system store)" : cfg.ca_file));
    }
  }
  if (cfg.cert_file.empty() != cfg.key_file.empty())
    return fail(Error::invalid("TLS: a client certificate needs both a certificate and a key"));
  if (!cfg.cert_file.empty()) {
    KVROUTE_TRY(use_pair(h, cfg.cert_file, cfg.key_file, "client"));
  }
  SSL_CTX_set_verify(h, cfg.insecure_skip_verify ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, nullptr);
  return ctx;
}

Status prepare_client(SSL* ssl, std::string_view host_view, bool verify) {
  const std::string host(host_view);
  in6_addr a6{};
  in_addr a4{};
  const bool is_ip =
      ::inet_pton(AF_INET, host.c_str(), &a4) == 1 || ::inet_pton(AF_INET6, host.c_str(), &a6) == 1;
  // SNI carries names only (RFC 6066 section 3).
  if (!is_ip && SSL_set_tlsext_host_name(ssl, host.c_str()) != 1)
    return fail(Error::invalid("TLS: cannot set the server name '" + host + "'"));
  if (!verify) {
    SSL_set_verify(ssl, SSL_VERIFY_NONE, nullptr);
    return {};
  }
  SSL_set_verify(ssl, SSL_VERIFY_PEER, nullptr);
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  const int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str())
                       : X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size());
  if (ok != 1) return fail(Error::invalid("TLS: cannot verify against '" + host + "'"));
  if (!is_ip) X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  return {};
}

}  // namespace kvroute::tls
