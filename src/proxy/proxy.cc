#include "proxy/proxy.h"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/container/small_vector.hpp>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>

#include "admin/admin.h"
#include "auth/auth.h"
#include "common/log.h"
#include "flow/controller.h"
#include "http/client.h"
#include "http/offload.h"
#include "http/server.h"
#include "http/sse.h"
#include "openai/error.h"
#include "openai/request.h"
#include "proxy/internal/fd_budget.h"
#include "router/router.h"
#include "tls/tls.h"

namespace kvroute::proxy {

namespace net = boost::asio;
using http::Headers;
using http::Request;
using http::ResponseWriter;
using routing::Backend;
using Clock = std::chrono::steady_clock;
// Request bodies from this size on are parsed and tokenized off the network thread.
constexpr std::size_t kOffloadBodyBytes = 256 * 1024;

namespace {
double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}
}  // namespace

struct Proxy::Impl {
  // Names this proxy in thread-local caches (a later proxy, in tests, may reuse the address).
  const std::uint64_t id = [] {
    static std::atomic<std::uint64_t> next{1};
    return next.fetch_add(1);
  }();
  config::Config cfg;
  metrics::Registry reg;
  // Parses and tokenizes request bodies of kOffloadBodyBytes or more, so that a prompt of many
  // megabytes does not stall the other connections of its worker. Outlives `server`.
  net::thread_pool offload{2};
  std::unique_ptr<http::Server> server;
  std::vector<std::unique_ptr<http::ConnectionPool>> pools;  // one per worker thread
  // The routing core (router/router.h); destroyed before the server's executors.
  std::unique_ptr<router::Router> router;
  metrics::CounterFamily* requests = nullptr;
  metrics::HistogramFamily* latency = nullptr;
  metrics::HistogramFamily* ttfb = nullptr;
  metrics::CounterFamily* retries = nullptr;
  metrics::CounterFamily* client_errors = nullptr;
  // Security (docs/adr/0022, 0023): API keys and the admin token, TLS for clients, the admin
  // listener (null: the admin paths are served on the data port), what engines get as
  // Authorization.
  std::unique_ptr<auth::Gate> gate;
  std::shared_ptr<tls::ServerContexts> tls;
  admin::Hooks admin_hooks;
  std::unique_ptr<admin::AdminServer> admin;
  enum class UpstreamAuth { kForward, kNone, kKey } upstream_auth = UpstreamAuth::kForward;
  std::string upstream_authorization;  // "Bearer <key>" with kKey
  metrics::CounterFamily* tls_failures = nullptr;
  // The Authorization engines get (upstream.authorization).
  void rewrite_authorization(Headers& h) const {
    if (upstream_auth == UpstreamAuth::kForward) return;
    h.remove_if([](std::string_view name) { return http::iequals_lower(name, "authorization"); });
    if (upstream_auth == UpstreamAuth::kKey)
      h.emplace_back("Authorization", upstream_authorization);
  }

  // Hot cells resolved once: [endpoint] for the histograms; the 200 counters per backend are cached
  // per worker thread (ok_cell), since discovery adds backends while running.
  metrics::Counter& ok_cell(int slot, const Backend& b) {
    struct Entry {
      std::uint64_t owner;
      const Backend* b;
      metrics::Counter* cell;
    };
    thread_local std::vector<Entry> cache[2];
    auto& c = cache[slot];
    const auto i = static_cast<std::size_t>(b.index);
    if (c.size() <= i) c.resize(i + 1, Entry{0, nullptr, nullptr});
    if (c[i].owner != id || c[i].b != &b) {
      const char* eps[2] = {"/v1/completions", "/v1/chat/completions"};
      c[i] = {id, &b, &requests->with({eps[slot], "200", b.name})};
    }
    return *c[i].cell;
  }
  metrics::Histogram* latency_cells[2] = {nullptr, nullptr};
  metrics::Histogram* ttfb_cells[2] = {nullptr, nullptr};
  static int endpoint_slot(std::string_view label) { return label == "/v1/completions" ? 0 : 1; }

  void resolve_cells() {
    const char* eps[2] = {"/v1/completions", "/v1/chat/completions"};
    for (int e = 0; e < 2; ++e) {
      latency_cells[e] = &latency->with({eps[e]});
      ttfb_cells[e] = &ttfb->with({eps[e]});
    }
  }

  void declare_metrics() {
    requests = &reg.counter("kvroute_requests_total",
                            "Requests answered, by endpoint, status code and backend.",
                            {"endpoint", "code", "backend"});
    latency = &reg.histogram("kvroute_request_duration_seconds",
                             "End-to-end request latency at the router.",
                             metrics::latency_buckets(), {"endpoint"});
    ttfb = &reg.histogram(
        "kvroute_time_to_first_byte_seconds",
        "Time from request arrival to the first response body byte from the backend.",
        metrics::latency_buckets(), {"endpoint"});
    retries = &reg.counter("kvroute_retries_total",
                           "Requests retried on another backend before any byte.", {"backend"});
    client_errors = &reg.counter("kvroute_client_errors_total",
                                 "Requests rejected by the router itself.", {"code"});
  }

  http::ConnectionPool& pool() {
    return *pools[static_cast<std::size_t>(std::max(0, http::current_worker()))];
  }
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
    // Requests still waiting in flow control's queue get their 503 now (their coroutines resume
    // on their workers, which run for one more second).
    if (auto* fc = router->flow_control()) fc->stop();
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

  // Relays an SSE response's events as they complete; returns the time to its first byte.
  http::Task<double> relay_stream(http::Exchange& ex, ResponseWriter& w, InFlight& flight,
                                  router::Assignment& a, Clock::time_point t0,
                                  std::string_view method, std::string_view label);
  void record_outcome(std::string_view label, int status, const Backend& b, bool gone,
                      double total_s, double ttfb_s);
  static void pass_response_headers(const Headers& upstream, Headers& out);

  http::Task<void> handle(Request& req, ResponseWriter& w);
  // The API key check (call only when keys are configured): false after answering 401, else
  // `who` holds the key's tenant.
  http::Task<bool> authorized(Request& req, ResponseWriter& w, auth::Principal& who);
  std::pair<bool, std::string> ready() const;
  std::string render_metrics();
  // `tenant`: the API key's tenant ("" without keys), for the log.
  http::Task<void> proxy_openai(Request& req, ResponseWriter& w, openai::Endpoint ep,
                                std::string_view label, std::string_view tenant);
  http::Task<void> send_error(ResponseWriter& w, int status, std::string message,
                              std::string_view param = {});
  void record_failure(Backend& b, const http::UpstreamFailure& f) {
    router->record_failure(b, http::to_string(f.kind), f.message,
                           f.kind == http::UpstreamError::kCancelled);
  }
};

http::Task<void> Proxy::Impl::send_error(ResponseWriter& w, int status, std::string message,
                                         std::string_view param) {
  client_errors->with({std::to_string(status)}).inc();
  std::string body = openai::error_body_for_param(status, message, param);
  const Headers none;
  co_await w.send(status, "application/json", std::move(body), none);
}

http::Task<bool> Proxy::Impl::authorized(Request& req, ResponseWriter& w, auth::Principal& who) {
  // One credential: with two, the router could approve one and an engine read the other.
  int fields = 0;
  for (const auto& [k, v] : req.headers) fields += http::iequals_lower(k, "authorization") ? 1 : 0;
  auto checked = fields > 1 ? gate->refuse_client(auth::Refusal::kMalformed)
                            : gate->check_client(req.header("authorization"));
  if (checked) {
    who = std::move(*checked);
    co_return true;
  }
  const auth::Refusal why = checked.error();
  client_errors->with({"401"}).inc();
  spdlog::info("{} {} 401 reason=api-key-{}", req.method, req.path(), auth::to_string(why));
  std::string body = openai::error_body(401, auth::refusal_message(why), "invalid_request_error",
                                        "invalid_api_key");
  const Headers challenge{{"WWW-Authenticate", "Bearer"}};
  co_await w.send(401, "application/json", std::move(body), challenge);
  co_return false;
}

std::pair<bool, std::string> Proxy::Impl::ready() const {
  const auto now = routing::steady_now_ms();
  int n = 0;
  const router::BackendSet members = router->backends();
  for (auto* b : *members) n += b->available(now) ? 1 : 0;
  if (router->replicas_warming())
    return {false,
            fmt::format(R"({{"ready":false,"healthy_backends":{},"warming":"replicas"}})", n)};
  return {n > 0,
          fmt::format(R"({{"ready":{},"healthy_backends":{}}})", n > 0 ? "true" : "false", n)};
}

std::string Proxy::Impl::render_metrics() {
  router->update_gauges();
  return reg.render();
}

http::Task<void> Proxy::Impl::handle(Request& req, ResponseWriter& w) {
  const std::string_view path = req.path();
  const bool get = req.method == "GET" || req.method == "HEAD";
  const bool post = req.method == "POST";
  const Headers none;
  if (path == "/v1/completions" || path == "/v1/chat/completions") {
    // The check's coroutine only when keys are configured (none per request otherwise).
    auth::Principal who;
    if (gate->checks_api_keys()) {
      const bool ok = co_await authorized(req, w, who);
      if (!ok) co_return;
    }
    if (!post) {
      std::string msg = "use POST for " + std::string(path);
      co_await send_error(w, 405, std::move(msg));
      co_return;
    }
    co_await proxy_openai(req, w,
                          path == "/v1/completions" ? openai::Endpoint::kCompletions
                                                    : openai::Endpoint::kChatCompletions,
                          path, who.tenant);
    co_return;
  }
  // The admin paths, here when there is no admin listener; /health also when there is one (load
  // balancers and vLLM's clients probe the API port's /health; it tells nothing).
  if (!admin || path == "/health") {
    if (co_await admin::handle(admin_hooks, *gate, req, w)) co_return;
  }
  if (path == "/v1/models" && get) {
    auth::Principal who;
    if (gate->checks_api_keys()) {
      const bool ok = co_await authorized(req, w, who);
      if (!ok) co_return;
    }
    std::string body = R"({"object":"list","data":[)";
    bool first = true;
    for (const auto& m : router->known_models()) {
      if (!first) body += ',';
      first = false;
      body += R"({"id":")";
      http::append_json_escaped(body, m);
      body += R"(","object":"model","created":0,"owned_by":"kvroute"})";
    }
    body += "]}";
    co_await w.send(200, "application/json", std::move(body), none);
  } else if (path == "/v1/models") {
    std::string msg = "use GET for " + std::string(path);
    co_await send_error(w, 405, std::move(msg));
  } else {
    std::string msg = "no route for " + std::string(path);
    co_await send_error(w, 404, std::move(msg));
  }
}

namespace {

// A queued request's wait for flow control's answer (flow/controller.h): the dispatcher thread or
// the client's disconnect completes it once; the coroutine resumes on its own worker.
class FlowWait {
 public:
  void complete(const flow::Admission& a) {
    std::function<void()> resume;
    {
      std::lock_guard l(mu_);
      if (result_) return;
      result_ = a;
      resume = std::move(resume_);
    }
    if (resume) resume();
  }
  http::Task<flow::Admission> wait() {
    co_await net::async_initiate<const net::use_awaitable_t<http::Executor>, void()>(
        [this](auto handler) {
          auto ex = net::get_associated_executor(handler);
          auto h = std::make_shared<decltype(handler)>(std::move(handler));
          std::function<void()> resume = [ex, h]() { net::post(ex, std::move(*h)); };
          std::unique_lock l(mu_);
          if (result_) {
            l.unlock();
            resume();
            return;
          }
          resume_ = std::move(resume);
        },
        http::use_task);
    std::lock_guard l(mu_);
    co_return *result_;
  }

 private:
  std::mutex mu_;
  std::optional<flow::Admission> result_;
  std::function<void()> resume_;
};

std::string refusal_message(const flow::Admission& a) {
  switch (a.outcome) {
    case flow::Outcome::kRejectedSaturated:
      return "the engines are saturated and this request's priority is sheddable; retry later";
    case flow::Outcome::kRejectedCapacity:
      return "the router's queue for this priority is full; retry later";
    case flow::Outcome::kExpired:
      return fmt::format("the request waited {} ms in the router's queue, past its deadline",
                         a.queued_ms);
    case flow::Outcome::kShuttingDown:
      return "the router is shutting down";
    case flow::Outcome::kRateLimited:
      return fmt::format("rate limit reached for this tenant; retry in {} s", a.retry_after_s);
    default:
      return "the request was not admitted";
  }
}

}  // namespace

http::Task<void> Proxy::Impl::proxy_openai(Request& req, ResponseWriter& w, openai::Endpoint kind,
                                           std::string_view label, std::string_view tenant) {
  const std::string_view tenant_key = tenant.empty() ? "" : " tenant=";
  // First: adding a header may move the bytes that views of the headers (the session key) point
  // into.
  rewrite_authorization(req.headers);
  const auto t0 = Clock::now();
  // Parsing and tokenizing take ~10 ms per megabyte: bigger bodies go to the offload threads.
  auto prepare = [r = router.get(), kind, body = std::string_view(req.body)]() {
    return r->prepare(kind, body);
  };
  // An if, not ?: with co_await in one arm, which GCC 12 compiles into a dangling frame.
  router::Prepared prep;
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
  router->route_request(prep, req.header(cfg.session_header), rr);

  // The request's start time serves as "now" for availability (one clock reading fewer).
  router::Candidates candidates;
  if (auto err = router->select_candidates(*parsed, routing::steady_ms(t0), candidates)) {
    co_await send_error(w, err->status, std::move(err->message), err->param);
    co_return;
  }

  // Flow control (issue 18): the request waits in the router while no engine has room, then goes
  // to the best engine with room at that moment.
  router::Assignment admitted;
  std::int64_t queue_ms = -1;  // -1: flow control off
  if (auto* fc = router->flow_control()) {
    const auto& fcfg = cfg.flow_control;
    flow::Ticket ticket;
    FlowWait waiting;
    ticket.priority = router->priority_of(req.header(fcfg.objective_header), tenant, parsed->model);
    const std::string_view fid = req.header(fcfg.fairness_header);
    ticket.fairness_id = std::string(!fid.empty()      ? fid
                                     : !tenant.empty() ? tenant
                                                       : std::string_view(rr.session_key));
    ticket.pool = parsed->model;
    ticket.bytes = req.body.size();
    ticket.input_tokens = static_cast<double>(rr.prompt_tokens);
    ticket.output_tokens = static_cast<double>(rr.expected_output_tokens);
    bool first_try = true;
    auto try_now = [&] {
      // A try at once in admit() (the ticket was never queued) uses the candidates just selected;
      // the dispatcher's, while this coroutine waits, select again, as engines come and go.
      router::Assignment a;
      if (std::exchange(first_try, false) && ticket.enqueued_ms == 0) {
        a = router->pick_with_room(rr, candidates, routing::steady_ms(t0));
      } else {
        const auto now = routing::steady_now_ms();
        router::Candidates now_candidates;
        if (router->select_candidates(*parsed, now, now_candidates)) return false;
        a = router->pick_with_room(rr, now_candidates, now,
                                   ticket.enqueued_ms > 0 ? ticket.enqueued_ms : -1);
      }
      if (!a) return false;
      admitted = std::move(a);
      return true;
    };
    // One pointer: std::function keeps it inline (a capture of every local would be allocated).
    ticket.try_dispatch = [f = &try_now] { return (*f)(); };
    ticket.done = [&waiting](const flow::Admission& a) { waiting.complete(a); };
    flow::Admission adm = fc->admit(ticket, routing::steady_ms(t0));
    if (adm.queued) {
      w.on_client_gone([&] {
        if (fc->cancel(ticket)) waiting.complete({flow::Outcome::kCancelled, 0, true, 0});
      });
      adm = co_await waiting.wait();
    }
    queue_ms = adm.queued_ms;
    router->record_admission(ticket.priority, ticket.fairness_id, adm);
    if (adm.outcome == flow::Outcome::kCancelled || w.client_gone()) {
      requests->with({std::string(label), "499", ""}).inc();
      spdlog::info("{} {} 499 reason=client-gone-queued total_ms={:.1f}", req.method, label,
                   seconds_since(t0) * 1e3);
      co_return;
    }
    if (adm.outcome != flow::Outcome::kDispatched) {
      const int status = flow::http_status(adm.outcome);
      requests->with({std::string(label), std::to_string(status), ""}).inc();
      spdlog::info("{} {} {} reason={} priority={} flow={} queue_ms={}{}{}", req.method, label,
                   status, flow::to_string(adm.outcome), ticket.priority, ticket.fairness_id,
                   adm.queued_ms, tenant_key, tenant);
      client_errors->with({std::to_string(status)}).inc();
      const Headers extra{{"Retry-After", std::to_string(std::max(1, adm.retry_after_s))},
                          {"x-kvroute-dropped-reason", std::string(flow::to_string(adm.outcome))}};
      co_await w.send(status, "application/json", openai::error_body(status, refusal_message(adm)),
                      extra);
      co_return;
    }
    candidates.erase(std::remove(candidates.begin(), candidates.end(), admitted.backend()),
                     candidates.end());
  }

  std::string last_error;
  int last_status = 502;
  bool cut = false;  // the shutdown grace ran out before a response started
  bool use_admitted = static_cast<bool>(admitted);
  for (int attempt = 0; attempt <= cfg.max_retries && (use_admitted || !candidates.empty());
       ++attempt) {
    router::Assignment a;
    if (use_admitted) {
      a = std::move(admitted);
      admitted = router::Assignment();
      use_admitted = false;
    } else {
      a = router->pick(rr, candidates);
    }
    if (!a) break;
    Backend* b = a.backend();
    const routing::Decision& d = a.decision();

    http::CancelToken token;
    w.on_client_gone([&token] { token.cancel(); });
    InFlight flight(in_flight(), &token);
    auto ex = co_await pool().start(b->endpoint, req.method, req.target, req.headers, req.body,
                                    &token, req.remote_address, req.secure);
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
      if (queue_ms >= 0) extra.emplace_back("x-kvroute-queue-ms", std::to_string(queue_ms));
      extra.emplace_back("x-kvroute-backend", b->name);
      extra.emplace_back("x-kvroute-reason", d.reason);
      // What the router believed the engine held of this prompt (bench records compare it with
      // the engine's cached_tokens).
      extra.emplace_back(
          "x-kvroute-predicted-tokens",
          std::to_string(static_cast<std::uint64_t>(d.predicted_blocks) * rr.tokens_per_block));
    }
    std::string_view content_type = http::find_header(ex->headers(), "content-type");  // ex's
    if (content_type.empty()) content_type = "application/json";
    const bool sse = content_type.starts_with("text/event-stream");
    const int status = ex->status();
    double ttfb_s = 0;
    if (!sse) {
      auto body = co_await ex->read_all(256u << 20);
      ttfb_s = seconds_since(t0);
      a.first_byte();
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
      ttfb_s = co_await relay_stream(*ex, w, flight, a, t0, req.method, label);
    }
    a.succeeded();
    record_outcome(label, status, *b, w.client_gone(), seconds_since(t0), ttfb_s);
    spdlog::info("{} {} {} backend={} reason={} stream={} ttfb_ms={:.1f} total_ms={:.1f}{}{}",
                 req.method, label, w.client_gone() ? 499 : status, b->name, d.reason, sse,
                 ttfb_s * 1e3, seconds_since(t0) * 1e3, tenant_key, tenant);
    co_return;
  }
  if (cut) {
    last_status = 503;
    last_error = "the router is shutting down";
  }
  requests->with({std::string(label), std::to_string(last_status), ""}).inc();
  spdlog::info("{} {} {} error=\"{}\" total_ms={:.1f}{}{}", req.method, label, last_status,
               last_error, seconds_since(t0) * 1e3, tenant_key, tenant);
  if (last_error.empty()) last_error = "no backend could serve the request";
  co_await send_error(w, last_status, std::move(last_error));
}

http::Task<double> Proxy::Impl::relay_stream(http::Exchange& ex, ResponseWriter& w,
                                             InFlight& flight, router::Assignment& a,
                                             Clock::time_point t0, std::string_view method,
                                             std::string_view label) {
  Backend& b = *a.backend();
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
      a.first_byte();
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
    ok_cell(slot, b).inc();
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

Proxy::Proxy(config::Config cfg) : impl_(std::make_unique<Impl>()) { impl_->cfg = std::move(cfg); }
Proxy::~Proxy() { stop(std::chrono::milliseconds(0)); }

Result<std::uint16_t> Proxy::start() {
  auto& im = *impl_;
  KVROUTE_TRY(im.router, router::Router::create(std::move(im.cfg), im.reg));
  im.cfg = im.router->config();  // resolved
  im.declare_metrics();
  im.resolve_cells();
  auth::GateOptions go;
  go.api_keys_file = im.cfg.api_keys_file;
  go.admin_token_file = im.cfg.admin_token_file;
  go.reload_interval = im.cfg.tls_reload_interval;
  KVROUTE_TRY(im.gate, auth::Gate::create(go, im.reg));
  const std::string mode = im.cfg.effective_upstream_authorization();
  if (mode == "none") im.upstream_auth = Impl::UpstreamAuth::kNone;
  if (mode == "key") {
    im.upstream_auth = Impl::UpstreamAuth::kKey;
    KVROUTE_TRY(auto key, auth::read_secret_file(im.cfg.upstream_api_key_file));
    im.upstream_authorization = "Bearer " + key;
  }
  if (!im.cfg.tls_cert_file.empty()) {
    tls::ServerConfig tc;
    tc.cert_file = im.cfg.tls_cert_file;
    tc.key_file = im.cfg.tls_key_file;
    tc.client_ca_file = im.cfg.tls_client_ca_file;
    tc.reload_interval = im.cfg.tls_reload_interval;
    KVROUTE_TRY(im.tls, tls::ServerContexts::create(tc));
    im.tls_failures = &im.reg.counter("kvroute_tls_handshake_failures_total",
                                      "Client TLS handshakes that failed, by reason.", {"reason"});
  }

  // The open-file limit bounds client connections and idle upstream ones
  // (proxy/internal/fd_budget.h).
  const OpenFileLimit fd_limit = raise_open_file_limit();
  const FdPlan fds = plan_fds(fd_limit.now, im.cfg.threads, im.router->capacity(),
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
  if (im.tls) {
    so.tls = [t = im.tls] { return t->current(); };
    so.on_tls_failure = [f = im.tls_failures](std::string_view why) {
      f->with({std::string(why)}).inc();
    };
  }
  Impl* self = &im;
  im.admin_hooks.metrics = [self] { return self->render_metrics(); };
  im.admin_hooks.ready = [self] { return self->ready(); };
  im.admin_hooks.status = [self] { return self->router->status_json(); };
  im.server = std::make_unique<http::Server>(
      so, [self](Request& req, ResponseWriter& w) { return self->handle(req, w); });
  http::ClientOptions co = im.router->client_options();
  co.max_idle_per_endpoint = fds.max_idle_per_backend;
  for (int i = 0; i < im.server->threads(); ++i) {
    im.pools.push_back(std::make_unique<http::ConnectionPool>(im.server->executor(i), co));
  }
  im.flights = std::vector<Impl::FlightList>(static_cast<std::size_t>(im.server->threads()));
  im.router->on_backend_down([self](const Backend& b) { self->drop_idle(b); });
  if (im.cfg.admin_port >= 0) {
    admin::Options ao;
    ao.address = im.cfg.admin_address;
    ao.port = static_cast<std::uint16_t>(im.cfg.admin_port);
    im.admin = std::make_unique<admin::AdminServer>(ao, im.admin_hooks, *im.gate);
    auto ap = im.admin->start();
    if (!ap) return fail(ap.error());
    spdlog::info("admin listener on {}:{}{}", ao.address, *ap,
                 im.gate->checks_admin_token() ? " (bearer token)" : "");
  }
  auto port = im.server->start();
  if (!port) return fail(port.error());
  // Probes on worker 0's thread, scrapes on the last worker's.
  im.router->start_background(im.server->executor(0),
                              im.server->executor(im.server->threads() - 1));
  spdlog::info("kvroute serving on {}:{} with {} backends, policy {}, {} threads", im.cfg.address,
               *port, im.router->backends()->size(), im.router->policy().name(), im.cfg.threads);
  return *port;
}

void Proxy::stop(std::chrono::milliseconds grace) {
  // At the end of the grace period, requests still in flight are cut: a stream ends with an error
  // event and [DONE], a response not yet started gets a 503.
  if (impl_->server) impl_->server->stop(grace, [im = impl_.get()] { im->cut_in_flight(); });
  if (impl_->admin) impl_->admin->stop();
  if (impl_->router) impl_->router->stop();
}

metrics::Registry& Proxy::registry() { return impl_->reg; }
router::BackendSet Proxy::backends() const { return impl_->router->backends(); }
std::uint16_t Proxy::port() const { return impl_->server ? impl_->server->port() : 0; }
router::Router* Proxy::router() const { return impl_->router.get(); }
std::uint16_t Proxy::admin_port() const { return impl_->admin ? impl_->admin->port() : 0; }

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
