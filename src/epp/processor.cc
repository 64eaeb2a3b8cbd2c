#include "epp/internal/processor.h"

#include <algorithm>

#include "common/log.h"
#include "http/message.h"
#include "openai/error.h"

namespace kvroute::epp {

namespace core_pb = envoy::config::core::v3;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// A header in Envoy's form: the value in raw_value only (Envoy rejects both set), overwriting.
void set_header(pb::HeaderMutation& m, std::string_view key, std::string_view value) {
  auto* opt = m.add_set_headers();
  opt->mutable_header()->set_key(std::string(key));
  opt->mutable_header()->set_raw_value(std::string(value));
  opt->set_append_action(core_pb::HeaderValueOption::OVERWRITE_IF_EXISTS_OR_ADD);
}

std::string_view strip_query(std::string_view path) {
  return path.substr(0, std::min(path.find('?'), path.size()));
}

}  // namespace

std::string endpoint_address(const http::Endpoint& ep) {
  if (ep.host.find(':') != std::string::npos) {
    return "[" + ep.host + "]:" + std::to_string(ep.port);
  }
  return ep.host + ":" + std::to_string(ep.port);
}

std::string LabelCap::operator()(std::string_view v) {
  MutexLock lock(mu_);
  auto it = std::lower_bound(seen_.begin(), seen_.end(), v);
  if (it != seen_.end() && *it == v) return *it;
  if (seen_.size() >= limit_) return "other";
  return *seen_.insert(it, std::string(v));
}

EppMetrics::EppMetrics(metrics::Registry& reg)
    : requests(reg.counter("llm_d_epp_request_total", "Requests routed, by model.",
                           {"model_name", "target_model_name"})),
      errors(reg.counter("llm_d_epp_request_error_total",
                         "Requests refused by the endpoint picker, by model and status code.",
                         {"model_name", "target_model_name", "error_code"})),
      duration(reg.histogram("llm_d_epp_request_duration_seconds",
                             "From request headers to the end of the response, at the EPP.",
                             metrics::latency_buckets(), {"model_name", "target_model_name"})),
      ttft(reg.histogram("llm_d_epp_request_ttft_seconds",
                         "From the pick to the first response byte, at the EPP.",
                         metrics::latency_buckets(), {"model_name", "target_model_name"})),
      running(reg.gauge("llm_d_epp_request_running", "Requests routed and not yet answered.",
                        {"model_name", "target_model_name"})),
      scheduler(reg.histogram("llm_d_epp_scheduler_e2e_duration_seconds",
                              "Time to route one request: parse, prompt blocks, candidates, pick.",
                              metrics::latency_buckets())),
      ready(reg.gauge("llm_d_epp_ready_endpoints", "Endpoints healthy and not ejected.")),
      streams(reg.counter("kvroute_epp_streams_total", "ext_proc streams by body mode and outcome.",
                          {"mode", "outcome"})),
      flow_requests(reg.counter("llm_d_epp_flow_control_requests_total",
                                "Total number of requests processed by the Flow Control layer.",
                                {"outcome", "priority", "inference_pool"})),
      flow_queue_duration(reg.histogram(
          "llm_d_epp_flow_control_request_queue_duration_seconds",
          "Distribution of total time requests spend in the Flow Control layer (from enqueue to "
          "final outcome).",
          {0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
           30.0, 60.0},
          {"fairness_id", "priority", "outcome", "inference_pool", "model_name",
           "target_model_name"})),
      flow_pool_saturation(reg.gauge(
          "llm_d_epp_flow_control_pool_saturation",
          "Pool saturation gating Flow Control dispatch: the mean over endpoints of max(estimated "
          "waiting / queue threshold, KV usage / KV threshold), stale or missing metrics as 1. "
          "Stage decode (monolithic engines) and effective (the value that gates).",
          {"inference_pool", "stage"})) {}

std::string_view llmd_flow_outcome(flow::Outcome o, bool queued) {
  switch (o) {
    case flow::Outcome::kDispatched:
      return "Dispatched";
    case flow::Outcome::kRejectedCapacity:
      return "RejectedCapacity";
    case flow::Outcome::kExpired:
      return "EvictedTTL";
    case flow::Outcome::kCancelled:
      return "EvictedContextCancelled";
    case flow::Outcome::kShuttingDown:
      return queued ? "EvictedOther" : "RejectedOther";
    case flow::Outcome::kRejectedSaturated:  // sheddable under saturation (llm-d queues these)
    case flow::Outcome::kRateLimited:
      return "RejectedOther";
  }
  return "RejectedOther";
}

StreamProcessor::StreamProcessor(const EppCore& core) : core_(core), t0_(Clock::now()) {}

StreamProcessor::~StreamProcessor() { on_stream_end(); }

std::string_view StreamProcessor::header(std::string_view name) const {
  for (const auto& [k, v] : headers_) {
    if (k == name) return v;
  }
  return {};
}

bool StreamProcessor::on_request(const pb::ProcessingRequest& in,
                                 std::vector<pb::ProcessingResponse>& out) {
  if (done_) return false;
  if (!mode_known_) {
    mode_known_ = true;
    switch (core_.body_mode) {
      case BodyMode::kFullDuplex:
        full_duplex_ = true;
        break;
      case BodyMode::kBuffered:
        full_duplex_ = false;
        break;
      case BodyMode::kAuto:
        // Envoy names its modes in the first message; without them, llm-d's mode.
        full_duplex_ =
            !in.has_protocol_config() || in.protocol_config().request_body_mode() ==
                                             envoy::extensions::filters::http::ext_proc::v3::
                                                 ProcessingMode::FULL_DUPLEX_STREAMED;
        break;
    }
  }
  switch (in.request_case()) {
    case pb::ProcessingRequest::kRequestHeaders:
      on_request_headers(in, out);
      break;
    case pb::ProcessingRequest::kRequestBody:
      on_request_body(in.request_body(), out);
      break;
    case pb::ProcessingRequest::kRequestTrailers:
      on_request_trailers(out);
      break;
    case pb::ProcessingRequest::kResponseHeaders:
      on_response_headers(in.response_headers(), out);
      break;
    case pb::ProcessingRequest::kResponseBody:
      on_response_body(in.response_body(), out);
      break;
    case pb::ProcessingRequest::kResponseTrailers:
      out.emplace_back().mutable_response_trailers();
      finish(response_status_ > 0 && response_status_ < 500);
      break;
    case pb::ProcessingRequest::REQUEST_NOT_SET:
      break;
  }
  return !done_;
}

void StreamProcessor::on_request_headers(const pb::ProcessingRequest& in,
                                         std::vector<pb::ProcessingResponse>& out) {
  t0_ = Clock::now();
  const auto& h = in.request_headers();
  headers_.clear();
  for (const auto& hv : h.headers().headers()) {
    std::string key = hv.key();
    std::transform(key.begin(), key.end(), key.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    headers_.emplace_back(std::move(key), hv.raw_value().empty() ? hv.value() : hv.raw_value());
  }
  if (core_.gate != nullptr && core_.gate->checks_api_keys()) {
    // One credential: with two, the EPP could approve one and the engine read the other.
    const auto fields = std::count_if(headers_.begin(), headers_.end(),
                                      [](const auto& kv) { return kv.first == "authorization"; });
    auto who = fields > 1 ? core_.gate->refuse_client(auth::Refusal::kMalformed)
                          : core_.gate->check_client(header("authorization"));
    if (!who) {
      refuse(401, std::string(auth::refusal_message(who.error())), {}, out, "invalid_api_key");
      return;
    }
    tenant_ = who->tenant;
  }
  // The subset hint: a list of "ip:port" (or "ip": every port), or one comma-separated string
  // (what header-to-metadata filters produce).
  const auto& fm = in.metadata_context().filter_metadata();
  if (auto ns = fm.find(std::string(kSubsetNamespace)); ns != fm.end()) {
    const auto& fields = ns->second.fields();
    if (auto f = fields.find(std::string(kSubsetKey)); f != fields.end()) {
      std::vector<std::string> subset;
      auto add = [&](std::string_view s) {
        while (!s.empty()) {
          auto comma = s.find(',');
          auto item = s.substr(0, comma);
          while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
          while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
          if (!item.empty()) subset.emplace_back(item);
          if (comma == std::string_view::npos) break;
          s.remove_prefix(comma + 1);
        }
      };
      if (f->second.has_list_value()) {
        for (const auto& v : f->second.list_value().values()) add(v.string_value());
      } else {
        add(f->second.string_value());
      }
      subset_ = std::move(subset);
    }
  }
  if (h.end_of_stream()) {
    // No body (a GET): route now, on load alone.
    route(out);
    return;
  }
  if (!full_duplex_) {
    // Envoy waits for this reply before it sends the body: continue, pick on the body's reply.
    out.emplace_back().mutable_request_headers()->mutable_response();
  }
}

bool StreamProcessor::on_request_body(const pb::HttpBody& body,
                                      std::vector<pb::ProcessingResponse>& out) {
  if (request_routed_) {
    // Only a non-conforming gateway sends body after the end of stream; continue.
    if (!full_duplex_) out.emplace_back().mutable_request_body()->mutable_response();
    return true;
  }
  if (body_.size() + body.body().size() > core_.max_body_bytes) {
    refuse(413,
           "request body exceeds the endpoint picker's limit of " +
               std::to_string(core_.max_body_bytes) + " bytes",
           {}, out);
    return false;
  }
  body_ += body.body();
  if (body.end_of_stream() || body.end_of_stream_without_message()) return route(out);
  if (!full_duplex_) out.emplace_back().mutable_request_body()->mutable_response();
  return true;
}

void StreamProcessor::on_request_trailers(std::vector<pb::ProcessingResponse>& out) {
  if (queued_) {
    // Their reply follows the pick's, when flow control answers.
    trailers_pending_ = true;
    trailers_while_queued_ = true;
    return;
  }
  if (!request_routed_) {
    // The body's end of stream never comes when a client sends trailers: they end the body.
    trailers_pending_ = true;
    if (!route(out)) return;
  }
  out.emplace_back().mutable_request_trailers();
}

bool StreamProcessor::route(std::vector<pb::ProcessingResponse>& out) {
  request_routed_ = true;
  const auto start = Clock::now();
  auto& r = *core_.router;
  const std::string_view path = strip_query(header(":path"));
  const bool completions = path == "/v1/completions";
  const bool chat = path == "/v1/chat/completions";
  const openai::ParsedRequest* parsed = nullptr;
  if ((completions || chat) && !body_.empty()) {
    prepared_.emplace(r.prepare(
        completions ? openai::Endpoint::kCompletions : openai::Endpoint::kChatCompletions, body_));
    if (!prepared_->parsed) {
      refuse(400, prepared_->parsed.error().message, prepared_->parsed.error().param, out);
      return false;
    }
    if (prepared_->parsed->model.empty()) {
      refuse(400, "you must provide a model parameter", "model", out);
      return false;
    }
    r.route_request(*prepared_, header(r.config().session_header), rr_);
    parsed = &*prepared_->parsed;
  } else {
    // Another path, or no body: routed on load, among every backend (the model is unknown).
    rr_.request = &bodiless_;
    rr_.session_key = header(r.config().session_header);
    parsed = &bodiless_;
  }
  model_label_ = core_.metrics ? core_.metrics->models(parsed->model) : std::string();

  parsed_ = parsed;
  if (r.flow_control() && full_duplex_) return admit(out, start);
  router::Candidates candidates;
  if (auto err = candidates_now(routing::steady_ms(start), candidates)) {
    refuse(err->status, std::move(err->message), err->param, out);
    return false;
  }
  assignment_ = r.pick(rr_, candidates);
  if (!assignment_) {
    refuse(503, "no backend could serve the request", {}, out);
    return false;
  }
  return emit_pick(out, start);
}

std::optional<router::CandidateError> StreamProcessor::candidates_now(
    std::int64_t now_ms, router::Candidates& candidates) const {
  if (auto err = core_.router->select_candidates(*parsed_, now_ms, candidates)) return err;
  if (subset_) {
    auto outside = [&](const router::Backend* b) {
      const std::string addr = endpoint_address(b->endpoint);
      for (const auto& s : *subset_) {
        if (s == addr || s == b->endpoint.host) return false;
      }
      return true;
    };
    candidates.erase(std::remove_if(candidates.begin(), candidates.end(), outside),
                     candidates.end());
    if (candidates.empty())
      return router::CandidateError{503, "no available endpoint in the gateway's subset hint", {}};
  }
  return std::nullopt;
}

bool StreamProcessor::admit(std::vector<pb::ProcessingResponse>& out, Clock::time_point start) {
  auto& r = *core_.router;
  const auto& fcfg = r.config().flow_control;
  {
    // Refusals that waiting cannot cure come first (unknown model, no healthy engine).
    router::Candidates candidates;
    if (auto err = candidates_now(routing::steady_ms(start), candidates)) {
      refuse(err->status, std::move(err->message), err->param, out);
      return false;
    }
  }
  pending_ = std::make_unique<Pending>();
  auto* p = pending_.get();
  {
    MutexLock l(p->mu);
    p->notify = admission_handler_;
  }
  auto& t = p->ticket;
  t.priority = r.priority_of(header(fcfg.objective_header), tenant_, parsed_->model);
  const std::string_view fid = header(fcfg.fairness_header);
  t.fairness_id = std::string(!fid.empty()       ? fid
                              : !tenant_.empty() ? std::string_view(tenant_)
                                                 : rr_.session_key);
  t.pool = parsed_->model;
  t.bytes = body_.size();
  t.input_tokens = static_cast<double>(rr_.prompt_tokens);
  t.output_tokens = static_cast<double>(rr_.expected_output_tokens);
  // Runs on this thread (at once) or on flow control's thread under its lock while this stream
  // waits: it touches only the request and assignment_, which nothing else does meanwhile.
  t.try_dispatch = [this] {
    const auto now = routing::steady_now_ms();
    router::Candidates candidates;
    if (candidates_now(now, candidates)) return false;
    const std::int64_t since = pending_->ticket.enqueued_ms;  // 0: not queued (yet)
    assignment_ = core_.router->pick_with_room(rr_, candidates, now, since > 0 ? since : -1);
    return static_cast<bool>(assignment_);
  };
  t.done = [p](const flow::Admission& a) {
    MutexLock l(p->mu);
    if (p->notify) p->notify(a);
    p->answered = true;
    p->cv.notify_all();
  };
  route_start_ = start;
  const flow::Admission adm = r.flow_control()->admit(t, routing::steady_ms(start));
  if (adm.queued) {
    queued_ = true;
    return true;  // complete() replies
  }
  return complete(adm, out);
}

void StreamProcessor::record_flow(const flow::Admission& a) {
  if (!pending_) return;
  const auto& t = pending_->ticket;
  core_.router->record_admission(t.priority, t.fairness_id, a);
  if (!core_.metrics) return;
  auto& m = *core_.metrics;
  const std::string priority = std::to_string(t.priority);
  const std::string_view outcome = llmd_flow_outcome(a.outcome, a.queued);
  m.flow_requests.with({outcome, priority, core_.inference_pool}).inc();
  m.flow_queue_duration
      .with({m.fairness_ids(t.fairness_id), priority, outcome, core_.inference_pool, model_label_,
             model_label_})
      .observe(static_cast<double>(a.queued_ms) / 1000.0);
}

bool StreamProcessor::complete(const flow::Admission& a, std::vector<pb::ProcessingResponse>& out) {
  queued_ = false;
  record_flow(a);
  if (a.outcome != flow::Outcome::kDispatched) {
    const int status = flow::http_status(a.outcome);
    refuse(status == 499 ? 503 : status,
           a.outcome == flow::Outcome::kRejectedSaturated
               ? "the engines are saturated and this request's priority is sheddable; retry later"
           : a.outcome == flow::Outcome::kRejectedCapacity
               ? "the router's queue for this priority is full; retry later"
           : a.outcome == flow::Outcome::kRateLimited
               ? "rate limit reached for this tenant; retry later"
           : a.outcome == flow::Outcome::kExpired
               ? "the request waited in the router's queue past its deadline"
               : "the router is shutting down",
           {}, out);
    // As serve: when to retry, and why (llm-d's x-llm-d-request-dropped-reason names too).
    auto& hs = *out.back().mutable_immediate_response()->mutable_headers();
    set_header(hs, "retry-after", std::to_string(std::max(1, a.retry_after_s)));
    set_header(hs, "x-kvroute-dropped-reason", std::string(flow::to_string(a.outcome)));
    return false;
  }
  const bool ok = emit_pick(out, route_start_);
  if (ok && trailers_while_queued_) out.emplace_back().mutable_request_trailers();
  return ok;
}

bool StreamProcessor::emit_pick(std::vector<pb::ProcessingResponse>& out, Clock::time_point start) {
  routed_at_ = Clock::now();
  const std::string_view path = strip_query(header(":path"));
  const router::Backend& b = *assignment_.backend();
  const std::string dest = endpoint_address(b.endpoint);
  if (core_.metrics) {
    core_.metrics->scheduler.with({}).observe(seconds_between(start, routed_at_));
    core_.metrics->requests.with({model_label_, model_label_}).inc();
    core_.metrics->running.with({model_label_, model_label_}).add(1);
  }
  spdlog::debug("epp route {} -> {} ({})", path, dest, assignment_.decision().reason);

  pb::ProcessingResponse picked;
  pb::CommonResponse* common = nullptr;
  const bool bodiless = body_.empty() && !trailers_pending_;
  if (full_duplex_ || bodiless) {
    common = picked.mutable_request_headers()->mutable_response();
  } else {
    common = picked.mutable_request_body()->mutable_response();
  }
  // Envoy acts on clear_route_cache only with a header mutation in the same reply.
  common->set_clear_route_cache(true);
  auto* mutation = common->mutable_header_mutation();
  set_header(*mutation, kDestinationHeader, dest);
  if (full_duplex_ && !bodiless)
    set_header(*mutation, "content-length", std::to_string(body_.size()));
  if (core_.debug_headers) set_header(*mutation, "x-kvroute-reason", assignment_.decision().reason);
  if (core_.upstream_auth == EppCore::UpstreamAuth::kNone) {
    mutation->add_remove_headers("authorization");
  } else if (core_.upstream_auth == EppCore::UpstreamAuth::kKey) {
    set_header(*mutation, "authorization", core_.upstream_authorization);
  }
  auto& lb = (*picked.mutable_dynamic_metadata()->mutable_fields())[std::string(kLbNamespace)];
  (*lb.mutable_struct_value()->mutable_fields())[std::string(kDestinationHeader)].set_string_value(
      dest);
  out.push_back(std::move(picked));

  if (full_duplex_ && !bodiless) {
    // The body goes back as it came, in chunks Envoy accepts; end_of_stream on the last unless
    // trailers follow.
    const std::size_t n = body_.size();
    std::size_t off = 0;
    do {
      const std::size_t len = std::min(core_.chunk_bytes, n - off);
      auto* sr = out.emplace_back()
                     .mutable_request_body()
                     ->mutable_response()
                     ->mutable_body_mutation()
                     ->mutable_streamed_response();
      sr->set_body(body_.substr(off, len));
      off += len;
      sr->set_end_of_stream(off == n && !trailers_pending_);
    } while (off < n);
  }
  std::string().swap(body_);
  return true;
}

void StreamProcessor::refuse(int status, std::string message, std::string_view param,
                             std::vector<pb::ProcessingResponse>& out, std::string_view code) {
  auto* ir = out.emplace_back().mutable_immediate_response();
  ir->mutable_status()->set_code(static_cast<envoy::type::v3::StatusCode>(status));
  // OpenAI answers a wrong key with type invalid_request_error, code invalid_api_key.
  ir->set_body(openai::error_body_for_param(status, message, param,
                                            status == 401 ? "invalid_request_error" : "", code));
  set_header(*ir->mutable_headers(), "content-type", "application/json");
  if (status == 401) set_header(*ir->mutable_headers(), "www-authenticate", "Bearer");
  ir->set_details("kvroute_epp_" + std::to_string(status));
  if (core_.metrics) {
    core_.metrics->errors.with({model_label_, model_label_, std::to_string(status)}).inc();
  }
  spdlog::info("epp {} {} refused: {}", header(":method"), header(":path"), message);
  done_ = true;
  assignment_.release();
}

void StreamProcessor::on_response_headers(const pb::HttpHeaders& h,
                                          std::vector<pb::ProcessingResponse>& out) {
  for (const auto& hv : h.headers().headers()) {
    if (hv.key() == ":status") {
      const std::string& v = hv.raw_value().empty() ? hv.value() : hv.raw_value();
      response_status_ = std::atoi(v.c_str());
    }
  }
  out.emplace_back().mutable_response_headers()->mutable_response();
  if (h.end_of_stream()) finish(response_status_ > 0 && response_status_ < 500);
}

void StreamProcessor::on_response_body(const pb::HttpBody& body,
                                       std::vector<pb::ProcessingResponse>& out) {
  if (!response_started_) {
    response_started_ = true;
    assignment_.first_byte();
    if (core_.metrics && assignment_) {
      core_.metrics->ttft.with({model_label_, model_label_})
          .observe(seconds_between(routed_at_, Clock::now()));
    }
  }
  const bool eos = body.end_of_stream() || body.end_of_stream_without_message();
  if (full_duplex_) {
    // Echoed at once: an SSE stream reaches the client as the engine writes it.
    auto* sr = out.emplace_back()
                   .mutable_response_body()
                   ->mutable_response()
                   ->mutable_body_mutation()
                   ->mutable_streamed_response();
    sr->set_body(body.body());
    sr->set_end_of_stream(eos);
  } else {
    out.emplace_back().mutable_response_body()->mutable_response();
  }
  if (eos) finish(response_status_ > 0 && response_status_ < 500);
}

void StreamProcessor::finish(bool success) {
  if (!assignment_) return;
  router::Backend& b = *assignment_.backend();
  if (response_status_ >= 500) {
    core_.router->record_failure(b, "http_" + std::to_string(response_status_),
                                 "answered " + std::to_string(response_status_), false);
  } else if (success && b.consecutive_failures.load(std::memory_order_relaxed) != 0) {
    b.consecutive_failures.store(0);
  }
  if (success) assignment_.succeeded();
  assignment_.release();
  if (core_.metrics) {
    core_.metrics->running.with({model_label_, model_label_}).add(-1);
    core_.metrics->duration.with({model_label_, model_label_})
        .observe(seconds_between(t0_, Clock::now()));
  }
}

void StreamProcessor::on_stream_end() {
  if (pending_) {
    {
      MutexLock l(pending_->mu);
      pending_->notify = nullptr;  // waits for an answer being delivered
    }
    if (queued_ && core_.router->flow_control()->cancel(pending_->ticket)) {
      // Out of the queue unanswered: counted as llm-d counts a cancelled context.
      record_flow({flow::Outcome::kCancelled,
                   routing::steady_now_ms() - pending_->ticket.enqueued_ms, true, 0});
    } else if (queued_) {
      // Answered already, or about to be: the ticket must outlive that call.
      MutexLock l(pending_->mu);
      while (!pending_->answered) pending_->cv.wait(pending_->mu);
    }
    queued_ = false;
    pending_.reset();
  }
  if (!assignment_) return;
  // Cancelled or cut before the response ended: not a success, not the engine's failure.
  assignment_.release();
  if (core_.metrics) core_.metrics->running.with({model_label_, model_label_}).add(-1);
}

}  // namespace kvroute::epp
