// File: tls/tls.h
//
// TLS for both sides of the router, on OpenSSL through Asio's SSL support (docs/adr/0022):
//  - clients: a certificate chain and key, optionally a CA that clients' certificates must chain to
//    (mTLS); TLS 1.2 and 1.3, ALPN http/1.1. ServerContexts reloads the files when they change on
//    disk (Kubernetes rotates mounted secrets by swapping a symlink): new connections get the new
//    certificate, open ones keep theirs.
//  - engines: verification on by default (a CA file, else the system store), SNI and host or IP
//    checking, an optional client certificate, and an explicit opt-out.
//
// Thread-safety: ServerContexts::current() may be called from any thread (each acceptor calls it
// per connection); the contexts it hands out are immutable once built and shared by connections.
#pragma once

#include <openssl/ssl.h>

#include <atomic>
#include <boost/asio/ssl/context.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/mutex.h"
#include "common/result.h"

namespace kvroute::tls {

using Context = boost::asio::ssl::context;

struct ServerConfig {
  std::string cert_file;       // PEM: the leaf, then its intermediates
  std::string key_file;        // PEM private key of the leaf
  std::string client_ca_file;  // non-empty: clients must present a certificate chaining to it
  std::chrono::milliseconds reload_interval{1000};  // how often the files' metadata is checked
  bool enabled() const { return !cert_file.empty(); }
};

// The files' identity (device, inode, size, modification time), to notice a rotation.
struct FileStamp {
  std::uint64_t dev = 0, ino = 0, size = 0;
  std::int64_t mtime_ns = 0;
  bool operator==(const FileStamp&) const = default;
};

class ServerContexts {
 public:
  // Loads the files; an error names the file and OpenSSL's reason (start-up fails on it).
  static Result<std::shared_ptr<ServerContexts>> create(ServerConfig cfg);

  // The context for a new connection. At most once per reload interval it stats the files and,
  // when one changed, builds a new context; a pair that does not load (a rotation caught halfway:
  // a new certificate beside the old key) keeps the previous context, is logged and counted, and
  // is tried again when the files change again.
  std::shared_ptr<Context> current();
  // Checks the files now (what current() does when the interval has passed). True: reloaded.
  bool reload_if_changed();

  std::uint64_t reloads() const { return reloads_.load(std::memory_order_relaxed); }
  std::uint64_t reload_failures() const { return failures_.load(std::memory_order_relaxed); }
  const ServerConfig& config() const { return cfg_; }

 private:
  explicit ServerContexts(ServerConfig cfg) : cfg_(std::move(cfg)) {}
  bool reload_locked() REQUIRES(mu_);
  ServerConfig cfg_;
  std::atomic<std::shared_ptr<Context>> ctx_;
  std::atomic<std::int64_t> next_check_ns_{0};
  Mutex mu_;  // one reloader at a time
  FileStamp stamps_[3] GUARDED_BY(mu_);
  std::atomic<std::uint64_t> reloads_{0};
  std::atomic<std::uint64_t> failures_{0};
};

// Builds a server context from the files now (no reloading).
Result<std::shared_ptr<Context>> make_server_context(const ServerConfig& cfg);

struct ClientConfig {
  std::string ca_file;    // empty: the system's trust store
  std::string cert_file;  // client certificate (mTLS), with key_file
  std::string key_file;
  bool insecure_skip_verify = false;  // explicit opt-out: no chain or name check
};
Result<std::shared_ptr<Context>> make_client_context(const ClientConfig& cfg);

// Prepares a client connection's handle: SNI (for names, not addresses) and, unless `verify` is
// false, verification of the peer's chain and of `host` (a DNS name or an IP address).
Status prepare_client(SSL* ssl, std::string_view host, bool verify);

// The last OpenSSL errors of this thread as text (and clears them).
std::string openssl_errors();

}  // namespace kvroute::tls
