#include "discovery/discovery.h"

#include <fmt/format.h>
#include <pthread.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "common/mutex.h"
#include "discovery/internal/kube_http.h"
#include "discovery/internal/kube_objects.h"

namespace kvroute::discovery {

namespace {

using namespace std::chrono_literals;
using internal::Connection;

bool same(const std::vector<config::BackendConfig>& a,
          const std::vector<config::BackendConfig>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].url != b[i].url || a[i].name != b[i].name || a[i].models != b[i].models ||
        a[i].kv_events_endpoint != b[i].kv_events_endpoint ||
        a[i].kv_events_replay != b[i].kv_events_replay ||
        a[i].num_gpu_blocks != b[i].num_gpu_blocks)
      return false;
  }
  return true;
}

// Stop flag and interruptible sleeps shared by the sources' threads.
class Stopper {
 public:
  // False when stopped.
  bool sleep_for(std::chrono::milliseconds d) {
    MutexLock lk(mu_);
    const auto until = std::chrono::steady_clock::now() + d;
    while (!stopped_) {
      if (!cv_.wait_until(mu_, until)) break;
    }
    return !stopped_;
  }
  void stop() {
    MutexLock lk(mu_);
    stopped_ = true;
    cv_.notify_all();
  }
  bool stopped() const {
    MutexLock lk(mu_);
    return stopped_;
  }

 private:
  mutable Mutex mu_;
  CondVar cv_;
  bool stopped_ GUARDED_BY(mu_) = false;
};

// --- endpoints file ------------------------------------------------------------------------------

Result<std::string> read_text(const std::string& path) {
  std::ifstream f(path);
  if (!f) return fail(Error::not_found(fmt::format("{}: cannot open the endpoints file", path)));
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

class FileSource final : public Source {
 public:
  FileSource(std::string path, std::chrono::milliseconds interval, OnChange cb)
      : path_(std::move(path)), interval_(interval), cb_(std::move(cb)) {}
  ~FileSource() override { stop(); }

  // The first load, on the caller's thread: errors fail start-up.
  Status load_now() {
    KVROUTE_TRY(auto text, read_text(path_));
    KVROUTE_TRY(auto list, config::load_backends_yaml(text, path_));
    last_text_ = std::move(text);
    cb_(std::move(list));
    return {};
  }

  void start() override {
    thread_ = std::thread([this] { run(); });
  }
  void stop() override {
    stop_.stop();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void run() {
    while (stop_.sleep_for(interval_)) {
      auto text = read_text(path_);
      if (!text) {
        // A file being replaced (rename over it) can be missing for an instant: keep the pool.
        if (!warned_)
          spdlog::warn("discovery: {} (keeping the current backends)", text.error().message);
        warned_ = true;
        continue;
      }
      warned_ = false;
      if (*text == last_text_) continue;
      auto list = config::load_backends_yaml(*text, path_);
      last_text_ = std::move(*text);
      if (!list) {
        spdlog::error("discovery: {} (keeping the current backends)", list.error().message);
        continue;
      }
      spdlog::info("discovery: {} changed: {} backends", path_, list->size());
      cb_(std::move(*list));
    }
  }

  const std::string path_;
  const std::chrono::milliseconds interval_;
  OnChange cb_;
  Stopper stop_;
  std::string last_text_;  // the discovery thread's (and load_now's, before start)
  bool warned_ = false;
  std::thread thread_;
};

// --- Kubernetes InferencePool
// ----------------------------------------------------------------------

// OpenSSL writes with write(2): to a peer that closed, that raises SIGPIPE, which would end the
// process unless ignored. Blocked on the discovery threads the write fails with EPIPE instead (the
// signal, directed at this thread, stays pending and goes with it), whatever the embedding program
// does with SIGPIPE.
void block_sigpipe() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

constexpr int kWatchSeconds = 300;
constexpr auto kIoTimeout = 10s;
constexpr auto kBackoffMin = 200ms;
constexpr auto kBackoffMax = 10s;

class KubeSource final : public Source {
 public:
  KubeSource(const config::Config& cfg, internal::ApiServer api, OnChange cb)
      : api_(std::move(api)), name_(cfg.pool_name), group_(cfg.pool_group), cb_(std::move(cb)) {
    ns_ = !cfg.pool_namespace.empty()       ? cfg.pool_namespace
          : !api_.default_namespace.empty() ? api_.default_namespace
                                            : "default";
  }
  ~KubeSource() override { stop(); }

  void start() override {
    pool_thread_ = std::thread([this] {
      block_sigpipe();
      pool_loop();
    });
    pods_thread_ = std::thread([this] {
      block_sigpipe();
      pods_loop();
    });
  }
  void stop() override {
    stop_.stop();
    {
      MutexLock lk(mu_);
      cv_.notify_all();
      for (auto* c : open_) c->close();
    }
    if (pool_thread_.joinable()) pool_thread_.join();
    if (pods_thread_.joinable()) pods_thread_.join();
  }

 private:
  std::string pool_path() const {
    // The v1 pool lives in inference.networking.k8s.io; the legacy group serves v1alpha2.
    const char* version = group_ == "inference.networking.x-k8s.io" ? "v1alpha2" : "v1";
    return fmt::format("/apis/{}/{}/namespaces/{}/inferencepools", group_, version, ns_);
  }
  std::string pods_path() const { return fmt::format("/api/v1/namespaces/{}/pods", ns_); }

  // A GET whose connection stop() can cut.
  Result<std::unique_ptr<Connection>> open(const std::string& target, std::chrono::milliseconds t) {
    KVROUTE_TRY(auto c, Connection::get(api_, target, t));
    MutexLock lk(mu_);
    if (stop_.stopped()) return fail(Error::unavailable("stopped"));
    open_.push_back(c.get());
    return c;
  }
  void closed(Connection* c) {
    MutexLock lk(mu_);
    std::erase(open_, c);
  }
  struct Scoped {
    KubeSource* self;
    std::unique_ptr<Connection> c;
    ~Scoped() {
      if (c) self->closed(c.get());
    }
  };

  // Reads a watch stream, one JSON event per line, until it ends; `fn` returns false to stop.
  template <typename Fn>
  Status read_lines(Connection& c, Fn&& fn) {
    std::string buf;
    for (;;) {
      KVROUTE_TRY(auto more, c.read_some(buf));
      std::size_t nl;
      while ((nl = buf.find('\n')) != std::string::npos) {
        std::string line = buf.substr(0, nl);
        buf.erase(0, nl + 1);
        if (line.empty()) continue;
        if (!fn(line)) return {};
      }
      if (!more) return {};
      if (buf.size() > (16u << 20)) return fail(Error::invalid("watch event over 16 MiB"));
    }
  }

  void set_pool(std::optional<internal::PoolSpec> spec) {
    MutexLock lk(mu_);
    if (spec == pool_) return;
    if (spec) {
      spdlog::info("discovery: InferencePool {}/{}: selector {}, {} target port(s)", ns_, name_,
                   internal::label_selector_query(spec->selector), spec->target_ports.size());
    } else {
      spdlog::warn("discovery: InferencePool {}/{} is gone: no backends", ns_, name_);
    }
    pool_ = std::move(spec);
    ++pool_gen_;
    pool_changed_ = true;
    cv_.notify_all();
    for (auto* c : open_) {
      if (c == pods_conn_) c->close();  // the pod watch restarts with the new selector
    }
  }

  void backoff_sleep(std::chrono::milliseconds& b) {
    stop_.sleep_for(b);
    b = std::min<std::chrono::milliseconds>(b * 2, kBackoffMax);
  }

  void pool_loop() {
    std::chrono::milliseconds backoff = kBackoffMin;
    while (!stop_.stopped()) {
      auto c = open(pool_path() + "/" + name_, kIoTimeout);
      if (!c) {
        spdlog::warn("discovery: GET InferencePool {}/{}: {}", ns_, name_, c.error().message);
        backoff_sleep(backoff);
        continue;
      }
      Scoped got{this, std::move(*c)};
      auto body = got.c->read_body(16u << 20);
      if (!body || got.c->status() != 200) {
        spdlog::warn("discovery: GET InferencePool {}/{}: {}", ns_, name_,
                     body ? fmt::format("HTTP {}", got.c->status()) : body.error().message);
        if (body && got.c->status() == 404) set_pool(std::nullopt);
        backoff_sleep(backoff);
        continue;
      }
      auto spec = internal::parse_pool(*body);
      if (!spec) {
        spdlog::error("discovery: InferencePool {}/{}: {}", ns_, name_, spec.error().message);
        set_pool(std::nullopt);
        backoff_sleep(backoff);
        continue;
      }
      set_pool(std::move(*spec));
      auto rv =
          internal::parse_event(fmt::format(R"({{"type":"BOOKMARK","object":{}}})", *body), false);
      const std::string version = rv ? rv->resource_version : std::string();
      auto w = open(fmt::format("{}?fieldSelector=metadata.name%3D{}&watch=1&allowWatchBookmarks="
                                "true&resourceVersion={}&timeoutSeconds={}",
                                pool_path(), name_, version, kWatchSeconds),
                    std::chrono::seconds(kWatchSeconds + 30));
      if (!w) {
        backoff_sleep(backoff);
        continue;
      }
      Scoped watch{this, std::move(*w)};
      if (watch.c->status() != 200) {
        backoff_sleep(backoff);
        continue;  // 410 and the rest: GET the pool again
      }
      backoff = kBackoffMin;
      auto st = read_lines(*watch.c, [&](const std::string& line) {
        auto ev = internal::parse_event(line, false);
        if (!ev) {
          spdlog::warn("discovery: pool watch: {}", ev.error().message);
          return true;
        }
        switch (ev->type) {
          case internal::EventType::kAdded:
          case internal::EventType::kModified:
            if (ev->pool) set_pool(std::move(ev->pool));
            return true;
          case internal::EventType::kDeleted:
            set_pool(std::nullopt);
            return true;
          case internal::EventType::kBookmark:
            return true;
          case internal::EventType::kError:
            return false;  // GET it again (410 Gone included)
        }
        return true;
      });
      if (!st && !stop_.stopped()) {
        spdlog::warn("discovery: pool watch dropped: {}", st.error().message);
        backoff_sleep(backoff);
      }
    }
  }

  void publish(const internal::PoolSpec& spec, const std::map<std::string, internal::Pod>& pods) {
    std::vector<internal::Pod> list;
    for (const auto& [_, p] : pods) list.push_back(p);
    auto backends = internal::backends_of(spec, list);
    if (published_ && same(backends, last_)) return;
    published_ = true;
    last_ = backends;
    spdlog::info("discovery: InferencePool {}/{}: {} ready endpoint(s)", ns_, name_,
                 backends.size());
    cb_(std::move(backends));
  }

  void pods_loop() {
    std::chrono::milliseconds backoff = kBackoffMin;
    while (!stop_.stopped()) {
      internal::PoolSpec spec;
      std::uint64_t gen;
      {
        MutexLock lk(mu_);
        while (!pool_changed_ && !stop_.stopped())
          cv_.wait_until(mu_, std::chrono::steady_clock::now() + 1s);
        if (stop_.stopped()) return;
        pool_changed_ = false;
        gen = pool_gen_;
        if (!pool_) {
          spec = {};
        } else {
          spec = *pool_;
        }
      }
      if (spec.selector.empty()) {
        std::map<std::string, internal::Pod> none;
        publish(spec, none);
        continue;
      }
      const std::string query = "labelSelector=" + internal::label_selector_query(spec.selector);
      auto still_current = [&] {
        MutexLock lk(mu_);
        return gen == pool_gen_;
      };
      // List, then watch from the list's resourceVersion; relist on 410 Gone.
      while (!stop_.stopped() && still_current()) {
        auto c = open(pods_path() + "?" + query, kIoTimeout);
        if (!c) {
          spdlog::warn("discovery: list pods: {}", c.error().message);
          backoff_sleep(backoff);
          continue;
        }
        Scoped got{this, std::move(*c)};
        auto body = got.c->read_body(256u << 20);
        if (!body || got.c->status() != 200) {
          spdlog::warn("discovery: list pods: {}",
                       body ? fmt::format("HTTP {}", got.c->status()) : body.error().message);
          backoff_sleep(backoff);
          continue;
        }
        auto listed = internal::parse_pod_list(*body);
        if (!listed) {
          spdlog::warn("discovery: list pods: {}", listed.error().message);
          backoff_sleep(backoff);
          continue;
        }
        std::map<std::string, internal::Pod> pods;
        for (auto& p : listed->first) pods[p.name] = std::move(p);
        std::string rv = listed->second;
        publish(spec, pods);
        bool relist = false;
        while (!relist && !stop_.stopped() && still_current()) {
          auto w = open(fmt::format("{}?{}&watch=1&allowWatchBookmarks=true&resourceVersion={}&"
                                    "timeoutSeconds={}",
                                    pods_path(), query, rv, kWatchSeconds),
                        std::chrono::seconds(kWatchSeconds + 30));
          if (!w) {
            spdlog::warn("discovery: watch pods: {}", w.error().message);
            backoff_sleep(backoff);
            continue;
          }
          Scoped watch{this, std::move(*w)};
          // The pool thread cuts this watch when the selector changes; cleared on every way out,
          // before the connection goes.
          struct Current {
            KubeSource* self;
            ~Current() {
              MutexLock lk(self->mu_);
              self->pods_conn_ = nullptr;
            }
          } current{this};
          {
            MutexLock lk(mu_);
            pods_conn_ = watch.c.get();
            if (gen != pool_gen_) watch.c->close();
          }
          if (watch.c->status() == 410) {
            relist = true;
            break;
          }
          if (watch.c->status() != 200) {
            spdlog::warn("discovery: watch pods: HTTP {}", watch.c->status());
            backoff_sleep(backoff);
            continue;
          }
          backoff = kBackoffMin;
          auto st = read_lines(*watch.c, [&](const std::string& line) {
            auto ev = internal::parse_event(line, true);
            if (!ev) {
              spdlog::warn("discovery: pod watch: {}", ev.error().message);
              return true;
            }
            if (!ev->resource_version.empty()) rv = ev->resource_version;
            switch (ev->type) {
              case internal::EventType::kAdded:
              case internal::EventType::kModified:
                pods[ev->pod->name] = *ev->pod;
                break;
              case internal::EventType::kDeleted:
                pods.erase(ev->pod->name);
                break;
              case internal::EventType::kBookmark:
                return true;
              case internal::EventType::kError:
                spdlog::info("discovery: pod watch: error {}: listing again", ev->error_code);
                relist = true;
                return false;
            }
            publish(spec, pods);
            return true;
          });
          if (!st && !stop_.stopped() && still_current()) {
            spdlog::warn("discovery: pod watch dropped: {}: reconnecting", st.error().message);
            backoff_sleep(backoff);
          }
        }
      }
    }
  }

  const internal::ApiServer api_;
  const std::string name_, group_;
  std::string ns_;
  OnChange cb_;
  Stopper stop_;
  Mutex mu_;
  CondVar cv_;
  std::optional<internal::PoolSpec> pool_ GUARDED_BY(mu_);
  std::uint64_t pool_gen_ GUARDED_BY(mu_) = 0;
  bool pool_changed_ GUARDED_BY(mu_) = false;
  std::vector<Connection*> open_ GUARDED_BY(mu_);
  Connection* pods_conn_ GUARDED_BY(mu_) = nullptr;
  // The pods thread's.
  bool published_ = false;
  std::vector<config::BackendConfig> last_;
  std::thread pool_thread_, pods_thread_;
};

}  // namespace

Result<std::unique_ptr<Source>> make_source(const config::Config& cfg, OnChange on_change) {
  if (!cfg.endpoints_file.empty()) {
    auto s = std::make_unique<FileSource>(cfg.endpoints_file, cfg.discovery_poll_interval,
                                          std::move(on_change));
    KVROUTE_TRY(s->load_now());
    return std::unique_ptr<Source>(std::move(s));
  }
  if (!cfg.pool_name.empty()) {
    KVROUTE_TRY(auto api, internal::locate_api_server(cfg.kubeconfig, cfg.kube_api_server));
    return std::unique_ptr<Source>(
        std::make_unique<KubeSource>(cfg, std::move(api), std::move(on_change)));
  }
  return std::unique_ptr<Source>();
}

}  // namespace kvroute::discovery
