#include "doctor/doctor.h"

#include <fmt/format.h>
#include <simdjson.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_future.hpp>
#include <cmath>
#include <ctime>
#include <iterator>
#include <map>
#include <random>
#include <set>

#include "common/json.h"
#include "common/mutex.h"
#include "http/client.h"
#include "kv_events/subscriber.h"
#include "metrics/prom_parser.h"
#include "tls/tls.h"

namespace kvroute::doctor {

namespace net = boost::asio;

std::string_view to_string(Severity s) {
  switch (s) {
    case Severity::kOk:
      return "ok";
    case Severity::kWarn:
      return "warn";
    case Severity::kFail:
      return "fail";
  }
  return "fail";
}

bool Report::failed() const {
  return std::any_of(findings.begin(), findings.end(),
                     [](const Finding& f) { return f.severity == Severity::kFail; });
}

std::vector<const Finding*> Report::of(std::string_view check) const {
  std::vector<const Finding*> out;
  for (const auto& f : findings) {
    if (f.check == check) out.push_back(&f);
  }
  return out;
}

namespace {

using Response = Expected<std::pair<int, std::string>, http::UpstreamFailure>;

// What the doctor learns of one engine.
struct Engine {
  std::string url;
  http::Endpoint ep;
  bool up = false;
  std::vector<std::pair<std::string, std::int64_t>> models;  // id, max_model_len (-1: unknown)
  std::string version;                                       // "" : no /version
  std::optional<std::int64_t> clock_skew_s;                  // Date header - local clock
  bool cache_info = false;
  std::string block_size, prefix_caching, hash_algo;
  double hits = 0, requests = 0;
};

struct Counters {
  double hits = 0, requests = 0;
};

std::string nonce() {
  std::random_device rd;
  return fmt::format("{:08x}{:08x}", rd(), rd());
}

// A prompt of many blocks, unique to this run.
std::string probe_prompt(std::string_view tag) {
  std::string p = fmt::format("kvroute doctor probe {}:", tag);
  for (int i = 0; i < 300; ++i) p += fmt::format(" w{}", i);
  return p;
}

std::string completion_body(std::string_view model, std::string_view prompt) {
  std::string b = R"({"model":")";
  append_json_escaped(b, model);
  b += R"(","prompt":")";
  append_json_escaped(b, prompt);
  b += R"(","max_tokens":1,"temperature":0})";
  return b;
}

class Doctor {
 public:
  Doctor(const Options& o, http::ConnectionPool& pool) : o_(o), pool_(pool) {
    if (!o.api_key.empty()) auth_.emplace_back("Authorization", "Bearer " + o.api_key);
  }

  http::Task<Report> run() {
    for (const auto& url : o_.engines) co_await learn(url);
    check_engines();
    for (auto& e : engines_) {
      if (e.up && e.prefix_caching != "False") co_await check_effective(e);
    }
    co_await check_tokenization();
    co_await check_kv_events();
    if (!o_.router.empty()) co_await check_router();
    co_return std::move(report_);
  }

 private:
  void add(std::string check, std::string target, Severity s, std::string message,
           std::string fix = {}) {
    report_.findings.push_back(
        {std::move(check), std::move(target), s, std::move(message), std::move(fix)});
  }

  // `clock_of`: records the answer's Date header against the local clock.
  http::Task<Response> call(const http::Endpoint& ep, std::string_view method,
                            std::string_view target, std::string_view body = {},
                            Engine* clock_of = nullptr) {
    http::Headers headers = auth_;
    if (!body.empty()) headers.emplace_back("Content-Type", "application/json");
    auto ex = co_await pool_.start(ep, method, target, headers, body);
    if (!ex) co_return make_unexpected(ex.error());
    if (clock_of != nullptr) {
      const std::string date(http::find_header(ex->headers(), "date"));
      std::tm tm{};
      if (!date.empty() && ::strptime(date.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm) != nullptr) {
        const std::int64_t theirs = ::timegm(&tm);
        const std::int64_t ours = std::chrono::duration_cast<std::chrono::seconds>(
                                      std::chrono::system_clock::now().time_since_epoch())
                                      .count();
        clock_of->clock_skew_s = theirs - ours;
      }
    }
    auto all = co_await ex->read_all(16u << 20);
    if (!all) co_return make_unexpected(all.error());
    co_return std::pair<int, std::string>(ex->status(), std::move(*all));
  }

  static Counters counters_of(std::string_view text, Engine* facts = nullptr) {
    Counters c;
    const auto parsed = metrics::parse_exposition(text);
    for (const auto& s : parsed.samples) {
      if (s.name == "vllm:prefix_cache_hits_total") c.hits += s.value;
      if (s.name == "vllm:request_success_total") c.requests += s.value;
      if (facts != nullptr && s.name == "vllm:cache_config_info") {
        facts->cache_info = true;
        facts->block_size = std::string(s.label("block_size"));
        facts->prefix_caching = std::string(s.label("enable_prefix_caching"));
        facts->hash_algo = std::string(s.label("prefix_caching_hash_algo"));
      }
    }
    return c;
  }

  http::Task<std::optional<Counters>> scrape(const Engine& e) {
    auto r = co_await call(e.ep, "GET", "/metrics");
    if (!r || r->first != 200) co_return std::nullopt;
    co_return counters_of(r->second);
  }

  http::Task<void> learn(const std::string& url) {
    Engine e;
    e.url = url;
    auto ep = http::parse_http_url(url);
    if (!ep) {
      add("reachable", url, Severity::kFail, ep.error().message, "give the engine's base URL");
      engines_.push_back(std::move(e));
      co_return;
    }
    e.ep = *ep;
    auto health = co_await call(e.ep, "GET", "/health", {}, &e);
    auto models = co_await call(e.ep, "GET", "/v1/models");
    if (!health || health->first != 200 || !models || models->first != 200) {
      const std::string why = !health   ? health.error().message
                              : !models ? models.error().message
                                        : fmt::format("GET /health {}, GET /v1/models {}",
                                                      health->first, models ? models->first : 0);
      add("reachable", url, Severity::kFail, why,
          "start the engine or fix its address; the checks below skip it");
      engines_.push_back(std::move(e));
      co_return;
    }
    simdjson::dom::parser parser;
    simdjson::dom::element doc;
    if (parser.parse(models->second).get(doc) == simdjson::SUCCESS) {
      simdjson::dom::array data;
      if (doc["data"].get(data) == simdjson::SUCCESS) {
        for (auto m : data) {
          std::string_view id;
          if (m["id"].get(id) != simdjson::SUCCESS) continue;
          std::int64_t len = -1;
          if (m["max_model_len"].get(len) != simdjson::SUCCESS) len = -1;
          e.models.emplace_back(std::string(id), len);
        }
      }
    }
    if (auto v = co_await call(e.ep, "GET", "/version"); v && v->first == 200) {
      simdjson::dom::element vd;
      std::string_view version;
      if (parser.parse(v->second).get(vd) == simdjson::SUCCESS &&
          vd["version"].get(version) == simdjson::SUCCESS)
        e.version = std::string(version);
    }
    if (auto m = co_await call(e.ep, "GET", "/metrics"); m && m->first == 200) {
      const Counters c = counters_of(m->second, &e);
      e.hits = c.hits;
      e.requests = c.requests;
    }
    e.up = !e.models.empty();
    if (e.up) {
      std::string names;
      for (const auto& [id, len] : e.models) names += (names.empty() ? "" : ", ") + id;
      add("reachable", url, Severity::kOk, "serves " + names);
    } else {
      add("reachable", url, Severity::kFail, "/v1/models lists no model",
          "check the engine's --served-model-name");
    }
    engines_.push_back(std::move(e));
  }

  void check_engines() {
    std::map<std::string, std::vector<std::string>> block_sizes, algos, versions;
    for (const auto& e : engines_) {
      if (!e.up) continue;
      if (!e.cache_info) {
        add("prefix-caching", e.url, Severity::kWarn,
            "no vllm:cache_config_info in /metrics: cannot tell whether prefix caching is on",
            "expose the engine's /metrics (vLLM serves it on its API port)");
      } else if (e.prefix_caching == "False") {
        add("prefix-caching", e.url, Severity::kFail,
            "prefix caching is disabled (vllm:cache_config_info enable_prefix_caching=\"False\"): "
            "every prompt is computed from scratch, whatever the router does",
            "remove --no-enable-prefix-caching from the engine's arguments");
      } else {
        add("prefix-caching", e.url, Severity::kOk, "enabled (vllm:cache_config_info)");
        block_sizes[e.block_size].push_back(e.url);
        algos[e.hash_algo].push_back(e.url);
      }
      versions[e.version.empty() ? "(no /version)" : e.version].push_back(e.url);
      if (e.clock_skew_s && std::abs(*e.clock_skew_s) > 5) {
        add("clock", e.url, Severity::kWarn,
            fmt::format("the engine's clock is {} s {} this machine's (its Date header)",
                        std::abs(*e.clock_skew_s), *e.clock_skew_s > 0 ? "ahead of" : "behind"),
            "run NTP (chrony) on the nodes: latency, TTFT and KV-event timestamps compared across "
            "machines are wrong by as much");
      } else if (e.clock_skew_s) {
        add("clock", e.url, Severity::kOk, "within 5 s of this machine's");
      }
    }
    const auto listing = [](const std::map<std::string, std::vector<std::string>>& m) {
      std::string out;
      for (const auto& [k, urls] : m) {
        out += (out.empty() ? "" : "; ") + k + ": ";
        for (std::size_t i = 0; i < urls.size(); ++i) out += (i ? ", " : "") + urls[i];
      }
      return out;
    };
    if (block_sizes.size() > 1) {
      add("block-size", "engines", Severity::kFail,
          "engines use different KV block sizes (" + listing(block_sizes) +
              "): one prefix index cannot describe them",
          "give every engine the same --block-size, and the router the same routing.blockSize");
    } else if (block_sizes.size() == 1) {
      const std::string bs = block_sizes.begin()->first;
      if (bs != std::to_string(o_.block_size)) {
        add("block-size", "engines", Severity::kWarn,
            fmt::format("engines use {}-token blocks, the router (--block-size) {}: with a "
                        "tokenizer or KV events its block hashes match none of the engines' blocks",
                        bs, o_.block_size),
            fmt::format("set the router's routing.blockSize: {} (and doctor's --block-size)", bs));
      } else {
        add("block-size", "engines", Severity::kOk, bs + "-token blocks everywhere");
      }
    }
    if (algos.size() > 1) {
      add("hash-algorithm", "engines", Severity::kWarn,
          "engines hash blocks differently (" + listing(algos) +
              "): their KV events name the same prefix differently",
          "give every engine the same --prefix-caching-hash-algo (and PYTHONHASHSEED)");
    }
    if (versions.size() > 1) {
      add("version", "engines", Severity::kWarn,
          "engines run different versions (" + listing(versions) + ")",
          "roll the deployment to one version: metrics, events and hashing change between "
          "releases");
    } else if (versions.size() == 1) {
      add("version", "engines", Severity::kOk, "one version: " + versions.begin()->first);
    }
  }

  // A repeated prompt sent straight to the engine must find its blocks cached.
  http::Task<void> check_effective(Engine& e) {
    if (e.models.empty()) co_return;
    const std::string body = completion_body(e.models.front().first, probe_prompt(nonce()));
    auto first = co_await call(e.ep, "POST", "/v1/completions", body);
    if (!first || first->first != 200) {
      add("prefix-caching-effective", e.url, Severity::kWarn,
          "a probe completion failed: " +
              (first ? fmt::format("HTTP {}", first->first) : first.error().message),
          "check the engine's logs");
      co_return;
    }
    const auto before = co_await scrape(e);
    auto second = co_await call(e.ep, "POST", "/v1/completions", body);
    const auto after = co_await scrape(e);
    std::int64_t cached = -1;
    if (second && second->first == 200) {
      simdjson::dom::parser parser;
      simdjson::dom::element doc;
      if (parser.parse(second->second).get(doc) == simdjson::SUCCESS)
        if (doc["usage"]["prompt_tokens_details"]["cached_tokens"].get(cached) != simdjson::SUCCESS)
          cached = -1;
    }
    // The request's own cached tokens when the engine reports them (other traffic moves the
    // engine-wide counter); else the counter.
    const double hits = cached >= 0       ? static_cast<double>(cached)
                        : before && after ? after->hits - before->hits
                                          : -1;
    if (hits > 0) {
      add("prefix-caching-effective", e.url, Severity::kOk,
          fmt::format("a repeated prompt found {} cached tokens", hits));
    } else if (hits < 0) {
      add("prefix-caching-effective", e.url, Severity::kWarn,
          "cannot tell: no vllm:prefix_cache_hits_total and no usage.prompt_tokens_details",
          "expose /metrics or start vLLM with --enable-prompt-tokens-details");
    } else {
      add("prefix-caching-effective", e.url, Severity::kFail,
          "prefix caching reports enabled, but the same prompt sent twice found nothing cached "
          "(vllm:prefix_cache_hits_total did not move): a KV-transfer connector "
          "(--kv-transfer-config) that bypasses the local prefix cache does this, as does a KV "
          "cache too small for one prompt",
          "remove the connector, or configure it to keep the local cache (e.g. a MultiConnector "
          "with the local cache first); then run the doctor again");
    }
  }

  // Engines that serve one model name must be the same model: same length limit, same token ids.
  http::Task<void> check_tokenization() {
    std::map<std::string, std::vector<Engine*>> by_model;
    for (auto& e : engines_) {
      for (const auto& [id, len] : e.models) by_model[id].push_back(&e);
    }
    for (const auto& [model, engines] : by_model) {
      if (engines.size() < 2) continue;
      std::string body = R"({"model":")";
      append_json_escaped(body, model);
      body += R"(","prompt":"The kvroute doctor compares tokenizers: héllo wörld 12345."})";
      std::map<std::string, std::vector<std::string>> seen;  // token ids -> engines
      std::set<std::int64_t> lens;
      for (Engine* e : engines) {
        for (const auto& [id, len] : e->models) {
          if (id == model) lens.insert(len);
        }
        auto r = co_await call(e->ep, "POST", "/tokenize", body);
        if (!r || r->first != 200) continue;  // older engines: nothing to compare
        simdjson::dom::parser parser;
        simdjson::dom::element doc;
        simdjson::dom::array tokens;
        if (parser.parse(r->second).get(doc) != simdjson::SUCCESS ||
            doc["tokens"].get(tokens) != simdjson::SUCCESS)
          continue;
        std::string ids;
        for (auto t : tokens) {
          std::int64_t v = 0;
          if (t.get(v) == simdjson::SUCCESS) ids += std::to_string(v) + ",";
        }
        seen[ids].push_back(e->url);
      }
      if (seen.size() > 1 || lens.size() > 1) {
        add("same-model", model, Severity::kFail,
            fmt::format("engines serving '{}' are not the same model: {}", model,
                        seen.size() > 1 ? "they tokenize the same text differently"
                                        : "their max_model_len differ"),
            "serve one model per name (--served-model-name); the router's cache picture and "
            "tokenizer assume one");
      } else if (!seen.empty()) {
        add("same-model", model, Severity::kOk,
            fmt::format("{} engines tokenize alike", seen.begin()->second.size()));
      }
    }
  }

  // With KV-event endpoints: the same new prompt sent to each engine must come back as BlockStored
  // events from it (else the events are silent), and its first block must hash alike everywhere
  // (else PYTHONHASHSEED or the hash algorithm differ, and one prefix has several names).
  http::Task<void> check_kv_events() {
    std::vector<std::pair<Engine*, std::string>> with;  // engine, endpoint
    for (std::size_t i = 0; i < engines_.size() && i < o_.kv_events.size(); ++i) {
      if (engines_[i].up && !o_.kv_events[i].empty() && !engines_[i].models.empty())
        with.emplace_back(&engines_[i], o_.kv_events[i]);
    }
    if (with.empty()) co_return;
    struct Seen {
      Mutex mu;
      std::map<std::string, std::set<std::uint64_t>> roots GUARDED_BY(mu);  // first-block hashes
      std::map<std::string, int> batches GUARDED_BY(mu);
    };
    auto seen = std::make_shared<Seen>();
    kv_events::SubscriberCallbacks cb;
    cb.on_batch = [seen](const std::string& id, std::uint64_t, const kv_events::EventBatch& b) {
      MutexLock lock(seen->mu);
      ++seen->batches[id];
      for (const auto& ev : b.events) {
        if (const auto* st = std::get_if<kv_events::BlockStored>(&ev)) {
          if (!st->parent_block_hash && !st->block_hashes.empty())
            seen->roots[id].insert(st->block_hashes.front());
        }
      }
    };
    auto sub = kv_events::ZmqEventSubscriber::create({}, cb);
    if (!sub) {
      add("kv-events", "engines", Severity::kWarn, sub.error().message);
      co_return;
    }
    for (const auto& [e, endpoint] : with) {
      if (auto ok = (*sub)->add_engine({e->url, endpoint, ""}); !ok)
        add("kv-events", e->url, Severity::kFail, ok.error().message, "fix the endpoint");
    }
    // Phase 1, per engine: a new prompt must produce events. A SUB socket receives only what is
    // published after it connected, so up to three prompts are sent, a second apart.
    std::vector<std::pair<Engine*, std::string>> publishing;
    for (const auto& [e, endpoint] : with) {
      bool arrived = false;
      bool answered = false;
      for (int attempt = 0; attempt < 3 && !arrived; ++attempt) {
        const std::string warm =
            completion_body(e->models.front().first, probe_prompt("kv-warm-" + nonce()));
        auto r = co_await call(e->ep, "POST", "/v1/completions", warm);
        answered = answered || (r && r->first == 200);
        for (int i = 0; i < 10 && !arrived; ++i) {
          net::steady_timer wait(co_await net::this_coro::executor, std::chrono::milliseconds(100));
          co_await wait.async_wait(http::use_task_tuple);
          MutexLock lock(seen->mu);
          arrived = seen->batches[e->url] > 0;
        }
      }
      if (!answered) {
        add("kv-events", e->url, Severity::kWarn,
            "the probe completions failed; events not checked");
      } else if (!arrived) {
        add("kv-events", e->url, Severity::kFail,
            "KV events are configured (" + endpoint +
                ") but none arrived within 3 s of storing three new prompts",
            "check the engine's --kv-events-config (enable_kv_cache_events, publisher zmq, the "
            "endpoint bound on this address and port) and the router's --kv-events");
      } else {
        add("kv-events", e->url, Severity::kOk, "BlockStored events arrive from " + endpoint);
        publishing.emplace_back(e, endpoint);
      }
    }
    // Phase 2: one new prompt per model on every publishing engine of that model; its first block
    // must hash alike on all of them (engines of different models hash differently by design).
    std::map<std::string, std::vector<Engine*>> by_model;
    for (const auto& [e, endpoint] : publishing) by_model[e->models.front().first].push_back(e);
    std::map<std::string, std::map<std::string, std::set<std::uint64_t>>> roots;  // model, url
    for (const auto& [model, engines] : by_model) {
      if (engines.size() < 2) continue;
      const std::string shared = completion_body(model, probe_prompt("kv-" + nonce()));
      for (Engine* e : engines) {
        {
          MutexLock lock(seen->mu);
          seen->roots[e->url].clear();
        }
        auto r = co_await call(e->ep, "POST", "/v1/completions", shared);
        bool arrived = false;
        for (int i = 0; i < 30 && r && !arrived; ++i) {
          net::steady_timer wait(co_await net::this_coro::executor, std::chrono::milliseconds(100));
          co_await wait.async_wait(http::use_task_tuple);
          MutexLock lock(seen->mu);
          arrived = !seen->roots[e->url].empty();
          if (arrived) roots[model][e->url] = seen->roots[e->url];
        }
      }
    }
    (*sub)->stop();
    for (const auto& [model, per_engine] : roots) {
      if (per_engine.size() < 2) continue;
      // The probe's first block is in every engine's set when they hash alike.
      std::set<std::uint64_t> common = per_engine.begin()->second;
      for (const auto& [url, set] : per_engine) {
        std::set<std::uint64_t> both;
        std::set_intersection(common.begin(), common.end(), set.begin(), set.end(),
                              std::inserter(both, both.begin()));
        common = std::move(both);
      }
      if (common.empty()) {
        add("hash-seed", model, Severity::kFail,
            "the same prompt's first block has a different hash on each engine serving '" + model +
                "': their KV events name one prefix differently, so the router's precise index "
                "cannot match them",
            "give every engine the same PYTHONHASHSEED (and --prefix-caching-hash-algo)");
      } else {
        add("hash-seed", model, Severity::kOk,
            fmt::format("{} engines serving '{}' hash one prompt alike", per_engine.size(), model));
      }
    }
  }

  // Which engine served the last request: the one whose vllm:request_success_total moved.
  http::Task<int> served_by(std::vector<Counters>& last) {
    int who = -1;
    int moved = 0;
    for (std::size_t i = 0; i < engines_.size(); ++i) {
      if (!engines_[i].up) continue;
      auto c = co_await scrape(engines_[i]);
      if (!c) continue;
      if (c->requests > last[i].requests) {
        who = static_cast<int>(i);
        ++moved;
      }
      last[i] = *c;
    }
    co_return moved == 1 ? who : -1;
  }

  http::Task<void> check_router() {
    auto ep = http::parse_http_url(o_.router);
    if (!ep) {
      add("router", o_.router, Severity::kFail, ep.error().message);
      co_return;
    }
    std::string model;
    for (const auto& e : engines_) {
      if (e.up && !e.models.empty()) {
        model = e.models.front().first;
        break;
      }
    }
    if (model.empty()) {
      add("router", o_.router, Severity::kWarn, "no engine answered: router checks skipped");
      co_return;
    }
    std::vector<Counters> last(engines_.size());
    for (std::size_t i = 0; i < engines_.size(); ++i) {
      if (!engines_[i].up) continue;
      auto c = co_await scrape(engines_[i]);
      if (c) last[i] = *c;
    }
    const std::vector<Counters> at_start = last;
    const auto predicted_before = co_await router_prediction();
    // A session (a conversation: each turn's prompt extends the last, with the session header)
    // must stay on one engine, whether the router follows the header or the shared prefix.
    const std::string session = "kvroute-doctor-" + nonce();
    std::string conversation = probe_prompt(session);
    std::set<int> where;
    int unknown = 0;
    for (int i = 0; i < 4; ++i) {
      http::Headers headers = auth_;
      headers.emplace_back("Content-Type", "application/json");
      headers.emplace_back(o_.session_header, session);
      conversation += fmt::format(" user turn {}: tell me more. assistant: more.", i);
      const std::string body = completion_body(model, conversation);
      auto ex = co_await pool_.start(*ep, "POST", "/v1/completions", headers, body);
      if (!ex || ex->status() != 200) {
        add("router", o_.router, Severity::kFail,
            ex ? fmt::format("a completion through the router answered {}", ex->status())
               : "the router is unreachable: " + ex.error().message,
            "check the router's address, API key and logs");
        co_return;
      }
      (void)co_await ex->read_all(1u << 20);
      const int who = co_await served_by(last);
      if (who < 0) {
        ++unknown;
      } else {
        where.insert(who);
      }
    }
    if (where.size() > 1) {
      add("session-stickiness", o_.router, Severity::kFail,
          fmt::format("4 requests of one session ({}: {}) went to {} engines", o_.session_header,
                      session, where.size()),
          "route sessions with affinity: kvroute's default policy or session-affinity, and the "
          "clients' session header in routing.sessionHeader");
    } else if (unknown > 0) {
      add("session-stickiness", o_.router, Severity::kWarn,
          "could not tell which engine served each request (other traffic, or engines outside "
          "the list)",
          "run the doctor on a quiet deployment, listing every engine behind the router");
    } else {
      add("session-stickiness", o_.router, Severity::kOk, "a session stayed on one engine");
    }
    // A repeated prompt must go back to the engine that holds it.
    const std::string body = completion_body(model, probe_prompt(nonce()));
    int served[2] = {-2, -2};
    for (int i = 0; i < 2; ++i) {
      auto r = co_await call(*ep, "POST", "/v1/completions", body);
      if (!r || r->first != 200) co_return;
      served[i] = co_await served_by(last);
    }
    const int first = served[0];
    const int second = served[1];
    if (first >= 0 && second >= 0 && first != second) {
      add("prefix-routing", o_.router, Severity::kFail,
          fmt::format("the same prompt went to {} and then to {}: the router does not route by "
                      "prefix",
                      engines_[static_cast<std::size_t>(first)].url,
                      engines_[static_cast<std::size_t>(second)].url),
          "use a cache-aware policy (kvroute, the default)");
    } else if (first >= 0 && second == first) {
      add("prefix-routing", o_.router, Severity::kOk, "a repeated prompt returned to its engine");
    }
    // Over the probes above: the router's predicted cached tokens against the engines' hits.
    const auto predicted_after = co_await router_prediction();
    double found = 0;
    for (std::size_t i = 0; i < engines_.size(); ++i) found += last[i].hits - at_start[i].hits;
    if (!predicted_before || !predicted_after) {
      add("predicted-hits", o_.router, Severity::kWarn,
          "no kvroute_predicted_cached_tokens_total at the router's /metrics",
          "give --router-metrics (the admin port), or the router is not kvroute");
      co_return;
    }
    const double predicted = predicted_after->first - predicted_before->first;
    const double routed = predicted_after->second - predicted_before->second;
    if (routed <= 0) {
      add("predicted-hits", o_.router, Severity::kWarn,
          "the router's policy predicts no hits (it routes without looking at the prompt: "
          "round-robin, session-affinity, least-inflight)",
          "a cache-aware policy (kvroute, the default) predicts and routes for hits");
    } else if (found > 0 && predicted <= 0) {
      add("predicted-hits", o_.router, Severity::kFail,
          fmt::format("the engines found {} cached tokens over the probes, the router predicted "
                      "none: its picture of the caches does not match the engines' blocks",
                      found),
          "give the router the engines' tokenizer and block size (routing.tokenizer, "
          "routing.blockSize), or KV events for precise routing");
    } else if (predicted > 0 && found <= 0) {
      add("predicted-hits", o_.router, Severity::kFail,
          fmt::format("the router predicted {} cached tokens over the probes, the engines found "
                      "none: it routes for hits that do not happen",
                      predicted),
          "check the engines' prefix caching (above) and evictions the router cannot see");
    } else {
      add("predicted-hits", o_.router, Severity::kOk,
          fmt::format("router predicted {} cached tokens, engines found {}", predicted, found));
    }
  }

  // The router's kvroute_predicted_cached_tokens_total and kvroute_prompt_tokens_total (none: not
  // kvroute, or its metrics are elsewhere). One router: behind a Service of several replicas the
  // probes spread over them; give one pod's address.
  http::Task<std::optional<std::pair<double, double>>> router_prediction() {
    auto ep = http::parse_http_url(o_.router_metrics.empty() ? o_.router : o_.router_metrics);
    if (!ep) co_return std::nullopt;
    auto r = co_await call(*ep, "GET", "/metrics");
    if (!r || r->first != 200) co_return std::nullopt;
    std::optional<std::pair<double, double>> v;
    for (const auto& smp : metrics::parse_exposition(r->second).samples) {
      if (smp.name == "kvroute_predicted_cached_tokens_total") {
        if (!v) v.emplace(0, 0);
        v->first += smp.value;
      } else if (smp.name == "kvroute_prompt_tokens_total") {
        if (!v) v.emplace(0, 0);
        v->second += smp.value;
      }
    }
    co_return v;
  }

  const Options& o_;
  http::ConnectionPool& pool_;
  http::Headers auth_;
  std::vector<Engine> engines_;
  Report report_;
};

}  // namespace

Report diagnose(const Options& options) {
  net::io_context ioc;
  http::ClientOptions co;
  co.connect_timeout = std::min(options.timeout, std::chrono::milliseconds(5000));
  co.first_byte_timeout = options.timeout;
  co.idle_timeout = options.timeout;
  if (auto ctx = tls::make_client_context({})) co.tls = *ctx;
  http::ConnectionPool pool(ioc.get_executor(), co);
  Doctor doctor(options, pool);
  auto body = [&]() -> http::Task<Report> {
    Report r = co_await doctor.run();
    pool.close_idle();
    co_return r;
  };
  auto fut = net::co_spawn(ioc, body(), net::use_future);
  ioc.run();
  return fut.get();
}

std::string to_text(const Report& report) {
  std::string out;
  for (const auto& f : report.findings) {
    out += fmt::format("[{:4}] {:<26} {}\n       {}\n", to_string(f.severity), f.check, f.target,
                       f.message);
    if (!f.fix.empty()) out += fmt::format("       fix: {}\n", f.fix);
  }
  const auto count = [&](Severity s) {
    return std::count_if(report.findings.begin(), report.findings.end(),
                         [s](const Finding& f) { return f.severity == s; });
  };
  out += fmt::format("{} ok, {} warnings, {} failures\n", count(Severity::kOk),
                     count(Severity::kWarn), count(Severity::kFail));
  return out;
}

std::string to_json(const Report& report) {
  std::string out = R"({"failed":)";
  out += report.failed() ? "true" : "false";
  out += R"(,"findings":[)";
  bool first = true;
  for (const auto& f : report.findings) {
    if (!first) out += ',';
    first = false;
    out += R"({"check":")";
    append_json_escaped_valid_utf8(out, f.check);
    out += R"(","target":")";
    append_json_escaped_valid_utf8(out, f.target);
    out += R"(","severity":")";
    out += to_string(f.severity);
    out += R"(","message":")";
    append_json_escaped_valid_utf8(out, f.message);
    out += R"(","fix":")";
    append_json_escaped_valid_utf8(out, f.fix);
    out += R"("})";
  }
  out += "]}\n";
  return out;
}

}  // namespace kvroute::doctor
