#include "bench/internal/loadgen.h"

#include <fmt/format.h>
#include <simdjson.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <charconv>
#include <cstdio>
#include <set>

#include "http/client.h"
#include "http/sse.h"

namespace kvroute::bench {

namespace net = boost::asio;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto kTuple = http::use_task_tuple;

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Value of label `name` in a Prometheus label set `{a="x",b="y"}`; empty when absent.
std::string_view label_value(std::string_view labels, std::string_view name) {
  const std::string key = std::string(name) + "=\"";
  std::size_t p = 0;
  while ((p = labels.find(key, p)) != std::string_view::npos) {
    if (p == 0 || labels[p - 1] == '{' || labels[p - 1] == ',') {
      const std::size_t b = p + key.size();
      const std::size_t e = labels.find('"', b);
      if (e == std::string_view::npos) return {};
      return labels.substr(b, e - b);
    }
    p += key.size();
  }
  return {};
}

double to_double(std::string_view s) {
  double v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc()) return 0;
  (void)ptr;
  return v;
}

// One in-flight request, so the deadline can cancel it.
struct InFlight {
  http::CancelToken token;
  http::Exchange* exchange = nullptr;
};

struct Runner {
  const Workload& wl;
  const LoadOptions& opts;
  net::io_context ioc{1};
  http::ConnectionPool pool;
  http::Endpoint ep;
  std::vector<http::Endpoint> replicas;  // when set, requests spread over these
  Rng spread_rng{0x73707265ULL};
  std::size_t spread_next = 0;
  std::string model;
  std::size_t max_requests = 0;
  Clock::time_point t0;
  bool stopping = false;
  bool hit_deadline = false;
  std::size_t issued = 0;
  std::size_t finished = 0;
  std::size_t ok = 0;
  std::size_t errors = 0;
  std::size_t next_session = 0;
  int live = 0;  // running sessions + dispatchers
  std::set<InFlight*> inflight;
  std::set<net::steady_timer*> sleepers;
  net::steady_timer deadline_timer{ioc};
  net::steady_timer done_timer{ioc};
  std::vector<RequestRecord> records;
  simdjson::dom::parser parser;
  Clock::time_point end;

  Runner(const Workload& w, const LoadOptions& o, http::ClientOptions copts)
      : wl(w), opts(o), pool(ioc.get_executor(), copts) {}

  static http::ClientOptions client_options() {
    http::ClientOptions c;
    c.first_byte_timeout = std::chrono::milliseconds(600000);
    c.idle_timeout = std::chrono::milliseconds(120000);
    return c;
  }

  void session_done() {
    if (--live == 0) {
      end = Clock::now();
      done_timer.cancel();
    }
  }

  http::Task<void> sleep_until(Clock::time_point tp) {
    if (stopping) co_return;
    net::steady_timer t(ioc);
    t.expires_at(tp);
    sleepers.insert(&t);
    co_await t.async_wait(kTuple);
    sleepers.erase(&t);
  }

  void stop_everything() {
    stopping = true;
    for (InFlight* f : inflight) {
      if (f->exchange != nullptr)
        f->exchange->cancel();
      else
        f->token.cancel();
    }
    for (auto* t : sleepers) t->cancel();
  }

  void on_event(std::size_t idx, std::string_view data, Clock::time_point& last,
                std::size_t& text_events) {
    if (data == "[DONE]") return;
    simdjson::dom::element doc;
    if (parser.parse(data.data(), data.size()).get(doc) != simdjson::SUCCESS) return;
    RequestRecord& r = records[idx];
    simdjson::dom::object err;
    if (doc["error"].get(err) == simdjson::SUCCESS) {
      std::string_view msg;
      if (err["message"].get(msg) == simdjson::SUCCESS) r.error = std::string(msg);
      r.outcome = Outcome::kHttpError;
      return;
    }
    simdjson::dom::array choices;
    if (doc["choices"].get(choices) == simdjson::SUCCESS) {
      for (simdjson::dom::element c : choices) {
        std::string_view text;
        bool has = c["text"].get(text) == simdjson::SUCCESS && !text.empty();
        if (!has) has = c["delta"]["content"].get(text) == simdjson::SUCCESS && !text.empty();
        if (has) {
          const auto now = Clock::now();
          const auto start = t0 + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(r.start_s));
          if (text_events == 0)
            r.ttft_s = seconds_between(start, now);
          else
            r.itl_s.push_back(static_cast<float>(seconds_between(last, now)));
          last = now;
          ++text_events;
        }
        break;  // n = 1
      }
    }
    simdjson::dom::object usage;
    if (doc["usage"].get(usage) == simdjson::SUCCESS) {
      std::uint64_t v = 0;
      r.usage = true;
      if (usage["prompt_tokens"].get(v) == simdjson::SUCCESS)
        r.prompt_tokens = static_cast<std::uint32_t>(v);
      if (usage["completion_tokens"].get(v) == simdjson::SUCCESS)
        r.output_tokens = static_cast<std::uint32_t>(v);
      if (usage["prompt_tokens_details"]["cached_tokens"].get(v) == simdjson::SUCCESS) {
        r.cached_tokens = static_cast<std::uint32_t>(v);
      }
    }
  }

  // Sends one request; returns whether it succeeded.
  http::Task<bool> send(std::size_t s, std::size_t t) {
    const Item& item = wl.sessions[s].turns[t];
    const std::size_t idx = records.size();
    records.emplace_back();
    const auto start = Clock::now();
    records[idx].session = s;
    records[idx].turn = t;
    records[idx].start_s = seconds_between(t0, start);
    records[idx].cls = wl.sessions[s].cls;
    ++issued;

    const std::string body = request_body(item, model);
    http::Headers headers{{"content-type", "application/json"}, {"accept", "text/event-stream"}};
    if (!opts.session_header.empty()) headers.emplace_back(opts.session_header, wl.sessions[s].id);
    for (const auto& [k, v] : wl.sessions[s].headers) headers.emplace_back(k, v);
    const std::string target = item.chat ? "/v1/chat/completions" : "/v1/completions";
    const std::string_view method = "POST";
    InFlight f;
    inflight.insert(&f);
    const http::Endpoint& to = replicas.empty()
                                   ? ep
                                   : replicas[opts.spread_random ? spread_rng.below(replicas.size())
                                                                 : spread_next++ % replicas.size()];
    auto res = co_await pool.start(to, method, target, headers, body, &f.token);
    bool success = false;
    if (!res) {
      RequestRecord& r = records[idx];
      r.outcome = stopping ? Outcome::kCancelled : Outcome::kTransportError;
      r.error = std::string(to_string(res.error().kind)) + ": " + res.error().message;
    } else {
      http::Exchange ex = std::move(*res);
      f.exchange = &ex;
      records[idx].status = ex.status();
      records[idx].backend = std::string(http::find_header(ex.headers(), "x-kvroute-backend"));
      records[idx].reason = std::string(http::find_header(ex.headers(), "x-kvroute-reason"));
      if (auto p = http::find_header(ex.headers(), "x-kvroute-predicted-tokens"); !p.empty()) {
        std::int64_t v = 0;
        if (std::from_chars(p.data(), p.data() + p.size(), v).ec == std::errc{})
          records[idx].predicted_tokens = v;
      }
      if (auto q = http::find_header(ex.headers(), "x-kvroute-queue-ms"); !q.empty()) {
        double v = 0;
        if (std::from_chars(q.data(), q.data() + q.size(), v).ec == std::errc{})
          records[idx].queue_ms = v;
      }
      if (ex.status() != 200) {
        const std::size_t limit = 64 * 1024;
        auto all = co_await ex.read_all(limit);
        RequestRecord& r = records[idx];
        r.outcome = Outcome::kHttpError;
        r.error = fmt::format("HTTP {}: {}", ex.status(),
                              all ? all->substr(0, 300) : std::string("(no body)"));
      } else {
        http::SseSplitter sse;
        Clock::time_point last = start;
        std::size_t text_events = 0;
        bool broken = false;
        while (true) {
          auto chunk = co_await ex.read_some();
          if (!chunk) {
            RequestRecord& r = records[idx];
            r.outcome = (stopping || chunk.error().kind == http::UpstreamError::kCancelled)
                            ? Outcome::kCancelled
                            : Outcome::kTransportError;
            r.error = std::string(to_string(chunk.error().kind)) + ": " + chunk.error().message;
            broken = true;
            break;
          }
          if (chunk->empty()) break;
          sse.feed(*chunk, [&](std::string_view data) { on_event(idx, data, last, text_events); });
        }
        RequestRecord& r = records[idx];
        if (!broken && r.outcome == Outcome::kOk) {
          r.e2e_s = seconds_between(start, Clock::now());
          if (!r.usage) r.output_tokens = static_cast<std::uint32_t>(text_events);
          success = true;
        }
      }
    }
    f.exchange = nullptr;
    inflight.erase(&f);
    ++finished;
    if (success)
      ++ok;
    else if (records[idx].outcome != Outcome::kCancelled)
      ++errors;
    co_return success;
  }

  http::Task<void> run_session(std::size_t s) {
    const Session& sess = wl.sessions[s];
    for (std::size_t t = 0; t < sess.turns.size(); ++t) {
      if (t > 0 && sess.turns[t].think_s > 0) {
        const auto wake = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(sess.turns[t].think_s));
        co_await sleep_until(wake);
      }
      if (stopping || issued >= max_requests) break;
      const bool good = co_await send(s, t);
      if (!good) break;
    }
    session_done();
  }

  http::Task<void> closed_user() {
    while (!stopping && issued < max_requests && next_session < wl.sessions.size()) {
      const std::size_t s = next_session++;
      ++live;
      co_await run_session(s);
    }
    session_done();
  }

  http::Task<void> open_dispatcher(bool timestamps) {
    Rng rng(opts.seed ^ 0x6f70656eULL);
    double at = 0;
    const double speed = opts.speed > 0 ? opts.speed : 1.0;
    for (std::size_t s = 0; s < wl.sessions.size(); ++s) {
      if (timestamps)
        at = std::max(0.0, wl.sessions[s].at_s) / speed;
      else if (s > 0)
        at += rng.exponential(1.0 / opts.rate);
      const auto when =
          t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(at));
      if (when > Clock::now()) co_await sleep_until(when);
      if (stopping || issued >= max_requests) break;
      ++live;
      net::co_spawn(ioc, run_session(s), net::detached);
    }
    session_done();
  }

  http::Task<void> deadline_watch() {
    auto [ec] = co_await deadline_timer.async_wait(kTuple);
    if (ec) co_return;
    hit_deadline = true;
    stop_everything();
  }

  // On a terminal: a bar redrawn 5 times a second. Elsewhere (CI logs, pipes): one line every
  // `progress_every`, so a long run is never silent.
  http::Task<void> progress(bool tty) {
    net::steady_timer t(ioc);
    const std::size_t total = max_requests;
    auto next_line = Clock::now() + opts.progress_every;
    while (live > 0) {
      const double el = seconds_between(t0, Clock::now());
      if (tty) {
        const int width = 30;
        const int fill = total == 0 ? 0
                                    : static_cast<int>(static_cast<double>(width) *
                                                       static_cast<double>(finished) /
                                                       static_cast<double>(total));
        std::string bar(static_cast<std::size_t>(std::clamp(fill, 0, width)), '#');
        bar.resize(width, '.');
        fmt::print(stderr, "\r{}[{}] {}/{} requests  {:.1f}s  errors {}   ", opts.progress_label,
                   bar, finished, total, el, errors);
        std::fflush(stderr);
      } else if (Clock::now() >= next_line) {
        next_line += opts.progress_every;
        fmt::print(stderr, "{}{}/{} requests in {:.0f} s, errors {}\n", opts.progress_label,
                   finished, total, el, errors);
        std::fflush(stderr);
      }
      t.expires_after(std::chrono::milliseconds(200));
      co_await t.async_wait(kTuple);
    }
    if (tty) {
      fmt::print(stderr, "\r{}\r", std::string(90, ' '));
      std::fflush(stderr);
    }
  }

  http::Task<EngineCounters> scrape(const std::string& url) {
    EngineCounters c;
    c.url = url;
    auto e = http::parse_http_url(url);
    if (!e) {
      c.error = e.error().message;
      co_return c;
    }
    const http::Endpoint mep = *e;
    const std::string_view target = "/metrics";
    const std::chrono::milliseconds timeout(5000);
    auto r = co_await pool.get(mep, target, timeout);
    if (!r) {
      c.error = r.error().message;
      co_return c;
    }
    if (r->first != 200) {
      c.error = fmt::format("HTTP {}", r->first);
      co_return c;
    }
    c = parse_engine_metrics(r->second);
    c.url = url;
    co_return c;
  }

  // vLLM's POST /reset_prefix_cache (a vLLM engine serves it with VLLM_SERVER_DEV_MODE=1; the
  // simulator always). Returns an empty string on success, else why not.
  http::Task<std::string> reset_prefix_cache(const std::string& url) {
    auto e = http::parse_http_url(url);
    if (!e) co_return e.error().message;
    const http::Endpoint rep = *e;
    const http::Headers headers;
    const std::string_view method = "POST";
    const std::string_view target = "/reset_prefix_cache";
    auto ex = co_await pool.start(rep, method, target, headers, std::string_view{});
    if (!ex) co_return ex.error().message;
    auto body = co_await ex->read_all(1 << 16);
    if (!body) co_return body.error().message;
    if (ex->status() != 200) co_return fmt::format("HTTP {}", ex->status());
    co_return std::string();
  }

  http::Task<void> discover_model() {
    const std::string_view target = "/v1/models";
    const std::chrono::milliseconds timeout(5000);
    auto r = co_await pool.get(ep, target, timeout);
    if (!r || r->first != 200) co_return;
    simdjson::dom::element doc;
    if (parser.parse(r->second).get(doc) != simdjson::SUCCESS) co_return;
    simdjson::dom::array data;
    if (doc["data"].get(data) != simdjson::SUCCESS) co_return;
    for (simdjson::dom::element m : data) {
      std::string_view id;
      if (m["id"].get(id) == simdjson::SUCCESS) model = std::string(id);
      break;
    }
  }

  http::Task<void> main(RunResult& out) {
    if (model.empty()) co_await discover_model();
    if (opts.reset_prefix_cache) {
      for (const auto& u : opts.backend_metrics) {
        std::string err = co_await reset_prefix_cache(u);
        if (!err.empty())
          out.warnings.push_back(fmt::format("{}: /reset_prefix_cache failed: {}", u, err));
      }
    }
    std::vector<EngineCounters> before;
    for (const auto& u : opts.backend_metrics) {
      EngineCounters c = co_await scrape(u);
      before.push_back(std::move(c));
    }

    t0 = Clock::now();
    end = t0;
    deadline_timer.expires_after(opts.duration);
    net::co_spawn(ioc, deadline_watch(), net::detached);
    const bool timestamps = wl.timestamps && opts.use_timestamps && opts.rate <= 0;
    live = 1;  // held by this coroutine until the workers are spawned
    if (opts.rate > 0 || timestamps) {
      ++live;
      net::co_spawn(ioc, open_dispatcher(timestamps), net::detached);
    } else {
      const int users = std::max(1, opts.concurrency);
      for (int i = 0; i < users; ++i) {
        ++live;
        net::co_spawn(ioc, closed_user(), net::detached);
      }
    }
    if (opts.progress) net::co_spawn(ioc, progress(isatty(STDERR_FILENO) == 1), net::detached);
    session_done();
    if (live > 0) {
      done_timer.expires_at(Clock::time_point::max());
      co_await done_timer.async_wait(kTuple);
    }
    deadline_timer.cancel();
    out.wall_s = seconds_between(t0, end);

    for (std::size_t i = 0; i < opts.backend_metrics.size(); ++i) {
      EngineCounters after = co_await scrape(opts.backend_metrics[i]);
      EngineDelta d;
      d.url = opts.backend_metrics[i];
      d.ok = before[i].ok && after.ok;
      d.error = !before[i].ok ? before[i].error : after.error;
      d.queries = after.prefix_cache_queries - before[i].prefix_cache_queries;
      d.hits = after.prefix_cache_hits - before[i].prefix_cache_hits;
      d.requests = after.request_success - before[i].request_success;
      d.num_gpu_blocks = after.num_gpu_blocks;
      d.block_size = after.block_size;
      out.engines.push_back(std::move(d));
    }
    pool.close_idle();  // idle connections are watched: run() returns once they are closed
  }
};

}  // namespace

std::string_view to_string(Outcome o) {
  switch (o) {
    case Outcome::kOk:
      return "ok";
    case Outcome::kHttpError:
      return "http_error";
    case Outcome::kTransportError:
      return "transport_error";
    case Outcome::kCancelled:
      return "cancelled";
  }
  return "?";
}

EngineCounters parse_engine_metrics(std::string_view text) {
  EngineCounters c;
  bool any = false;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t e = text.find('\n', pos);
    if (e == std::string_view::npos) e = text.size();
    std::string_view line = text.substr(pos, e - pos);
    pos = e + 1;
    if (line.empty() || line[0] == '#') continue;
    std::size_t name_end = line.find_first_of("{ ");
    if (name_end == std::string_view::npos) continue;
    const std::string_view name = line.substr(0, name_end);
    std::string_view labels;
    std::size_t rest = name_end;
    if (line[name_end] == '{') {
      const std::size_t close = line.find('}', name_end);
      if (close == std::string_view::npos) continue;
      labels = line.substr(name_end, close - name_end + 1);
      rest = close + 1;
    }
    std::string_view value = line.substr(rest);
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    value = value.substr(0, value.find(' '));
    const double v = to_double(value);
    if (name == "vllm:prefix_cache_queries_total")
      c.prefix_cache_queries += v, any = true;
    else if (name == "vllm:prefix_cache_hits_total")
      c.prefix_cache_hits += v;
    else if (name == "vllm:request_success_total")
      c.request_success += v;
    else if (name == "vllm:cache_config_info") {
      c.num_gpu_blocks = to_double(label_value(labels, "num_gpu_blocks"));
      c.block_size = to_double(label_value(labels, "block_size"));
    }
  }
  c.ok = any;
  if (!any) c.error = "no vllm:prefix_cache_queries_total in /metrics";
  return c;
}

Result<RunResult> run_load(const Workload& workload, const LoadOptions& options) {
  KVROUTE_TRY(http::Endpoint ep, http::parse_http_url(options.url));
  if (ep.tls) {
    return fail(Error::invalid("'" + options.url +
                               "': the load generator speaks plain HTTP; measure a TLS router with "
                               "wrk (scripts/bench/tls_vs_nginx.sh)"));
  }
  for (const auto& u : options.backend_metrics) {
    if (auto e = http::parse_http_url(u); !e)
      return fail(Error::invalid("--backend-metrics " + u + ": " + e.error().message));
  }
  if (options.duration.count() <= 0) return fail(Error::invalid("--duration must be positive"));
  if (options.rate < 0) return fail(Error::invalid("--rate must not be negative"));
  Runner r(workload, options, Runner::client_options());
  r.ep = ep;
  for (const auto& u : options.replica_urls) {
    KVROUTE_TRY(http::Endpoint e, http::parse_http_url(u));
    r.replicas.push_back(std::move(e));
  }
  r.spread_rng = Rng(options.seed ^ 0x73707265ULL);
  r.model = options.model;
  const std::size_t n = workload.num_requests();
  r.max_requests = options.max_requests == 0 ? n : std::min(n, options.max_requests);
  RunResult out;
  net::co_spawn(r.ioc, r.main(out), net::detached);
  r.ioc.run();
  out.records = std::move(r.records);
  out.model = r.model;
  out.hit_deadline = r.hit_deadline;
  return out;
}

}  // namespace kvroute::bench
