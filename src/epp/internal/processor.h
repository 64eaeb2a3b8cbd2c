// File: epp/internal/processor.h
//
// One ext_proc stream (one HTTP request through the gateway) as a state machine, free of gRPC so
// tests drive it message by message: Envoy's ProcessingRequests in, the endpoint picker's
// ProcessingResponses out. The routing itself is router::Router's, as for `kvroute serve`.
//
// The sequences (docs/adr/0240-epp-ext-proc-over-grpc.md; the contract: Envoy's
// external_processor.proto and the Gateway API Inference Extension's endpoint picker protocol):
//  - FULL_DUPLEX_STREAMED (llm-d's mode): request headers are held; at the body's end of stream
//    (or at request trailers) the request is routed, then the headers reply (destination header,
//    clear_route_cache, envoy.lb dynamic metadata) and the body back as streamed_response chunks
//    of at most 62,000 bytes, the last with end_of_stream. Response chunks are echoed at once.
//  - BUFFERED and other one-reply-per-message modes: the headers reply at once, the pick on the
//    reply to the body's last message, one reply per message on the response path.
//  - Refusals are immediate_response with an OpenAI-shaped JSON body (400, 404, 413, 503).
//
// Thread-safety: one StreamProcessor per stream, used by one thread at a time; EppCore is shared
// and read-only (its metrics and router are internally synchronized).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "auth/auth.h"
#include "common/mutex.h"
#include "envoy/service/ext_proc/v3/external_processor.pb.h"
#include "flow/controller.h"
#include "metrics/registry.h"
#include "router/router.h"

namespace kvroute::epp {

namespace pb = envoy::service::ext_proc::v3;

enum class BodyMode {
  kAuto,        // protocol_config of the first message; FULL_DUPLEX_STREAMED when absent
  kFullDuplex,  // FULL_DUPLEX_STREAMED
  kBuffered,    // BUFFERED (and any mode answered one reply per message)
};

// Label values beyond the first `limit` distinct ones become "other" (llm-d caps at 1,000), so a
// client cannot grow the metrics without bound.
class LabelCap {
 public:
  explicit LabelCap(std::size_t limit) : limit_(limit) {}
  std::string operator()(std::string_view v);

 private:
  const std::size_t limit_;
  Mutex mu_;
  std::vector<std::string> seen_ GUARDED_BY(mu_);  // sorted
};

// llm-d's EPP metric names (dashboards query them), beside kvroute's own router metrics.
struct EppMetrics {
  explicit EppMetrics(metrics::Registry& reg);
  metrics::CounterFamily& requests;     // llm_d_epp_request_total{model_name,target_model_name}
  metrics::CounterFamily& errors;       // llm_d_epp_request_error_total{...,error_code}
  metrics::HistogramFamily& duration;   // llm_d_epp_request_duration_seconds{...}
  metrics::HistogramFamily& ttft;       // llm_d_epp_request_ttft_seconds{...}
  metrics::GaugeFamily& running;        // llm_d_epp_request_running{...}
  metrics::HistogramFamily& scheduler;  // llm_d_epp_scheduler_e2e_duration_seconds
  metrics::GaugeFamily& ready;          // llm_d_epp_ready_endpoints
  metrics::CounterFamily& streams;      // kvroute_epp_streams_total{mode,outcome}
  // Flow control, as llm-d's EPP names it (outcomes: Dispatched, RejectedCapacity, RejectedOther,
  // EvictedTTL, EvictedContextCancelled, EvictedOther).
  metrics::CounterFamily& flow_requests;  // llm_d_epp_flow_control_requests_total
  //   {outcome,priority,inference_pool}
  metrics::HistogramFamily& flow_queue_duration;  // llm_d_epp_flow_control_request_queue_duration_
  //   seconds{fairness_id,priority,outcome,inference_pool,model_name,target_model_name}
  metrics::GaugeFamily& flow_pool_saturation;  // llm_d_epp_flow_control_pool_saturation
  //   {inference_pool,stage}: "decode" and "effective" (monolithic engines)
  LabelCap models{1000};
  // Fairness ids in the queue-duration histogram: the first 64 (as kvroute's tenant metric; each
  // id costs a histogram per outcome, priority and model).
  LabelCap fairness_ids{64};
};

// llm-d's name for a flow control outcome (`queued`: the request had waited in the queue).
std::string_view llmd_flow_outcome(flow::Outcome o, bool queued);

struct EppCore {
  router::Router* router = nullptr;
  // API keys (docs/adr/0023): null or not checking: requests pass. A refusal is an
  // immediate_response 401 in OpenAI's shape.
  const auth::Gate* gate = nullptr;
  // What the engine gets as Authorization (upstream.authorization): forward leaves the header,
  // none removes it, key sets the router's own ("Bearer <key>").
  enum class UpstreamAuth { kForward, kNone, kKey } upstream_auth = UpstreamAuth::kForward;
  std::string upstream_authorization;
  EppMetrics* metrics = nullptr;
  std::string inference_pool;  // the InferencePool's name, for llm-d's flow-control labels
  BodyMode body_mode = BodyMode::kAuto;
  std::size_t max_body_bytes = 64u << 20;
  std::size_t chunk_bytes = 62000;  // streamed_response chunks, as llm-d cuts them
  bool debug_headers = false;
};

// Header names of the protocol.
inline constexpr std::string_view kDestinationHeader = "x-gateway-destination-endpoint";
inline constexpr std::string_view kDestinationServed = "x-gateway-destination-endpoint-served";
inline constexpr std::string_view kSubsetNamespace = "envoy.lb.subset_hint";
inline constexpr std::string_view kSubsetKey = "x-gateway-destination-endpoint-subset";
inline constexpr std::string_view kLbNamespace = "envoy.lb";

class StreamProcessor {
 public:
  explicit StreamProcessor(const EppCore& core);
  ~StreamProcessor();
  StreamProcessor(const StreamProcessor&) = delete;
  StreamProcessor& operator=(const StreamProcessor&) = delete;

  // Handles one message; appends the replies (none, one or several) to `out`. Returns false once
  // the EPP has answered with an immediate_response: the stream is over and should be closed.
  bool on_request(const pb::ProcessingRequest& in, std::vector<pb::ProcessingResponse>& out);
  // The stream ended (half-close, cancel or error): releases the request's backend; a request
  // waiting in flow control's queue leaves it (waits for an answer already on its way).
  void on_stream_end();

  // Flow control (flowControl.enabled, full-duplex streams): when no engine has room the request
  // waits in the router and on_request returns with no reply. `handler` is then called once, on
  // flow control's thread, with the answer; the owner calls complete() with it (serialized with
  // on_request), which appends the pick's replies or a refusal (returns false: the stream is
  // over). Set before the first message.
  void set_admission_handler(std::function<void(const flow::Admission&)> handler) {
    admission_handler_ = std::move(handler);
  }
  bool complete(const flow::Admission& a, std::vector<pb::ProcessingResponse>& out);
  bool queued() const { return queued_; }

  // For tests and logs.
  bool full_duplex() const { return full_duplex_; }
  const router::Backend* backend() const { return assignment_.backend(); }

 private:
  // Flow control's answer in kvroute's and llm-d's metrics (nothing without a ticket).
  void record_flow(const flow::Admission& a);
  void on_request_headers(const pb::ProcessingRequest& in,
                          std::vector<pb::ProcessingResponse>& out);
  bool on_request_body(const pb::HttpBody& body, std::vector<pb::ProcessingResponse>& out);
  void on_request_trailers(std::vector<pb::ProcessingResponse>& out);
  void on_response_headers(const pb::HttpHeaders& h, std::vector<pb::ProcessingResponse>& out);
  void on_response_body(const pb::HttpBody& body, std::vector<pb::ProcessingResponse>& out);
  // Routes the buffered request; on success appends the pick's replies, else an
  // immediate_response (returns false).
  bool route(std::vector<pb::ProcessingResponse>& out);
  // The pick's replies (destination header, metadata, the body back), once assignment_ is set.
  bool emit_pick(std::vector<pb::ProcessingResponse>& out,
                 std::chrono::steady_clock::time_point start);
  // The candidates now, inside the gateway's subset hint; an error reply's status otherwise.
  std::optional<router::CandidateError> candidates_now(std::int64_t now_ms,
                                                       router::Candidates& out) const;
  bool admit(std::vector<pb::ProcessingResponse>& out, std::chrono::steady_clock::time_point start);
  void refuse(int status, std::string message, std::string_view param,
              std::vector<pb::ProcessingResponse>& out, std::string_view code = {});
  void finish(bool success);
  std::string_view header(std::string_view name) const;

  const EppCore& core_;
  bool mode_known_ = false;
  bool full_duplex_ = true;
  bool request_routed_ = false;
  bool trailers_pending_ = false;  // request trailers arrived: reply after the body
  bool done_ = false;
  std::vector<std::pair<std::string, std::string>> headers_;  // lower-case names
  std::string body_;
  std::optional<std::vector<std::string>> subset_;  // from the subset hint metadata
  // The request as the router sees it (rr_.request points into prepared_).
  std::optional<router::Prepared> prepared_;
  openai::ParsedRequest bodiless_;  // stands in for requests without an OpenAI body
  routing::RouteRequest rr_;
  router::Assignment assignment_;
  std::string model_label_;
  int response_status_ = 0;
  bool response_started_ = false;
  std::chrono::steady_clock::time_point t0_;
  std::chrono::steady_clock::time_point routed_at_;
  std::string tenant_;                             // the API key's tenant
  const openai::ParsedRequest* parsed_ = nullptr;  // the request being routed
  // Flow control: the ticket of a request waiting in the router's queue.
  struct Pending {
    flow::Ticket ticket;
    Mutex mu;
    CondVar cv;
    std::function<void(const flow::Admission&)> notify GUARDED_BY(mu);
    bool answered GUARDED_BY(mu) = false;
  };
  std::unique_ptr<Pending> pending_;
  std::function<void(const flow::Admission&)> admission_handler_;
  bool queued_ = false;
  bool trailers_while_queued_ = false;
  std::chrono::steady_clock::time_point route_start_;
};

// "ip:port", bracketing IPv6 addresses.
std::string endpoint_address(const http::Endpoint& ep);

}  // namespace kvroute::epp
