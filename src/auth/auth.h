// File: auth/auth.h
//
// API keys for the router's clients and a bearer token for its admin listener (docs/adr/0023).
// A key file holds one key per line, optionally followed by a tenant name (flow control and logs
// use it; a key without one is named after its line, "line-3": nothing derived from the key, which
// a log reader could test guesses against). Blank lines and lines starting with '#' are skipped.
//
// Only SHA-256 digests of the keys are kept. A presented key is hashed and compared with every
// digest by CRYPTO_memcmp, all of them every time: the time a check takes does not depend on how
// much of a key an attacker guessed right (hashing scrambles any prefix), nor on which key
// matched. Keys are never logged or exported; refusals are counted by reason only.
//
//   auto keys = auth::KeyFile::open("/etc/kvroute/api-keys");   // reloaded when it changes
//   auto who = keys->current()->check(req.header("authorization"));
//   if (!who) -> 401, counted by to_string(who.error())
//
// Thread-safety: a KeyStore is immutable and may be read from any thread. KeyFile::current() may
// be called from any thread.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/mutex.h"
#include "common/result.h"
#include "metrics/registry.h"

namespace kvroute::auth {

enum class Refusal {
  kMissing,    // no Authorization header
  kMalformed,  // not "Bearer <token>"
  kInvalid,    // a token no key matches
};
std::string_view to_string(Refusal r);

using Digest = std::array<unsigned char, 32>;
Digest sha256(std::string_view data);
// Equality of two secrets in time independent of their contents (digests compared by
// CRYPTO_memcmp).
bool secrets_equal(std::string_view a, std::string_view b);
// The token of an "Authorization: Bearer <token>" value (scheme case-insensitive); empty when the
// value is not a bearer credential.
std::string_view bearer_token(std::string_view authorization);

class KeyStore {
 public:
  // Parses a key file's text; errors name `source` and the line, never the key.
  static Result<KeyStore> parse(std::string_view text, const std::string& source);
  // The tenant of the key presented in an Authorization header value, or why it is refused.
  Expected<std::string_view, Refusal> check(std::string_view authorization) const;
  std::size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    Digest digest;
    std::string tenant;
  };
  std::vector<Entry> entries_;
};

// A key file, reloaded when it changes on disk (checked at most once per interval, from the
// calling thread). A changed file that does not parse keeps the previous keys and is logged.
class KeyFile {
 public:
  static Result<std::shared_ptr<KeyFile>> open(
      const std::string& path,
      std::chrono::milliseconds reload_interval = std::chrono::milliseconds(1000));
  std::shared_ptr<const KeyStore> current();
  std::uint64_t reloads() const { return reloads_.load(std::memory_order_relaxed); }

 private:
  KeyFile(std::string path, std::chrono::milliseconds interval)
      : path_(std::move(path)), interval_(interval) {}
  void reload_locked() REQUIRES(mu_);
  std::string path_;
  std::chrono::milliseconds interval_;
  std::atomic<std::shared_ptr<const KeyStore>> keys_;
  std::atomic<std::int64_t> next_check_ns_{0};
  std::atomic<std::uint64_t> reloads_{0};
  Mutex mu_;
  std::string stamp_ GUARDED_BY(mu_);  // the file's device, inode, size and mtime
};

// Reads a secret file (a token, an upstream key): its first line, without surrounding whitespace.
Result<std::string> read_secret_file(const std::string& path);

// Who a request's key belongs to. Holds the key set it was found in (a reload may replace it).
struct Principal {
  std::shared_ptr<const KeyStore> keys;
  std::string_view tenant;
};

// The front doors' checks, with every refusal counted in kvroute_auth_refusals_total{listener,
// reason} (never with the credential): API keys on the data listener ("api"), the bearer token on
// the admin listener ("admin"). Either check is off when its file is not configured.
struct GateOptions {
  std::string api_keys_file;
  std::string admin_token_file;
  std::chrono::milliseconds reload_interval{1000};
};
class Gate {
 public:
  static Result<std::unique_ptr<Gate>> create(const GateOptions& opts, metrics::Registry& reg);
  bool checks_api_keys() const { return keys_ != nullptr; }
  bool checks_admin_token() const { return !admin_token_.empty(); }
  // The data listener's check (call only when checks_api_keys()).
  Expected<Principal, Refusal> check_client(std::string_view authorization) const;
  // Counts a refusal the front door decided itself (several Authorization fields: malformed).
  Expected<Principal, Refusal> refuse_client(Refusal why) const;
  // The admin listener's check; passes when no token is configured.
  Expected<void, Refusal> check_admin(std::string_view authorization) const;

 private:
  Gate() = default;
  std::shared_ptr<KeyFile> keys_;
  std::string admin_token_;
  metrics::Counter* refused_[2][3] = {};  // [api, admin][reason]
};

// The 401 body for a refusal, in OpenAI's shape (code "invalid_api_key"); never quotes the key.
std::string_view refusal_message(Refusal r);

}  // namespace kvroute::auth
