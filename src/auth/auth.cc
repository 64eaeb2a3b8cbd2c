#include "auth/auth.h"

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#include <ctime>
#include <fstream>
#include <sstream>
#include <unordered_set>

#include "common/log.h"

namespace kvroute::auth {

std::string_view to_string(Refusal r) {
  switch (r) {
    case Refusal::kMissing:
      return "missing";
    case Refusal::kMalformed:
      return "malformed";
    case Refusal::kInvalid:
      return "invalid";
  }
  return "invalid";
}

Digest sha256(std::string_view data) {
  Digest d{};
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), d.data(), &len, EVP_sha256(), nullptr);
  return d;
}

bool secrets_equal(std::string_view a, std::string_view b) {
  const Digest da = sha256(a);
  const Digest db = sha256(b);
  return CRYPTO_memcmp(da.data(), db.data(), da.size()) == 0;
}

namespace {
constexpr std::string_view kSpace = " \t\r";
std::string_view trim(std::string_view s) {
  const auto b = s.find_first_not_of(kSpace);
  if (b == std::string_view::npos) return {};
  const auto e = s.find_last_not_of(kSpace);
  return s.substr(b, e - b + 1);
}
}  // namespace

std::string_view bearer_token(std::string_view v) {
  v = trim(v);
  constexpr std::string_view kScheme = "bearer";
  if (v.size() <= kScheme.size() || (v[kScheme.size()] != ' ' && v[kScheme.size()] != '\t'))
    return {};
  for (std::size_t i = 0; i < kScheme.size(); ++i) {
    if ((v[i] | 0x20) != kScheme[i]) return {};
  }
  const std::string_view token = trim(v.substr(kScheme.size()));
  if (token.find_first_of(kSpace) != std::string_view::npos) return {};
  return token;
}

Result<KeyStore> KeyStore::parse(std::string_view text, const std::string& source) {
  KeyStore ks;
  std::unordered_set<std::string> seen;
  std::size_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    const auto nl = text.find('\n');
    std::string_view line = trim(text.substr(0, nl));
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    if (line.empty() || line.front() == '#') continue;
    const auto sp = line.find_first_of(kSpace);
    const std::string_view key = line.substr(0, sp);
    const std::string_view tenant =
        sp == std::string_view::npos ? std::string_view{} : trim(line.substr(sp));
    if (tenant.find_first_of(kSpace) != std::string_view::npos) {
      return fail(Error::invalid(
          fmt::format("{}:{}: a line is a key and at most one tenant name", source, line_no)));
    }
    Entry e{sha256(key), std::string(tenant)};
    const std::string digest(reinterpret_cast<const char*>(e.digest.data()), e.digest.size());
    if (!seen.insert(digest).second)
      return fail(
          Error::invalid(fmt::format("{}:{}: a key repeats an earlier one", source, line_no)));
    // Not a digest of the key: logs must give nothing to test guesses of a weak key against.
    if (e.tenant.empty()) e.tenant = fmt::format("line-{}", line_no);
    ks.entries_.push_back(std::move(e));
  }
  if (ks.entries_.empty())
    return fail(
        Error::invalid(fmt::format("{}: no API keys (an empty file would refuse all)", source)));
  return ks;
}

Expected<std::string_view, Refusal> KeyStore::check(std::string_view authorization) const {
  if (trim(authorization).empty()) return make_unexpected(Refusal::kMissing);
  const std::string_view token = bearer_token(authorization);
  if (token.empty()) return make_unexpected(Refusal::kMalformed);
  const Digest d = sha256(token);
  const Entry* found = nullptr;
  for (const Entry& e : entries_) {
    // Every digest is compared; the branch below depends only on the outcome.
    const bool match = CRYPTO_memcmp(d.data(), e.digest.data(), d.size()) == 0;
    if (match) found = &e;
  }
  if (found == nullptr) return make_unexpected(Refusal::kInvalid);
  return std::string_view(found->tenant);
}

namespace {
std::string stamp_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  return fmt::format("{}:{}:{}:{}.{}", st.st_dev, st.st_ino, st.st_size, st.st_mtim.tv_sec,
                     st.st_mtim.tv_nsec);
}
std::int64_t monotonic_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}
Result<std::string> read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return fail(Error::io(fmt::format("cannot read '{}'", path)));
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
}  // namespace

Result<std::shared_ptr<KeyFile>> KeyFile::open(const std::string& path,
                                               std::chrono::milliseconds reload_interval) {
  std::shared_ptr<KeyFile> kf(new KeyFile(path, reload_interval));
  MutexLock lock(kf->mu_);
  kf->stamp_ = stamp_of(path);
  KVROUTE_TRY(auto text, read_all(path));
  KVROUTE_TRY(auto keys, KeyStore::parse(text, path));
  kf->keys_.store(std::make_shared<const KeyStore>(std::move(keys)));
  kf->next_check_ns_.store(monotonic_ns() + reload_interval.count() * 1000000);
  return kf;
}

void KeyFile::reload_locked() {
  std::string stamp = stamp_of(path_);
  if (stamp == stamp_) return;
  stamp_ = std::move(stamp);
  auto text = read_all(path_);
  auto keys = text ? KeyStore::parse(*text, path_) : Result<KeyStore>(fail(text.error()));
  if (!keys) {
    spdlog::warn("API keys: '{}' changed but does not load; keeping the previous keys: {}", path_,
                 keys.error().message);
    return;
  }
  keys_.store(std::make_shared<const KeyStore>(std::move(*keys)));
  reloads_.fetch_add(1, std::memory_order_relaxed);
  spdlog::info("API keys: reloaded '{}'", path_);
}

std::shared_ptr<const KeyStore> KeyFile::current() {
  const std::int64_t now = monotonic_ns();
  std::int64_t due = next_check_ns_.load(std::memory_order_relaxed);
  if (now >= due &&
      next_check_ns_.compare_exchange_strong(due, now + interval_.count() * 1000000,
                                             std::memory_order_relaxed) &&
      mu_.try_lock()) {
    reload_locked();
    mu_.unlock();
  }
  return keys_.load();
}

Result<std::string> read_secret_file(const std::string& path) {
  KVROUTE_TRY(auto text, read_all(path));
  std::string_view v = text;
  v = trim(v.substr(0, v.find('\n')));
  if (v.empty()) return fail(Error::invalid(fmt::format("'{}' holds no secret", path)));
  return std::string(v);
}

std::string_view refusal_message(Refusal r) {
  switch (r) {
    case Refusal::kMissing:
      return "You didn't provide an API key. You need to provide your API key in an Authorization "
             "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).";
    case Refusal::kMalformed:
      return "The Authorization header must be 'Bearer YOUR_KEY'.";
    case Refusal::kInvalid:
      return "Incorrect API key provided.";
  }
  return "Incorrect API key provided.";
}

Result<std::unique_ptr<Gate>> Gate::create(const GateOptions& opts, metrics::Registry& reg) {
  std::unique_ptr<Gate> g(new Gate());
  if (!opts.api_keys_file.empty()) {
    KVROUTE_TRY(g->keys_, KeyFile::open(opts.api_keys_file, opts.reload_interval));
  }
  if (!opts.admin_token_file.empty()) {
    KVROUTE_TRY(g->admin_token_, read_secret_file(opts.admin_token_file));
  }
  auto& fam = reg.counter("kvroute_auth_refusals_total",
                          "Requests refused for their credentials, by listener and reason.",
                          {"listener", "reason"});
  const char* listeners[2] = {"api", "admin"};
  for (int l = 0; l < 2; ++l) {
    for (int r = 0; r < 3; ++r) {
      g->refused_[l][r] =
          &fam.with({listeners[l], std::string(to_string(static_cast<Refusal>(r)))});
    }
  }
  return g;
}

Expected<Principal, Refusal> Gate::check_client(std::string_view authorization) const {
  auto keys = keys_->current();
  auto who = keys->check(authorization);
  if (!who) {
    refused_[0][static_cast<int>(who.error())]->inc();
    return make_unexpected(who.error());
  }
  return Principal{std::move(keys), *who};
}

Expected<Principal, Refusal> Gate::refuse_client(Refusal why) const {
  refused_[0][static_cast<int>(why)]->inc();
  return make_unexpected(why);
}

Expected<void, Refusal> Gate::check_admin(std::string_view authorization) const {
  if (admin_token_.empty()) return {};
  Refusal why = Refusal::kInvalid;
  const std::string_view token = bearer_token(authorization);
  if (authorization.empty()) {
    why = Refusal::kMissing;
  } else if (token.empty()) {
    why = Refusal::kMalformed;
  } else if (secrets_equal(token, admin_token_)) {
    return {};
  }
  refused_[1][static_cast<int>(why)]->inc();
  return make_unexpected(why);
}

}  // namespace kvroute::auth
