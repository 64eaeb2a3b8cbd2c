#include "proxy/proxy.h"

#include <simdjson.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/container/small_vector.hpp>
#include <optional>
#include <set>
#include <unordered_map>

#include "common/hash.h"
#include "common/log.h"
#include "http/client.h"
#include "http/offload.h"
#include "http/server.h"
#include "http/sse.h"
#include "kv_index/precise_scorer.h"
#include "metrics/prom_parser.h"
#include "openai/error.h"
#include "openai/request.h"
#include "prompt/prompt.h"
#include "proxy/internal/fd_budget.h"
#include "routing/policy.h"
#include "routing/scheduler.h"

namespace kvroute::proxy {

namespace net = boost::asio;
using http::Headers;
using http::Request;
using http::ResponseWriter;
using routing::Backend;
using Clock = std::chrono::steady_clock;
constexpr auto kTuple = http::use_task_tuple;
// Request bodies from this size on are parsed and tokenized off the network thread.
constexpr std::size_t kOffloadBodyBytes = 256 * 1024;

namespace {
double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}
std::atomic<std::uint64_t> next_proxy_id{1};
}  // namespace

struct Proxy::Impl {
  // Names this proxy in thread-local caches (an address could be reused by a later proxy).
  const std::uint64_t id = next_proxy_id.fetch_add(1);
  config::Config cfg;
  std::vector<std::unique_ptr<Backend>> owned;
  std::vector<Backend*> backends;
  std::unique_ptr<routing::Policy> policy;
  std::shared_ptr<routing::RoutingContext> routing_ctx;
  std::shared_ptr<const prompt::PromptEncoder>
      encoder;  // models without their own; null: character blocks
  // routing.models: per-model tokenizers (immutable after start, read from every thread).
  std::unordered_map<std::string, std::shared_ptr<const prompt::PromptEncoder>> model_encoders;
  std::shared_ptr<kv_index::PreciseIndexer> precise;  // null: no backend publishes KV events
  metrics::GaugeFamily* precise_gauges = nullptr;
  // Parses and tokenizes request bodies of kOffloadBodyBytes or more, so that a prompt of many
  // megabytes does not stall the other connections of its worker. Outlives `server`.
  net::thread_pool offload{2};
  std::unique_ptr<http::Server> server;
  std::vector<std::unique_ptr<http::ConnectionPool>> pools;  // one per worker thread

  metrics::Registry reg;
  metrics::CounterFamily* requests = nullptr;
  metrics::GaugeFamily* inflight = nullptr;
  metrics::GaugeFamily* healthy = nullptr;
  metrics::HistogramFamily* latency = nullptr;
  metrics::HistogramFamily* ttfb = nullptr;
  metrics::CounterFamily* upstream_errors = nullptr;
  metrics::CounterFamily* retries = nullptr;
  metrics::CounterFamily* decisions = nullptr;
  metrics::CounterFamily* client_errors = nullptr;

  // Hot cells resolved once: [endpoint][backend] for 200s, [endpoint] for the histograms.
  std::vector<metrics::Counter*> ok_cells[2];
  metrics::Histogram* latency_cells[2] = {nullptr, nullptr};
  metrics::Histogram* ttfb_cells[2] = {nullptr, nullptr};
  static int endpoint_slot(std::string_view label) { return label == "/v1/completions" ? 0 : 1; }

  metrics::Counter& decision_cell(std::string_view reason) {
    // Per thread and per proxy (a test may run several proxies on one thread, one after another).
    struct Entry {
      std::uint64_t owner;
      std::string reason;
      metrics::Counter* cell;
    };
    thread_local std::vector<Entry> cache;
    for (auto& e : cache) {
      if (e.owner == id && e.reason == reason) return *e.cell;
    }
    auto* c = &decisions->with({policy->name(), reason});
    cache.push_back({id, std::string(reason), c});
    return *c;
  }

  void resolve_cells() {
    const char* eps[2] = {"/v1/completions", "/v1/chat/completions"};
    for (int e = 0; e < 2; ++e) {
      for (auto* b : backends) ok_cells[e].push_back(&requests->with({eps[e], "200", b->name}));
      latency_cells[e] = &latency->with({eps[e]});
      ttfb_cells[e] = &ttfb->with({eps[e]});
    }
  }

  void declare_metrics() {
    requests = &reg.counter("kvroute_requests_total",
                            "Requests answered, by endpoint, status code and backend.",
                            {"endpoint", "code", "backend"});
    inflight = &reg.gauge("kvroute_backend_inflight_requests", "Requests in flight per backend.",
                          {"backend"});
    healthy = &reg.gauge("kvroute_backend_healthy",
                         "1 when the backend is healthy and not ejected.", {"backend"});
    latency = &reg.histogram("kvroute_request_duration_seconds",
                             "End-to-end request latency at the router.",
                             metrics::latency_buckets(), {"endpoint"});
    ttfb = &reg.histogram(
        "kvroute_time_to_first_byte_seconds",
        "Time from request arrival to the first response body byte from the backend.",
        metrics::latency_buckets(), {"endpoint"});
    upstream_errors = &reg.counter("kvroute_upstream_errors_total",
                                   "Upstream failures by backend and kind.", {"backend", "kind"});
    retries = &reg.counter("kvroute_retries_total",
                           "Requests retried on another backend before any byte.", {"backend"});
    decisions = &reg.counter("kvroute_routing_decisions_total",
                             "Routing decisions by policy and reason.", {"policy", "reason"});
    client_errors = &reg.counter("kvroute_client_errors_total",
                                 "Requests rejected by the router itself.", {"code"});
    precise_gauges =
        &reg.gauge("kvroute_kv_events",
                   "KV-event index counters (cumulative, read at scrape time).", {"counter"});
  }

  http::ConnectionPool& pool() {
    return *pools[static_cast<std::size_t>(std::max(0, http::current_worker()))];
  }
  // Health probes and /metrics scrapes have pools of their own: a probe must not take (and find
  // dead) the connections requests use, nor leave its own for them.
  std::unique_ptr<http::ConnectionPool> probe_pool;   // worker 0's thread
  std::unique_ptr<http::ConnectionPool> scrape_pool;  // worker n-1's thread
  // Closes every worker's idle connections to `b` (it failed a probe or was ejected).
  void drop_idle(const Backend& b) {
    for (std::size_t i = 0; i < pools.size(); ++i) {
      net::post(server->executor(static_cast<int>(i)),
                [p = pools[i].get(), ep = b.endpoint] { p->drop_idle(ep); });
    }
  }

  // Upstream exchanges in progress, per worker (touched only on its thread): at the end of the
  // shutdown grace period they are cut, and each ends its response the way a broken upstream does.
  struct InFlight {
    InFlight(InFlight*& head, http::CancelToken* t) : head_(head), token(t), next(head) {
      if (next) next->prev = this;
      head_ = this;
    }
    ~InFlight() {
      if (prev)
        prev->next = next;
      else
        head_ = next;
      if (next) next->prev = prev;
    }
    InFlight(const InFlight&) = delete;
    InFlight& operator=(const InFlight&) = delete;
    InFlight*& head_;
    http::CancelToken* token;
    http::Exchange* ex = nullptr;  // once the response head came
    bool cut = false;
    InFlight* prev = nullptr;
    InFlight* next;
  };
  struct alignas(64) FlightList {
    InFlight* head = nullptr;
  };
  std::vector<FlightList> flights;  // one per worker
  InFlight*& in_flight() {
    return flights[static_cast<std::size_t>(std::max(0, http::current_worker()))].head;
  }
  void cut_in_flight() {
    for (std::size_t i = 0; i < flights.size(); ++i) {
      net::post(server->executor(static_cast<int>(i)), [this, i] {
        for (InFlight* f = flights[i].head; f; f = f->next) {
          f->cut = true;
          if (f->ex)
            f->ex->cancel();
          else
            f->token->cancel();
        }
      });
    }
  }

  using Candidates = boost::container::small_vector<Backend*, 16>;  // no allocation for up to 16
  struct CandidateError {
    int status;
    std::string message;
    std::string_view param;
  };
  // Available backends that serve the request's model; else the error to answer (404, 503).
  std::optional<CandidateError> select_candidates(const openai::ParsedRequest& req,
                                                  std::int64_t now, Candidates& out) const;
  // Relays an SSE response's events as they complete; returns the time to its first byte.
  http::Task<double> relay_stream(http::Exchange& ex, ResponseWriter& w, InFlight& flight,
                                  routing::RouteRequest& rr, Backend& b, Clock::time_point t0,
                                  std::string_view method, std::string_view label);
  void record_outcome(std::string_view label, int status, const Backend& b, bool gone,
                      double total_s, double ttfb_s);
  static void pass_response_headers(const Headers& upstream, Headers& out);
  const prompt::PromptEncoder* encoder_for(const std::string& model) const;

  http::Task<void> handle(Request& req, ResponseWriter& w);
  http::Task<void> proxy_openai(Request& req, ResponseWriter& w, openai::Endpoint ep,
                                std::string_view label);
  http::Task<void> send_error(ResponseWriter& w, int status, std::string message,
                              std::string_view param = {});
  http::Task<void> health_loop();
  http::Task<void> scrape_loop();
  void scrape(Backend& b, std::string_view text);
  // An engine's KV capacity in the router's blocks: the approximate index forgets past it, the
  // TTFT cost counts memory against it.
  void set_kv_capacity(Backend& b, std::uint64_t blocks) {
    routing_ctx->prefix.set_capacity(static_cast<std::size_t>(b.index), blocks);
    b.kv_capacity_tokens.store(static_cast<std::int64_t>(blocks * cfg.block_size),
                               std::memory_order_relaxed);
  }
  void record_failure(Backend& b, const http::UpstreamFailure& f);
  std::vector<std::string> known_models() const;
};

http::Task<void> Proxy::Impl::send_error(ResponseWriter& w, int status, std::string message,
                                         std::string_view param) {
  client_errors->with({std::to_string(status)}).inc();
  std::string body = openai::error_body(status, message);
  if (!param.empty()) {
    // Put the offending parameter in "param" (OpenAI's shape).
    auto pos = body.find("\"param\":null");
    if (pos != std::string::npos) {
      std::string p = "\"param\":\"";
      http::append_json_escaped(p, param);
      p += '"';
      body.replace(pos, 12, p);
    }
  }
  const Headers none;
  co_await w.send(status, "application/json", std::move(body), none);
}

std::vector<std::string> Proxy::Impl::known_models() const {
  std::set<std::string> all;
  for (auto* b : backends) {
    if (const auto* m = b->models.get()) all.insert(m->begin(), m->end());
  }
  return {all.begin(), all.end()};
}

void Proxy::Impl::record_failure(Backend& b, const http::UpstreamFailure& f) {
  upstream_errors->with({b.name, std::string(http::to_string(f.kind))}).inc();
  if (f.kind == http::UpstreamError::kCancelled) return;
  int n = b.consecutive_failures.fetch_add(1) + 1;
  if (n >= cfg.failure_threshold) {
    b.ejected_until_ms.store(routing::steady_now_ms() + cfg.ejection_time.count());
    drop_idle(b);
    spdlog::warn("backend {} ejected for {} ms after {} consecutive failures (last: {})", b.name,
                 cfg.ejection_time.count(), n, f.message);
  }
}

http::Task<void> Proxy::Impl::handle(Request& req, ResponseWriter& w) {
  const std::string_view path = req.path();
  const bool get = req.method == "GET" || req.method == "HEAD";
  const bool post = req.method == "POST";
  const Headers none;
  if (path == "/v1/completions" || path == "/v1/chat/completions") {
    if (!post) {
      std::string msg = "use POST for " + std::string(path);
      co_await send_error(w, 405, std::move(msg));
      co_return;
    }
    co_await proxy_openai(req, w,
                          path == "/v1/completions" ? openai::Endpoint::kCompletions
                                                    : openai::Endpoint::kChatCompletions,
                          path);
    co_return;
  }
  if (path == "/health" && get) {
    std::string body = R"({"status":"ok"})";
    co_await w.send(200, "application/json", std::move(body), none);
  } else if (path == "/ready" && get) {
    const auto now = routing::steady_now_ms();
    int n = 0;
    for (auto* b : backends) n += b->available(now) ? 1 : 0;
    std::string body =
        fmt::format(R"({{"ready":{},"healthy_backends":{}}})", n > 0 ? "true" : "false", n);
    co_await w.send(n > 0 ? 200 : 503, "application/json", std::move(body), none);
  } else if (path == "/metrics" && get) {
    const auto now = routing::steady_now_ms();
    for (auto* b : backends) {
      healthy->with({b->name}).set(b->available(now) ? 1 : 0);
      inflight->with({b->name}).set(b->inflight.load());
    }
    if (precise) {
      const auto st = precise->stats(false);
      const std::pair<const char*, std::uint64_t> rows[] = {
          {"batches", st.batches},
          {"blocks_stored", st.index.blocks_stored},
          {"blocks_removed", st.index.blocks_removed},
          {"unknown_removals", st.index.unknown_removals},
          {"resets", st.resets},
          {"backend_down_clears", st.backend_down_clears},
          {"stale_reports", st.stale_reports},
          {"stale_engines", st.stale_engines},
          {"entries", st.entries},
          {"received_messages", st.subscriber.received},
          {"malformed_messages", st.subscriber.malformed},
          {"unknown_events", st.subscriber.unknown_events},
          {"gaps", st.subscriber.gaps},
          {"replay_requests", st.subscriber.replay_requests},
          {"replayed_batches", st.subscriber.replayed},
          {"replay_failures", st.subscriber.replay_failures},
      };
      for (const auto& [name, value] : rows) {
        precise_gauges->with({name}).set(static_cast<double>(value));
      }
    }
    std::string body = reg.render();
    co_await w.send(200, "text/plain; version=0.0.4; charset=utf-8", std::move(body), none);
  } else if (path == "/v1/models" && get) {
    std::string body = R"({"object":"list","data":[)";
    bool first = true;
    for (const auto& m : known_models()) {
      if (!first) body += ',';
      first = false;
      body += R"({"id":")";
      http::append_json_escaped(body, m);
      body += R"(","object":"model","created":0,"owned_by":"kvroute"})";
    }
    body += "]}";
    co_await w.send(200, "application/json", std::move(body), none);
  } else if (path == "/health" || path == "/ready" || path == "/metrics" || path == "/v1/models") {
    std::string msg = "use GET for " + std::string(path);
    co_await send_error(w, 405, std::move(msg));
  } else {
    std::string msg = "no route for " + std::string(path);
    co_await send_error(w, 404, std::move(msg));
  }
}

http::Task<void> Proxy::Impl::proxy_openai(Request& req, ResponseWriter& w, openai::Endpoint kind,
                                           std::string_view label) {
  const auto t0 = Clock::now();
  // Parsing and tokenizing take ~10 ms per megabyte: bigger bodies go to the offload threads.
  struct Prepared {
    Expected<openai::ParsedRequest, openai::ParseError> parsed;
    prompt::PromptBlocks blocks;
  };
  auto prepare = [this, kind, body = std::string_view(req.body)]() {
    Prepared p{openai::parse_request(kind, body), {}};
    if (p.parsed && policy->uses_prompt()) {
      p.blocks = prompt::prompt_blocks(*p.parsed, encoder_for(p.parsed->model), cfg.block_size,
                                       hash64(p.parsed->model));
    }
    return p;
  };
  // An if, not ?: with co_await in one arm, which GCC 12 compiles into a dangling frame.
  Prepared prep;
  if (req.body.size() >= kOffloadBodyBytes) {
    prep = co_await http::run_on(offload, prepare);
  } else {
    prep = prepare();
  }
  auto& parsed = prep.parsed;
  if (!parsed) {
    std::string msg = parsed.error().message;
    co_await send_error(w, 400, std::move(msg), parsed.error().param);
    co_return;
  }
  routing::RouteRequest rr;
  rr.request = &*parsed;
  rr.session_key = req.header(cfg.session_header);
  if (rr.session_key.empty()) rr.session_key = parsed->user;
  rr.conversation = openai::continues_conversation(*parsed);
  rr.expected_output_tokens =
      parsed->max_tokens
          ? static_cast<std::uint32_t>(std::min<std::int64_t>(*parsed->max_tokens, 1 << 20))
          : 16;
  if (policy->uses_prompt()) {
    rr.tokens = std::move(prep.blocks.tokens);
    rr.blocks = std::move(prep.blocks.blocks);
    rr.tokens_per_block = prep.blocks.tokens_per_block;
    rr.prompt_tokens = prep.blocks.prompt_tokens;
  }

  // The request's start time serves as "now" for availability (one clock reading fewer).
  Candidates candidates;
  if (auto err = select_candidates(*parsed, routing::steady_ms(t0), candidates)) {
    co_await send_error(w, err->status, std::move(err->message), err->param);
    co_return;
  }

  std::string last_error;
  int last_status = 502;
  bool cut = false;  // the shutdown grace ran out before a response started
  for (int attempt = 0; attempt <= cfg.max_retries && !candidates.empty(); ++attempt) {
    routing::Decision d = policy->pick(rr, {candidates.data(), candidates.size()});
    Backend* b = d.backend;
    if (!b) break;
    candidates.erase(std::remove(candidates.begin(), candidates.end(), b), candidates.end());
    decision_cell(d.reason).inc();
    if (!d.detail.empty())
      spdlog::debug("route {} -> {} ({}): {}", label, b->name, d.reason, d.detail);
    b->inflight.fetch_add(1);
    policy->on_routed(rr, *b);
    struct Release {
      Impl* self;
      Backend* b;
      routing::RouteRequest* rr;
      bool ok = false;
      ~Release() {
        b->inflight.fetch_sub(1);
        self->policy->on_done(*rr, *b, ok);
      }
    } release{this, b, &rr};

    http::CancelToken token;
    w.on_client_gone([&token] { token.cancel(); });
    InFlight flight(in_flight(), &token);
    auto ex = co_await pool().start(b->endpoint, req.method, req.target, req.headers, req.body,
                                    &token, req.remote_address);
    if (!ex) {
      const auto& f = ex.error();
      if (flight.cut) {
        cut = true;
        break;
      }
      if (f.kind == http::UpstreamError::kCancelled) {
        requests->with({std::string(label), "499", b->name}).inc();
        spdlog::info("{} {} 499 backend={} reason=client-gone total_ms={:.1f}", req.method, label,
                     b->name, seconds_since(t0) * 1e3);
        co_return;
      }
      record_failure(*b, f);
      last_error = fmt::format("backend {}: {}", b->name, f.message);
      if (f.retryable() && attempt < cfg.max_retries && !candidates.empty()) {
        retries->with({b->name}).inc();
        spdlog::warn("retrying {} elsewhere: {}", label, last_error);
        continue;
      }
      last_status = f.kind == http::UpstreamError::kTimeout ? 504 : 502;
      break;
    }
    flight.ex = &*ex;
    // Written only when it changes: every worker's requests read this backend's line.
    if (b->consecutive_failures.load(std::memory_order_relaxed) != 0)
      b->consecutive_failures.store(0);

    Headers extra;
    pass_response_headers(ex->headers(), extra);
    if (cfg.debug_headers) {
      extra.emplace_back("x-kvroute-backend", b->name);
      extra.emplace_back("x-kvroute-reason", d.reason);
    }
    std::string_view content_type = http::find_header(ex->headers(), "content-type");  // ex's
    if (content_type.empty()) content_type = "application/json";
    const bool sse = content_type.starts_with("text/event-stream");
    const int status = ex->status();
    double ttfb_s = 0;
    if (!sse) {
      auto body = co_await ex->read_all(256u << 20);
      ttfb_s = seconds_since(t0);
      policy->on_first_byte(rr, *b);
      if (!body) {
        if (flight.cut) {
          cut = true;
          break;
        }
        record_failure(*b, body.error());
        last_error = fmt::format("backend {}: {}", b->name, body.error().message);
        last_status = body.error().kind == http::UpstreamError::kTimeout ? 504 : 502;
        break;  // the backend started answering: never resend
      }
      co_await w.send(status, content_type, std::move(*body), extra);
    } else {
      w.on_client_gone([&ex] { ex->cancel(); });
      co_await w.start_stream(status, content_type, extra);
      ttfb_s = co_await relay_stream(*ex, w, flight, rr, *b, t0, req.method, label);
    }
    release.ok = true;
    record_outcome(label, status, *b, w.client_gone(), seconds_since(t0), ttfb_s);
    spdlog::info("{} {} {} backend={} reason={} stream={} ttfb_ms={:.1f} total_ms={:.1f}",
                 req.method, label, w.client_gone() ? 499 : status, b->name, d.reason, sse,
                 ttfb_s * 1e3, seconds_since(t0) * 1e3);
    co_return;
  }
  if (cut) {
    last_status = 503;
    last_error = "the router is shutting down";
  }
  requests->with({std::string(label), std::to_string(last_status), ""}).inc();
  spdlog::info("{} {} {} error=\"{}\" total_ms={:.1f}", req.method, label, last_status, last_error,
               seconds_since(t0) * 1e3);
  if (last_error.empty()) last_error = "no backend could serve the request";
  co_await send_error(w, last_status, std::move(last_error));
}

std::optional<Proxy::Impl::CandidateError> Proxy::Impl::select_candidates(
    const openai::ParsedRequest& req, std::int64_t now, Candidates& out) const {
  bool any_serves = false;
  for (auto* b : backends) {
    if (!b->serves(req.model)) continue;
    any_serves = true;
    if (b->available(now)) out.push_back(b);
  }
  if (!any_serves) {
    return CandidateError{404, "The model `" + req.model + "` does not exist.", "model"};
  }
  if (out.empty())
    return CandidateError{503, "no healthy backend for model `" + req.model + "`", {}};
  return std::nullopt;
}

http::Task<double> Proxy::Impl::relay_stream(http::Exchange& ex, ResponseWriter& w,
                                             InFlight& flight, routing::RouteRequest& rr,
                                             Backend& b, Clock::time_point t0,
                                             std::string_view method, std::string_view label) {
  // Whole events only (http/sse.h): a stream that breaks then ends on an event boundary, with an
  // error event and [DONE] after it, as OpenAI clients expect.
  http::SseSplitter events;
  double ttfb_s = 0;
  bool first = true;
  for (;;) {
    auto piece = co_await ex.read_some();
    if (!piece) {
      if (w.client_gone()) break;
      std::string why;
      if (flight.cut) {
        why = "the router is shutting down: stream cut at the end of its grace period";
      } else if (piece.error().kind == http::UpstreamError::kCancelled) {
        break;
      } else {
        record_failure(b, piece.error());
        why = "upstream failed mid-stream: " + piece.error().message;
        spdlog::warn("{} {} stream from {} broke: {}", method, label, b.name,
                     piece.error().message);
      }
      std::string tail = http::sse_event(openai::error_body(502, why, "upstream_error"));
      tail += "data: [DONE]\n\n";
      co_await w.write_chunk(tail);
      break;
    }
    if (piece->empty()) {
      // The end: an unterminated last event goes out as it came.
      if (std::string rest = events.take_pending(); !rest.empty()) co_await w.write_chunk(rest);
      break;
    }
    if (first) {
      ttfb_s = seconds_since(t0);
      first = false;
      policy->on_first_byte(rr, b);
    }
    const std::string_view whole = events.relay(*piece);
    if (!whole.empty() && !co_await w.write_chunk(whole)) {
      ex.cancel();
      break;
    }
  }
  co_await w.end_stream();
  co_return ttfb_s;
}

void Proxy::Impl::record_outcome(std::string_view label, int status, const Backend& b, bool gone,
                                 double total_s, double ttfb_s) {
  const int slot = endpoint_slot(label);
  if (status == 200 && !gone) {
    ok_cells[slot][static_cast<std::size_t>(b.index)]->inc();
  } else {
    requests->with({std::string(label), gone ? "499" : std::to_string(status), b.name}).inc();
  }
  latency_cells[slot]->observe(total_s);
  ttfb_cells[slot]->observe(ttfb_s);
}

void Proxy::Impl::pass_response_headers(const Headers& upstream, Headers& out) {
  // What OpenAI clients read from a response besides its body: the request id (support tickets,
  // logs), rate limits and Retry-After (the SDKs' back-off honours it). Framing, connection and
  // content-type fields are the router's own.
  for (const auto& [k, v] : upstream) {
    if (http::iequals_lower(k, "retry-after") || http::iequals_lower(k, "x-request-id") ||
        http::iequals_lower(k, "openai-processing-ms") ||
        (k.size() > 12 && http::iequals_lower(k.substr(0, 12), "x-ratelimit-")) ||
        (k.size() > 10 && http::iequals_lower(k.substr(0, 10), "ratelimit-")) ||
        (k.size() == 9 && http::iequals_lower(k, "ratelimit")))
      out.emplace_back(k, v);
  }
}

const prompt::PromptEncoder* Proxy::Impl::encoder_for(const std::string& model) const {
  if (!model_encoders.empty()) {
    if (auto it = model_encoders.find(model); it != model_encoders.end()) return it->second.get();
  }
  return encoder.get();
}

void Proxy::Impl::scrape(Backend& b, std::string_view text) {
  static const std::vector<std::string_view> kWanted = {
      "vllm:num_requests_waiting",       "vllm:num_requests_running",
      "vllm:kv_cache_usage_perc",        "vllm:gpu_cache_usage_perc",
      "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total",
      "vllm:cache_config_info"};
  auto parsed = metrics::parse_exposition(text, kWanted);
  auto load = std::make_shared<routing::EngineLoad>();
  for (const auto& s : parsed.samples) {
    if (s.name == "vllm:num_requests_waiting")
      load->waiting += s.value;
    else if (s.name == "vllm:num_requests_running")
      load->running += s.value;
    else if (s.name == "vllm:kv_cache_usage_perc" || s.name == "vllm:gpu_cache_usage_perc")
      load->kv_usage = std::max(load->kv_usage, s.value);
    else if (s.name == "vllm:prefix_cache_queries_total")
      load->prefix_queries += s.value;
    else if (s.name == "vllm:prefix_cache_hits_total")
      load->prefix_hits += s.value;
    else if (s.name == "vllm:cache_config_info") {
      auto blocks = s.label("num_gpu_blocks");
      auto bs = s.label("block_size");
      load->num_gpu_blocks =
          static_cast<std::uint32_t>(std::strtoul(std::string(blocks).c_str(), nullptr, 10));
      load->block_size =
          static_cast<std::uint32_t>(std::strtoul(std::string(bs).c_str(), nullptr, 10));
    }
  }
  load->scraped_at = Clock::now();
  // The index forgets what the engine must have evicted: capacity in our blocks.
  if (load->num_gpu_blocks > 0 && !cfg.backends[static_cast<std::size_t>(b.index)].num_gpu_blocks) {
    const double ratio =
        load->block_size ? static_cast<double>(load->block_size) / cfg.block_size : 1.0;
    set_kv_capacity(b, static_cast<std::uint64_t>(load->num_gpu_blocks * ratio));
  }
  b.load.store(std::move(load));
}

http::Task<void> Proxy::Impl::scrape_loop() {
  auto ex = co_await net::this_coro::executor;
  net::steady_timer timer(ex);
  auto& p = *scrape_pool;
  for (;;) {
    for (auto* b : backends) {
      if (!b->healthy.load()) continue;
      auto r = co_await p.get(b->endpoint, "/metrics", cfg.health_timeout, 8u << 20);
      if (r && r->first == 200) scrape(*b, r->second);
    }
    timer.expires_after(cfg.metrics_scrape_interval);
    auto [ec] = co_await timer.async_wait(kTuple);
    if (ec) co_return;
  }
}

http::Task<void> Proxy::Impl::health_loop() {
  auto ex = co_await net::this_coro::executor;
  net::steady_timer timer(ex);
  auto& p = *probe_pool;
  for (;;) {
    for (auto* b : backends) {
      auto r = co_await p.get(b->endpoint, cfg.health_path, cfg.health_timeout, 64 * 1024);
      const bool ok = r && r->first == 200;
      if (ok != b->healthy.load()) {
        spdlog::warn("backend {} is now {}", b->name, ok ? "healthy" : "unhealthy");
        if (!ok) {
          // Down: if it restarts it comes back with an empty cache. Forget what we believe it holds
          // (the engine's events rebuild the precise entries; our own decisions the approximate
          // ones).
          const auto i = static_cast<std::size_t>(b->index);
          if (precise) precise->forget_backend(i);
          routing_ctx->prefix.clear_backend(i);
        }
      }
      if (!ok) drop_idle(*b);  // they died with the engine, or will fail as it does
      b->healthy.store(ok);
      // A passing probe ends a passive ejection early (Envoy's default,
      // successful_active_health_check_uneject_host): an engine that crashed under load and came
      // back takes traffic within one health interval instead of waiting out the ejection.
      if (ok && b->ejected_until_ms.load() != 0) {
        spdlog::info("backend {} passed its health check: ejection ended", b->name);
        b->ejected_until_ms.store(0);
        b->consecutive_failures.store(0);
      }
      if (ok && !b->models.get()) {
        auto m = co_await p.get(b->endpoint, "/v1/models", cfg.health_timeout, 1 << 20);
        if (m && m->first == 200) {
          simdjson::dom::parser parser;
          simdjson::dom::element doc;
          if (!parser.parse(m->second).get(doc)) {
            std::vector<std::string> names;
            simdjson::dom::array data;
            if (!doc["data"].get_array().get(data)) {
              for (simdjson::dom::element e : data) {
                std::string_view id;
                if (!e["id"].get_string().get(id)) names.emplace_back(id);
              }
            }
            if (!names.empty()) {
              if (precise) precise->set_model(static_cast<std::size_t>(b->index), names.front());
              b->models.set(std::move(names));
            }
          }
        }
      }
    }
    timer.expires_after(cfg.health_interval);
    auto [ec] = co_await timer.async_wait(kTuple);
    if (ec) co_return;
  }
}

Proxy::Proxy(config::Config cfg) : impl_(std::make_unique<Impl>()) { impl_->cfg = std::move(cfg); }
Proxy::~Proxy() { stop(std::chrono::milliseconds(0)); }

Result<std::uint16_t> Proxy::start() {
  auto& im = *impl_;
  if (auto ok = config::resolve(im.cfg); !ok) return fail(ok.error());
  if (auto ok = config::validate(im.cfg); !ok) return fail(ok.error());
  im.declare_metrics();
  for (std::size_t i = 0; i < im.cfg.backends.size(); ++i) {
    const auto& bc = im.cfg.backends[i];
    auto ep = http::parse_http_url(bc.url);
    if (!ep) return fail(ep.error());
    auto b = std::make_unique<Backend>(static_cast<int>(i), bc.name, bc.url, *ep);
    if (!bc.models.empty()) b->models.set(bc.models);
    im.backends.push_back(b.get());
    im.owned.push_back(std::move(b));
  }
  im.routing_ctx = std::make_shared<routing::RoutingContext>(im.backends.size());
  for (std::size_t i = 0; i < im.cfg.backends.size(); ++i) {
    if (auto nb = im.cfg.backends[i].num_gpu_blocks) im.set_kv_capacity(*im.backends[i], *nb);
  }
  {
    // "word": the simulator's word tokenizer (exact blocks against `kvroute sim` without a
    // tokenizer). Each directory is loaded once, however many models share it.
    std::unordered_map<std::string, std::shared_ptr<const prompt::PromptEncoder>> by_path;
    auto load =
        [&](const std::string& path) -> Result<std::shared_ptr<const prompt::PromptEncoder>> {
      if (auto it = by_path.find(path); it != by_path.end()) return it->second;
      auto enc = prompt::PromptEncoder::load(path == "word" ? "" : path);
      if (!enc) return fail(Error::invalid("tokenizer " + path + ": " + enc.error().message));
      by_path.emplace(path, *enc);
      return std::move(*enc);
    };
    if (!im.cfg.tokenizer.empty()) {
      KVROUTE_TRY(im.encoder, load(im.cfg.tokenizer));
    }
    for (const auto& m : im.cfg.models) {
      KVROUTE_TRY(auto enc, load(m.tokenizer));
      im.model_encoders[m.name] = std::move(enc);
    }
  }
  auto ic = kv_index::indexer_config_from(im.cfg);
  if (!ic.engines.empty()) {
    auto precise = kv_index::PreciseIndexer::create(std::move(ic));
    if (!precise) return fail(precise.error());
    im.precise = std::shared_ptr<kv_index::PreciseIndexer>(std::move(*precise));
    auto indexer = im.precise;
    im.routing_ctx->scorer_extensions.push_back(
        [indexer](const config::PluginConfig& pc, std::shared_ptr<routing::RoutingContext> ctx)
            -> Result<std::unique_ptr<routing::Scorer>> {
          return kv_index::make_precise_scorer(pc, std::move(ctx), indexer);
        });
    im.routing_ctx->precise_available = true;
  }
  auto policy = routing::make_policy(im.cfg, im.backends, im.routing_ctx);
  if (!policy) return fail(policy.error());
  im.policy = std::move(*policy);
  im.resolve_cells();

  // The open-file limit bounds client connections and idle upstream ones
  // (proxy/internal/fd_budget.h).
  const OpenFileLimit fd_limit = raise_open_file_limit();
  const FdPlan fds = plan_fds(fd_limit.now, im.cfg.threads, im.backends.size(),
                              im.cfg.max_connections, im.cfg.max_idle_per_backend);
  if (fd_limit.now > fd_limit.before) {
    spdlog::info("open-file limit raised from {} to {}", fd_limit.before, fd_limit.now);
  }
  if (fds.clamped) {
    // A warning only where the limit really binds (a few hundred clients would find it).
    const bool tight = fds.max_connections < 1024 || fds.max_idle_per_backend < 16;
    spdlog::log(tight ? spdlog::level::warn : spdlog::level::info,
                "open-file limit {} allows {} client connections (maxConnections {}) and {} idle "
                "connections per backend and thread (maxIdlePerBackend {}); raise it (ulimit -n, "
                "LimitNOFILE=) for more",
                fd_limit.now, fds.max_connections, im.cfg.max_connections, fds.max_idle_per_backend,
                im.cfg.max_idle_per_backend);
  }
  http::ServerOptions so;
  so.address = im.cfg.address;
  so.port = im.cfg.port;
  so.threads = im.cfg.threads;
  so.max_body_bytes = im.cfg.max_body_bytes;
  so.max_header_bytes = im.cfg.max_header_bytes;
  so.max_connections = fds.max_connections;
  so.request_timeout = im.cfg.request_timeout;
  so.keepalive_timeout = im.cfg.keepalive_timeout;
  so.error_body = [](int status, std::string_view message) {
    return openai::error_body(status, message);
  };
  Impl* self = &im;
  im.server = std::make_unique<http::Server>(
      so, [self](Request& req, ResponseWriter& w) { return self->handle(req, w); });
  http::ClientOptions co;
  co.connect_timeout = im.cfg.connect_timeout;
  co.first_byte_timeout = im.cfg.first_byte_timeout;
  co.idle_timeout = im.cfg.idle_timeout;
  co.max_idle_per_endpoint = fds.max_idle_per_backend;
  for (int i = 0; i < im.server->threads(); ++i) {
    im.pools.push_back(std::make_unique<http::ConnectionPool>(im.server->executor(i), co));
  }
  im.flights = std::vector<Impl::FlightList>(static_cast<std::size_t>(im.server->threads()));
  http::ClientOptions probe = co;
  probe.max_idle_per_endpoint = 1;
  im.probe_pool = std::make_unique<http::ConnectionPool>(im.server->executor(0), probe);
  im.scrape_pool =
      std::make_unique<http::ConnectionPool>(im.server->executor(im.server->threads() - 1), probe);
  auto port = im.server->start();
  if (!port) return fail(port.error());
  net::co_spawn(im.server->executor(0), im.health_loop(), net::detached);
  if (im.cfg.metrics_scrape_interval.count() > 0) {
    net::co_spawn(im.server->executor(im.server->threads() - 1), im.scrape_loop(), net::detached);
  }
  spdlog::info("kvroute serving on {}:{} with {} backends, policy {}, {} threads", im.cfg.address,
               *port, im.backends.size(), im.policy->name(), im.cfg.threads);
  return *port;
}

void Proxy::stop(std::chrono::milliseconds grace) {
  // At the end of the grace period, requests still in flight are cut: a stream ends with an error
  // event and [DONE], a response not yet started gets a 503.
  if (impl_->server) impl_->server->stop(grace, [im = impl_.get()] { im->cut_in_flight(); });
  if (impl_->precise) impl_->precise->stop();
}

metrics::Registry& Proxy::registry() { return impl_->reg; }
std::span<routing::Backend* const> Proxy::backends() const { return impl_->backends; }
std::uint16_t Proxy::port() const { return impl_->server ? impl_->server->port() : 0; }

int run_serve(config::Config cfg) {
  if (!set_log_level(cfg.log_level)) {
    spdlog::error("unknown log level '{}'", cfg.log_level);
    return 2;
  }
  const auto grace = cfg.shutdown_grace;
  Proxy proxy(std::move(cfg));
  auto port = proxy.start();
  if (!port) {
    spdlog::error("{}", port.error().message);
    return 1;
  }
  net::io_context signals_ctx;
  net::signal_set signals(signals_ctx, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code&, int sig) {
    spdlog::info("signal {}: draining (grace {} ms)", sig, grace.count());
  });
  signals_ctx.run();
  proxy.stop(grace);
  spdlog::info("kvroute stopped");
  return 0;
}

}  // namespace kvroute::proxy
