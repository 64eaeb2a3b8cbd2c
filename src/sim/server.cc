#include "sim/server.h"

#include <fmt/format.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <chrono>
#include <ctime>
#include <unordered_map>

#include "common/log.h"
#include "http/server.h"
#include "http/sse.h"
#include "kv_events/publisher.h"
#include "metrics/registry.h"
#include "openai/error.h"
#include "openai/request.h"
#include "prompt/prompt.h"

namespace kvroute::sim {

namespace net = boost::asio;
using http::Headers;
using http::Request;
using http::ResponseWriter;
using Clock = std::chrono::steady_clock;
constexpr auto kTuple = http::use_task_tuple;

namespace {

// vLLM's error shape: {"error": {"message", "type", "param", "code"}} with Python exception names.
std::string vllm_error(int status, std::string_view message) {
  std::string_view type = status == 404   ? "NotFoundError"
                          : status >= 500 ? "InternalServerError"
                                          : "BadRequestError";
  return openai::error_body(status, message, type);
}

std::vector<double> vllm_ttft_buckets() {
  return {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,  0.5,   0.75,
          1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
}
std::vector<double> vllm_e2e_buckets() {
  return {0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,   10.0,   15.0,  20.0,
          30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
}

struct Pending {
  explicit Pending(net::any_io_executor ex) : wake(ex) {}
  std::vector<RequestOutput> outs;
  net::steady_timer wake;
  bool finished = false;
};

}  // namespace

struct SimEngineHost {
  int index = 0;
  const SimOptions* opts = nullptr;
  std::shared_ptr<const prompt::PromptEncoder> encoder;
  std::optional<Engine> engine;
  std::unique_ptr<http::Server> server;
  std::unique_ptr<kv_events::ZmqEventPublisher> publisher;
  std::unordered_map<std::uint64_t, std::shared_ptr<Pending>> pending;
  std::unique_ptr<net::steady_timer> idle;  // the step loop waits here when there is no work
  std::uint64_t next_id = 1;
  bool stopping = false;
  metrics::Registry reg;
  metrics::Histogram* ttft = nullptr;
  metrics::Histogram* e2e = nullptr;
  EngineEndpoints endpoints;

  void wake_loop() {
    if (idle) idle->cancel();
  }

  // Publishes the engine's pending KV events as one batch, if there are any (vLLM: at most one
  // batch per engine step, only when non-empty).
  void publish_events() {
    auto events = engine->take_events();
    if (events.empty() || !publisher) return;
    kv_events::EventBatch batch;
    batch.ts =
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    batch.events = std::move(events);
    publisher->publish(batch);
  }

  http::Task<void> step_loop() {
    auto ex = co_await net::this_coro::executor;
    idle = std::make_unique<net::steady_timer>(ex);
    net::steady_timer step_timer(ex);
    const auto t0 = Clock::now();
    std::uint32_t steps_since_yield = 0;
    while (!stopping) {
      if (!engine->has_work()) {
        idle->expires_at(Clock::time_point::max());
        co_await idle->async_wait(kTuple);
        continue;
      }
      const double now_s = std::chrono::duration<double>(Clock::now() - t0).count();
      StepResult r = engine->step(now_s);
      publish_events();
      const double d = opts->time_scale > 0 ? r.duration_s / opts->time_scale : 0;
      if (d > 0) {
        step_timer.expires_after(
            std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(d)));
        co_await step_timer.async_wait(kTuple);
        steps_since_yield = 0;
      } else if (++steps_since_yield >= 8) {
        // Without a time model, let HTTP handlers run between bursts of steps.
        co_await net::post(ex, http::use_task);
        steps_since_yield = 0;
      }
      for (auto& o : r.outputs) {
        auto it = pending.find(o.request_id);
        if (it == pending.end()) continue;
        it->second->outs.push_back(o);
        if (o.finished) {
          it->second->finished = true;
          it->second->wake.cancel();
          pending.erase(it);
        } else {
          it->second->wake.cancel();
        }
      }
    }
  }

  std::string render_metrics() {
    auto s = engine->stats();
    const auto& cfg = engine->config();
    const std::string labels = fmt::format(R"(engine="0",model_name="{}")", opts->model);
    std::string out;
    auto gauge = [&](const char* name, const char* help, double v) {
      out += fmt::format("# HELP {0} {1}\n# TYPE {0} gauge\n{0}{{{2}}} {3}\n", name, help, labels,
                         metrics::format_value(v));
    };
    auto counter = [&](const char* name, const char* help, double v) {
      out += fmt::format("# HELP {0} {1}\n# TYPE {0} counter\n{0}{{{2}}} {3}\n", name, help, labels,
                         metrics::format_value(v));
    };
    gauge("vllm:num_requests_running", "Number of requests in model execution batches.",
          s.num_requests_running);
    gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
          s.num_requests_waiting);
    gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.",
          s.kv_cache_usage_perc);
    counter("vllm:prefix_cache_queries_total",
            "Prefix cache queries, in terms of number of queried tokens.",
            static_cast<double>(s.prefix_cache_queries_total));
    counter("vllm:prefix_cache_hits_total",
            "Prefix cache hits, in terms of number of cached tokens.",
            static_cast<double>(s.prefix_cache_hits_total));
    counter("vllm:num_preemptions_total", "Cumulative number of preemption from the engine.",
            static_cast<double>(s.num_preemptions_total));
    counter("vllm:prompt_tokens_total", "Number of prefill tokens processed.",
            static_cast<double>(s.prompt_tokens_total));
    counter("vllm:prompt_tokens_cached_total",
            "Number of cached prompt tokens (local prefix cache).",
            static_cast<double>(s.prompt_tokens_cached_total));
    counter("vllm:generation_tokens_total", "Number of generation tokens processed.",
            static_cast<double>(s.generation_tokens_total));
    out +=
        "# HELP vllm:request_success_total Count of successfully processed requests.\n"
        "# TYPE vllm:request_success_total counter\n";
    out += fmt::format("vllm:request_success_total{{{},finished_reason=\"length\"}} {}\n", labels,
                       s.request_success_length_total);
    out += fmt::format("vllm:request_success_total{{{},finished_reason=\"stop\"}} {}\n", labels,
                       s.request_success_stop_total);
    out +=
        "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n# TYPE "
        "vllm:cache_config_info gauge\n";
    out += fmt::format(
        "vllm:cache_config_info{{block_size=\"{}\",cache_dtype=\"auto\",enable_prefix_caching=\"{}"
        "\",engine=\"0\","
        "num_gpu_blocks=\"{}\",prefix_caching_hash_algo=\"kvroute-xxh3\"}} 1\n",
        cfg.block_size, cfg.enable_prefix_caching ? "True" : "False", cfg.num_gpu_blocks);
    out += reg.render();
    return out;
  }

  http::Task<void> handle(Request& req, ResponseWriter& w) {
    const Headers none;
    const std::string_view path = req.path();
    if (path == "/health") {
      // The Date header uvicorn sends with every vLLM response (RFC 9110 IMF-fixdate).
      const auto now =
          std::chrono::system_clock::now() +
          std::chrono::milliseconds(static_cast<std::int64_t>(opts->clock_skew_s * 1e3));
      const std::time_t t = std::chrono::system_clock::to_time_t(now);
      std::tm tm{};
      ::gmtime_r(&t, &tm);
      char date[64];
      std::strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
      const Headers dated{{"Date", date}};
      std::string empty;
      co_await w.send(200, "application/json", std::move(empty), dated);
    } else if (path == "/version") {
      std::string body = R"({"version":")";
      http::append_json_escaped(body, opts->vllm_version);
      body += "\"}";
      co_await w.send(200, "application/json", std::move(body), none);
    } else if (path == "/metrics") {
      std::string body = render_metrics();
      co_await w.send(200, "text/plain; version=0.0.4; charset=utf-8", std::move(body), none);
    } else if (path == "/v1/models") {
      std::string body = R"({"object":"list","data":[{"id":")";
      http::append_json_escaped(body, opts->model);
      body += R"(","object":"model","created":0,"owned_by":"vllm","root":")";
      http::append_json_escaped(body, opts->model);
      body += fmt::format(R"(","parent":null,"max_model_len":{}}}]}})", engine->max_model_len());
      co_await w.send(200, "application/json", std::move(body), none);
    } else if (path == "/reset_prefix_cache" && req.method == "POST") {
      const bool ok = engine->reset_prefix_cache();
      if (ok) publish_events();
      std::string body =
          ok ? "" : vllm_error(503, "cannot reset the prefix cache while requests are running");
      co_await w.send(ok ? 200 : 503, "application/json", std::move(body), none);
    } else if (path == "/tokenize" && req.method == "POST") {
      co_await tokenize(req, w);
    } else if ((path == "/v1/completions" || path == "/v1/chat/completions") &&
               req.method == "POST") {
      co_await generate(req, w,
                        path == "/v1/completions" ? openai::Endpoint::kCompletions
                                                  : openai::Endpoint::kChatCompletions);
    } else {
      std::string body = R"({"detail":"Not Found"})";
      co_await w.send(404, "application/json", std::move(body), none);
    }
  }

  // A request's fields and its prompt's token ids, or the status and message vLLM answers with.
  struct Prompt {
    openai::ParsedRequest request;
    std::vector<std::uint32_t> ids;
  };
  struct Refusal {
    int status;
    std::string message;
  };
  Expected<Prompt, Refusal> read_prompt(openai::Endpoint kind, std::string_view body,
                                        bool check_model) const {
    auto parsed = openai::parse_request(kind, body);
    if (!parsed) return make_unexpected(Refusal{400, parsed.error().message});
    if (check_model && !parsed->model.empty() && parsed->model != opts->model) {
      return make_unexpected(Refusal{404, "The model `" + parsed->model + "` does not exist."});
    }
    auto ids = encoder->encode(*parsed);
    if (!ids) return make_unexpected(Refusal{400, ids.error().message});
    return Prompt{std::move(*parsed), std::move(*ids)};
  }

  static http::Task<void> refuse(ResponseWriter& w, int status, std::string_view message) {
    std::string body = vllm_error(status, message);
    const Headers none;
    co_await w.send(status, "application/json", std::move(body), none);
  }

  http::Task<void> tokenize(Request& req, ResponseWriter& w) {
    const Headers none;
    const bool chat = req.body.find("\"messages\"") != std::string::npos;
    auto prompt =
        read_prompt(chat ? openai::Endpoint::kChatCompletions : openai::Endpoint::kCompletions,
                    req.body, /*check_model=*/false);
    if (!prompt) {
      co_await refuse(w, prompt.error().status, prompt.error().message);
      co_return;
    }
    const auto& ids = prompt->ids;
    std::string body =
        fmt::format(R"({{"count":{},"max_model_len":{},"tokens":[{}],"token_strs":null}})",
                    ids.size(), engine->max_model_len(), fmt::join(ids, ","));
    co_await w.send(200, "application/json", std::move(body), none);
  }

  http::Task<void> generate(Request& req, ResponseWriter& w, openai::Endpoint kind) {
    const Headers none;
    const auto t0 = Clock::now();
    auto prompt = read_prompt(kind, req.body, /*check_model=*/true);
    if (!prompt) {
      co_await refuse(w, prompt.error().status, prompt.error().message);
      co_return;
    }
    const openai::ParsedRequest* parsed = &prompt->request;
    SimRequest sr;
    sr.prompt_token_ids = std::move(prompt->ids);
    // Completions default to 16 tokens as in the OpenAI API (configurable); chat requests without
    // max_tokens may run to the context limit, as vLLM allows; 0 reaches the engine's own 400.
    if (parsed->max_tokens) {
      sr.max_tokens =
          static_cast<std::uint32_t>(std::min<std::int64_t>(*parsed->max_tokens, 0xffffffffLL));
    } else if (kind == openai::Endpoint::kCompletions) {
      sr.max_tokens = opts->default_max_tokens;
    }
    auto id = engine->add_request(std::move(sr));
    if (!id) {
      co_await refuse(w, 400, id.error().message);
      co_return;
    }
    auto ex = co_await net::this_coro::executor;
    auto p = std::make_shared<Pending>(ex);
    pending[*id] = p;
    wake_loop();
    const std::uint64_t rid = *id;
    w.on_client_gone([this, rid, p] {
      engine->abort(rid);
      pending.erase(rid);
      p->finished = true;
      p->wake.cancel();
    });

    const bool chat = kind == openai::Endpoint::kChatCompletions;
    const std::string req_id =
        fmt::format("{}-{:016x}{:08x}", chat ? "chatcmpl" : "cmpl", rid, index);
    const long created = static_cast<long>(std::chrono::duration_cast<std::chrono::seconds>(
                                               std::chrono::system_clock::now().time_since_epoch())
                                               .count());
    std::string model_json;
    http::append_json_escaped(model_json, opts->model);
    const std::string head = fmt::format(
        R"({{"id":"{}","object":"{}","created":{},"model":"{}",)", req_id,
        chat ? (parsed->stream ? "chat.completion.chunk" : "chat.completion") : "text_completion",
        created, model_json);
    std::string text;
    std::uint32_t prompt_tokens = 0, cached = 0, completion = 0;
    const char* finish = "length";
    bool first = true;
    if (parsed->stream && !co_await w.start_stream(200, "text/event-stream", none)) co_return;
    bool done = false;
    while (!done) {
      while (p->outs.empty() && !p->finished) {
        p->wake.expires_at(Clock::time_point::max());
        co_await p->wake.async_wait(kTuple);
      }
      if (p->outs.empty()) break;  // aborted
      auto outs = std::move(p->outs);
      p->outs.clear();
      std::string chunk;
      for (const auto& o : outs) {
        if (o.first_token && ttft)
          ttft->observe(std::chrono::duration<double>(Clock::now() - t0).count());
        prompt_tokens = o.prompt_tokens;
        cached = o.cached_tokens;
        completion = o.num_output_tokens;
        std::string piece = encoder->decode_one(o.token_id);
        if (o.finished) {
          done = true;
          finish = finish_reason_name(o.finish_reason);
        }
        if (!parsed->stream) {
          text += piece;
          continue;
        }
        std::string esc;
        http::append_json_escaped(esc, piece);
        const std::string fin = o.finished ? fmt::format("\"{}\"", finish) : "null";
        if (chat) {
          if (first) {
            chunk += http::sse_event(
                head +
                R"("choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]})");
          }
          chunk += http::sse_event(
              head +
              fmt::format(
                  R"("choices":[{{"index":0,"delta":{{"content":"{}"}},"logprobs":null,"finish_reason":{}}}]}})",
                  esc, fin));
        } else {
          chunk += http::sse_event(
              head +
              fmt::format(
                  R"("choices":[{{"index":0,"text":"{}","logprobs":null,"finish_reason":{},"stop_reason":null}}]}})",
                  esc, fin));
        }
        first = false;
      }
      if (parsed->stream && !chunk.empty() && !co_await w.write_chunk(chunk)) {
        engine->abort(rid);
        pending.erase(rid);
        co_return;
      }
    }
    if (!done) co_return;  // client went away
    if (e2e) e2e->observe(std::chrono::duration<double>(Clock::now() - t0).count());
    const std::string usage = fmt::format(
        R"("usage":{{"prompt_tokens":{},"total_tokens":{},"completion_tokens":{},"prompt_tokens_details":{{"cached_tokens":{}}}}})",
        prompt_tokens, prompt_tokens + completion, completion, cached);
    if (parsed->stream) {
      std::string tail;
      if (parsed->include_usage) tail += http::sse_event(head + R"("choices":[],)" + usage + "}");
      tail += "data: [DONE]\n\n";
      co_await w.write_chunk(tail);
      co_await w.end_stream();
      co_return;
    }
    std::string esc;
    http::append_json_escaped(esc, text);
    std::string body = head;
    if (chat) {
      body += fmt::format(
          R"("choices":[{{"index":0,"message":{{"role":"assistant","content":"{}","tool_calls":[]}},"logprobs":null,"finish_reason":"{}","stop_reason":null}}],)",
          esc, finish);
    } else {
      body += fmt::format(
          R"("choices":[{{"index":0,"text":"{}","logprobs":null,"finish_reason":"{}","stop_reason":null}}],)",
          esc, finish);
    }
    body += usage;
    body += "}";
    co_await w.send(200, "application/json", std::move(body), none);
  }
};

struct SimCluster::Impl {
  SimOptions opts;
  std::vector<std::unique_ptr<SimEngineHost>> hosts;
  std::vector<EngineEndpoints> endpoints;
  std::shared_ptr<kv_events::PublisherHub> hub;
  bool started = false;
};

SimCluster::SimCluster(SimOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->opts = std::move(options);
}
SimCluster::~SimCluster() { stop(); }
const std::vector<EngineEndpoints>& SimCluster::endpoints() const { return impl_->endpoints; }

Status SimCluster::start() {
  auto& im = *impl_;
  auto& o = im.opts;
  if (o.engines < 1 || o.engines > 1024) return fail(Error::invalid("--engines must be 1..1024"));
  if (!(o.time_scale > 0)) return fail(Error::invalid("--time-scale must be positive"));
  EngineConfig ec = o.engine;
  ec.model = o.model;
  if (o.preset != "none") {
    auto cm = CostModel::preset(o.preset);
    if (!cm) {
      std::string names;
      for (const auto& n : CostModel::preset_names()) names += " " + n;
      return fail(Error::invalid("unknown preset '" + o.preset + "' (known: none" + names + ")"));
    }
    ec.cost = *cm;
  }
  auto encoder = prompt::PromptEncoder::load(o.tokenizer, ec.vocab_size);
  if (!encoder) return fail(encoder.error());
  if (o.kv_events_port != 0 || o.kv_events_ephemeral) {
    auto hub = kv_events::PublisherHub::create();
    if (!hub) return fail(hub.error());
    im.hub = *hub;
  }
  for (int i = 0; i < o.engines; ++i) {
    auto h = std::make_unique<SimEngineHost>();
    h->index = i;
    h->opts = &im.opts;
    h->encoder = *encoder;
    auto eng = Engine::create(ec);
    if (!eng) return fail(eng.error());
    h->engine.emplace(std::move(*eng));
    h->ttft = &h->reg
                   .histogram("vllm:time_to_first_token_seconds",
                              "Histogram of time to first token in seconds.", vllm_ttft_buckets(),
                              {"engine", "model_name"})
                   .with({"0", o.model});
    h->e2e = &h->reg
                  .histogram("vllm:e2e_request_latency_seconds",
                             "Histogram of e2e request latency in seconds.", vllm_e2e_buckets(),
                             {"engine", "model_name"})
                  .with({"0", o.model});
    http::ServerOptions so;
    so.address = o.host;
    so.port = o.port == 0 ? 0 : static_cast<std::uint16_t>(o.port + i);
    so.threads = 1;
    so.error_body = [](int status, std::string_view message) {
      return openai::error_body(status, message);
    };
    SimEngineHost* hp = h.get();
    h->server = std::make_unique<http::Server>(
        so, [hp](Request& r, ResponseWriter& w) { return hp->handle(r, w); });
    auto port = h->server->start();
    if (!port) return fail(port.error());
    h->endpoints.url = fmt::format("http://{}:{}", o.host, *port);
    if (im.hub) {
      kv_events::PublisherConfig pc;
      if (o.kv_events_ephemeral) {
        pc.endpoint = "tcp://127.0.0.1:*";
        pc.replay_endpoint = "tcp://127.0.0.1:*";
      } else {
        const int replay_base = o.kv_replay_port ? o.kv_replay_port : o.kv_events_port + o.engines;
        pc.endpoint = fmt::format("tcp://{}:{}", o.host, o.kv_events_port + i);
        pc.replay_endpoint = fmt::format("tcp://{}:{}", o.host, replay_base + i);
        pc.attach = kv_events::PublisherConfig::Attach::kBind;
      }
      pc.topic = fmt::format("kv@{}:{}@{}", o.host, *port, o.model);
      pc.encoding =
          o.kv_events_map_encoding ? kv_events::Encoding::kMap : kv_events::Encoding::kArray;
      auto pub = kv_events::ZmqEventPublisher::create(pc, im.hub);
      if (!pub) return fail(pub.error());
      h->publisher = std::move(*pub);
      h->endpoints.kv_events = h->publisher->endpoint();
      h->endpoints.kv_replay = h->publisher->replay_endpoint();
    }
    net::co_spawn(h->server->executor(0), hp->step_loop(), net::detached);
    im.endpoints.push_back(h->endpoints);
    im.hosts.push_back(std::move(h));
  }
  im.started = true;
  return {};
}

void SimCluster::stop() {
  for (auto& h : impl_->hosts) {
    if (h->server) {
      SimEngineHost* hp = h.get();
      net::post(h->server->executor(0), [hp] {
        hp->stopping = true;
        hp->wake_loop();
      });
      h->server->stop(std::chrono::milliseconds(200));
    }
    if (h->publisher) h->publisher->stop();
  }
  impl_->hosts.clear();
}

std::vector<std::uint64_t> SimCluster::cached_block_hashes(int engine) {
  auto* h = impl_->hosts.at(static_cast<std::size_t>(engine)).get();
  auto fut =
      net::post(h->server->executor(0), std::packaged_task<std::vector<std::uint64_t>()>([h] {
                  return h->engine->cached_block_hashes_for_test();
                }));
  return fut.get();
}

EngineStats SimCluster::stats(int engine) {
  auto* h = impl_->hosts.at(static_cast<std::size_t>(engine)).get();
  auto fut = net::post(h->server->executor(0),
                       std::packaged_task<EngineStats()>([h] { return h->engine->stats(); }));
  return fut.get();
}

int run_sim(SimOptions options) {
  SimCluster cluster(std::move(options));
  if (auto ok = cluster.start(); !ok) {
    spdlog::error("{}", ok.error().message);
    return 1;
  }
  for (std::size_t i = 0; i < cluster.endpoints().size(); ++i) {
    const auto& e = cluster.endpoints()[i];
    spdlog::info("engine {}: {}{}{}", i, e.url,
                 e.kv_events.empty() ? "" : " kv-events " + e.kv_events,
                 e.kv_replay.empty() ? "" : " replay " + e.kv_replay);
  }
  net::io_context signals_ctx;
  net::signal_set signals(signals_ctx, SIGINT, SIGTERM);
  signals.async_wait([](const boost::system::error_code&, int) {});
  signals_ctx.run();
  cluster.stop();
  return 0;
}

SimOptions loopback_options(int engines, std::string model, std::uint32_t num_gpu_blocks) {
  SimOptions o;
  o.engines = engines;
  o.port = 0;
  o.preset = "none";
  o.model = std::move(model);
  o.kv_events_ephemeral = true;
  o.engine.num_gpu_blocks = num_gpu_blocks;
  return o;
}

}  // namespace kvroute::sim
