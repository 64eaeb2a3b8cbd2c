// The ext_proc state machine, message by message, as Envoy drives it (no gRPC): the sequences of
// FULL_DUPLEX_STREAMED and BUFFERED, the refusals, the subset hint, trailers, cancels.
#include "epp/internal/processor.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>

namespace kvroute::epp {
namespace {

using Replies = std::vector<pb::ProcessingResponse>;
namespace mode_pb = envoy::extensions::filters::http::ext_proc::v3;

class ProcessorTest : public ::testing::Test {
 protected:
  void make(std::string policy = "round-robin", int n = 3, bool flow_control = false) {
    config::Config c;
    c.log_level = "warn";
    c.flow_control.enabled = flow_control;
    c.flow_control.objectives = {{"batch", -1}};
    c.policy = std::move(policy);
    for (int i = 0; i < n; ++i) {
      config::BackendConfig b;
      b.url = "http://10.0.0." + std::to_string(i + 1) + ":8000";
      b.name = "e" + std::to_string(i);
      b.models = {"m"};
      c.backends.push_back(b);
    }
    auto r = router::Router::create(std::move(c), reg_);
    ASSERT_TRUE(r) << r.error().message;
    router_ = std::move(*r);
    metrics_ = std::make_unique<EppMetrics>(reg_);
    core_.router = router_.get();
    core_.metrics = metrics_.get();
  }
  void SetUp() override { make(); }

  static pb::ProcessingRequest headers(
      std::vector<std::pair<std::string, std::string>> hs, bool eos,
      mode_pb::ProcessingMode::BodySendMode mode = mode_pb::ProcessingMode::FULL_DUPLEX_STREAMED) {
    pb::ProcessingRequest r;
    auto* h = r.mutable_request_headers();
    for (auto& [k, v] : hs) {
      auto* hv = h->mutable_headers()->add_headers();
      hv->set_key(k);
      hv->set_raw_value(v);  // Envoy sends values as raw bytes
    }
    h->set_end_of_stream(eos);
    r.mutable_protocol_config()->set_request_body_mode(mode);
    r.mutable_protocol_config()->set_response_body_mode(mode);
    return r;
  }
  static pb::ProcessingRequest post(
      std::string path = "/v1/completions",
      mode_pb::ProcessingMode::BodySendMode mode = mode_pb::ProcessingMode::FULL_DUPLEX_STREAMED) {
    return headers({{":method", "POST"}, {":path", path}, {"content-type", "application/json"}},
                   false, mode);
  }
  static pb::ProcessingRequest body(std::string b, bool eos) {
    pb::ProcessingRequest r;
    r.mutable_request_body()->set_body(std::move(b));
    r.mutable_request_body()->set_end_of_stream(eos);
    return r;
  }
  static pb::ProcessingRequest response_headers(std::string status, bool eos = false) {
    pb::ProcessingRequest r;
    auto* hv = r.mutable_response_headers()->mutable_headers()->add_headers();
    hv->set_key(":status");
    hv->set_raw_value(std::move(status));
    r.mutable_response_headers()->set_end_of_stream(eos);
    return r;
  }
  static pb::ProcessingRequest response_body(std::string b, bool eos) {
    pb::ProcessingRequest r;
    r.mutable_response_body()->set_body(std::move(b));
    r.mutable_response_body()->set_end_of_stream(eos);
    return r;
  }
  // The destination a headers-carrying reply sets, checking that the header and the metadata
  // agree and that the route cache is cleared with it.
  static std::string destination(const pb::CommonResponse& c, const pb::ProcessingResponse& r) {
    EXPECT_TRUE(c.clear_route_cache());
    std::string header;
    int count = 0;
    for (const auto& o : c.header_mutation().set_headers()) {
      if (o.header().key() == kDestinationHeader) {
        header = o.header().raw_value();
        EXPECT_TRUE(o.header().value().empty()) << "Envoy rejects value and raw_value together";
        EXPECT_EQ(o.append_action(),
                  envoy::config::core::v3::HeaderValueOption::OVERWRITE_IF_EXISTS_OR_ADD);
        ++count;
      }
    }
    EXPECT_EQ(count, 1);
    const auto& f = r.dynamic_metadata().fields();
    auto lb = f.find("envoy.lb");
    EXPECT_NE(lb, f.end());
    if (lb != f.end()) {
      EXPECT_EQ(
          lb->second.struct_value().fields().at(std::string(kDestinationHeader)).string_value(),
          header);
    }
    return header;
  }
  static std::string streamed_body(const Replies& out, std::size_t from, bool* last_eos,
                                   std::size_t* max_chunk = nullptr) {
    std::string all;
    for (std::size_t i = from; i < out.size(); ++i) {
      if (!out[i].has_request_body()) break;
      const auto& sr = out[i].request_body().response().body_mutation().streamed_response();
      EXPECT_TRUE(out[i].request_body().response().body_mutation().has_streamed_response());
      all += sr.body();
      if (max_chunk) *max_chunk = std::max(*max_chunk, sr.body().size());
      *last_eos = sr.end_of_stream();
    }
    return all;
  }
  int inflight() const {
    int n = 0;
    for (auto* b : router_->backend_list()) n += b->inflight.load();
    return n;
  }

  metrics::Registry reg_;
  std::unique_ptr<router::Router> router_;
  std::unique_ptr<EppMetrics> metrics_;
  EppCore core_;
};

const std::string kBody =
    R"({"model":"m","prompt":"Write as if you were a critic: San Francisco"})";

TEST_F(ProcessorTest, FullDuplexHoldsHeadersUntilTheBodyEndsThenPicksAndStreamsItBack) {
  StreamProcessor p(core_);
  Replies out;
  EXPECT_TRUE(p.on_request(post(), out));
  EXPECT_TRUE(out.empty()) << "the headers reply waits for the body";
  EXPECT_TRUE(p.full_duplex());
  EXPECT_TRUE(p.on_request(body(kBody.substr(0, 10), false), out));
  EXPECT_TRUE(out.empty());
  EXPECT_TRUE(p.on_request(body(kBody.substr(10), true), out));
  ASSERT_GE(out.size(), 2u);
  ASSERT_TRUE(out[0].has_request_headers());
  const std::string dest = destination(out[0].request_headers().response(), out[0]);
  EXPECT_TRUE(dest.starts_with("10.0.0.")) << dest;
  EXPECT_TRUE(dest.ends_with(":8000")) << dest;
  bool eos = false;
  EXPECT_EQ(streamed_body(out, 1, &eos), kBody);
  EXPECT_TRUE(eos);
  EXPECT_EQ(inflight(), 1);

  // The response path: headers answered, each SSE chunk echoed at once, the end releases.
  out.clear();
  EXPECT_TRUE(p.on_request(response_headers("200"), out));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(out[0].has_response_headers());
  for (int i = 0; i < 3; ++i) {
    out.clear();
    const std::string chunk = "data: {\"n\":" + std::to_string(i) + "}\n\n";
    EXPECT_TRUE(p.on_request(response_body(chunk, i == 2), out));
    ASSERT_EQ(out.size(), 1u);
    const auto& sr = out[0].response_body().response().body_mutation().streamed_response();
    EXPECT_EQ(sr.body(), chunk);
    EXPECT_EQ(sr.end_of_stream(), i == 2);
  }
  EXPECT_EQ(inflight(), 0);
}

TEST_F(ProcessorTest, BodySplitAtEveryPointRoutesAndComesBackWhole) {
  for (std::size_t cut = 0; cut <= kBody.size(); ++cut) {
    StreamProcessor p(core_);
    Replies out;
    p.on_request(post(), out);
    p.on_request(body(kBody.substr(0, cut), false), out);
    ASSERT_TRUE(out.empty()) << cut;
    ASSERT_TRUE(p.on_request(body(kBody.substr(cut), true), out)) << cut;
    ASSERT_TRUE(out[0].has_request_headers()) << cut;
    bool eos = false;
    EXPECT_EQ(streamed_body(out, 1, &eos), kBody) << cut;
    EXPECT_TRUE(eos);
  }
  EXPECT_EQ(inflight(), 0) << "each stream released its backend when it ended";
}

TEST_F(ProcessorTest, LargeBodiesGoBackInChunksOfAtMost62000Bytes) {
  std::string prompt(200000, 'x');
  for (std::size_t i = 0; i < prompt.size(); i += 7) prompt[i] = ' ';
  const std::string big = R"({"model":"m","prompt":")" + prompt + R"("})";
  StreamProcessor p(core_);
  Replies out;
  p.on_request(post(), out);
  for (std::size_t off = 0; off < big.size(); off += 16384) {
    p.on_request(body(big.substr(off, 16384), off + 16384 >= big.size()), out);
  }
  bool eos = false;
  std::size_t max_chunk = 0;
  EXPECT_EQ(streamed_body(out, 1, &eos, &max_chunk), big);
  EXPECT_TRUE(eos);
  EXPECT_EQ(max_chunk, 62000u);
  EXPECT_EQ(out.size(), 1 + (big.size() + 61999) / 62000);
  // Content-Length names the body sent back.
  bool found = false;
  for (const auto& o : out[0].request_headers().response().header_mutation().set_headers()) {
    if (o.header().key() == "content-length") {
      EXPECT_EQ(o.header().raw_value(), std::to_string(big.size()));
      found = true;
    }
  }
  EXPECT_TRUE(found);
}

// An immediate_response with status and an OpenAI-shaped body; the stream is over.
void expect_refusal(const Replies& out, int status, std::string_view param = {}) {
  ASSERT_EQ(out.size(), 1u);
  ASSERT_TRUE(out[0].has_immediate_response());
  const auto& ir = out[0].immediate_response();
  EXPECT_EQ(static_cast<int>(ir.status().code()), status);
  EXPECT_NE(ir.body().find(R"({"error":{"message":")"), std::string::npos) << ir.body();
  EXPECT_NE(ir.body().find("\"code\":" + std::to_string(status)), std::string::npos) << ir.body();
  if (!param.empty()) {
    EXPECT_NE(ir.body().find("\"param\":\"" + std::string(param) + "\""), std::string::npos)
        << ir.body();
  }
  bool json = false;
  for (const auto& o : ir.headers().set_headers()) {
    json |= o.header().key() == "content-type" && o.header().raw_value() == "application/json";
  }
  EXPECT_TRUE(json);
}

TEST_F(ProcessorTest, ClientErrorsAreImmediateOpenAiErrors) {
  struct Case {
    std::string body;
    int status;
    std::string param;
  } cases[] = {
      {"{not json", 400, ""},
      {R"({"prompt":"no model"})", 400, "model"},
      {R"({"model":"other","prompt":"x"})", 404, "model"},
      {R"({"model":"m","prompt":42})", 400, "prompt"},
  };
  for (const auto& c : cases) {
    StreamProcessor p(core_);
    Replies out;
    p.on_request(post(), out);
    EXPECT_FALSE(p.on_request(body(c.body, true), out)) << c.body;
    expect_refusal(out, c.status, c.param);
    // Nothing more is answered on a refused stream.
    out.clear();
    EXPECT_FALSE(p.on_request(response_headers("200"), out));
    EXPECT_TRUE(out.empty());
  }
  EXPECT_EQ(inflight(), 0);
  EXPECT_NE(
      reg_.render().find(
          R"(llm_d_epp_request_error_total{model_name="",target_model_name="",error_code="400"} 3)"),
      std::string::npos)
      << reg_.render();
}

TEST_F(ProcessorTest, BodiesOverTheLimitAre413) {
  core_.max_body_bytes = 100;
  StreamProcessor p(core_);
  Replies out;
  p.on_request(post(), out);
  EXPECT_TRUE(p.on_request(body(std::string(60, ' '), false), out));
  EXPECT_FALSE(p.on_request(body(std::string(60, ' '), false), out));
  expect_refusal(out, 413);
}

TEST_F(ProcessorTest, NoAvailableBackendIs503) {
  for (auto* b : router_->backend_list()) b->healthy.store(false);
  StreamProcessor p(core_);
  Replies out;
  p.on_request(post(), out);
  EXPECT_FALSE(p.on_request(body(kBody, true), out));
  expect_refusal(out, 503);
}

pb::ProcessingRequest with_subset(pb::ProcessingRequest r, std::vector<std::string> items,
                                  bool as_list) {
  auto& ns =
      (*r.mutable_metadata_context()->mutable_filter_metadata())[std::string(kSubsetNamespace)];
  auto& v = (*ns.mutable_fields())[std::string(kSubsetKey)];
  if (as_list) {
    for (const auto& i : items) v.mutable_list_value()->add_values()->set_string_value(i);
  } else {
    std::string joined;
    for (const auto& i : items) joined += (joined.empty() ? "" : ",") + i;
    v.set_string_value(joined);
  }
  return r;
}

TEST_F(ProcessorTest, SubsetHintRestrictsThePick) {
  for (bool as_list : {true, false}) {
    for (int round = 0; round < 6; ++round) {
      StreamProcessor p(core_);
      Replies out;
      // ip:port, or a bare ip (every port of that pod).
      p.on_request(
          with_subset(post(), {"10.0.0.9:8000", round % 2 ? "10.0.0.2" : "10.0.0.2:8000"}, as_list),
          out);
      ASSERT_TRUE(p.on_request(body(kBody, true), out));
      EXPECT_EQ(destination(out[0].request_headers().response(), out[0]), "10.0.0.2:8000");
    }
  }
  StreamProcessor p(core_);
  Replies out;
  p.on_request(with_subset(post(), {"10.9.9.9:8000"}, true), out);
  EXPECT_FALSE(p.on_request(body(kBody, true), out));
  expect_refusal(out, 503);
  StreamProcessor empty(core_);
  out.clear();
  empty.on_request(with_subset(post(), {}, true), out);
  EXPECT_FALSE(empty.on_request(body(kBody, true), out));
  expect_refusal(out, 503);
}

TEST_F(ProcessorTest, ClientSuppliedDestinationIsOverwritten) {
  StreamProcessor p(core_);
  Replies out;
  p.on_request(headers({{":method", "POST"},
                        {":path", "/v1/completions"},
                        {"x-gateway-destination-endpoint", "6.6.6.6:1"}},
                       false),
               out);
  p.on_request(body(kBody, true), out);
  const std::string dest = destination(out[0].request_headers().response(), out[0]);
  EXPECT_NE(dest, "6.6.6.6:1");
  EXPECT_TRUE(dest.starts_with("10.0.0."));
}

TEST_F(ProcessorTest, BodilessRequestsAreRoutedOnTheHeaders) {
  StreamProcessor p(core_);
  Replies out;
  EXPECT_TRUE(p.on_request(headers({{":method", "GET"}, {":path", "/v1/models"}}, true), out));
  ASSERT_EQ(out.size(), 1u);
  ASSERT_TRUE(out[0].has_request_headers());
  EXPECT_TRUE(destination(out[0].request_headers().response(), out[0]).starts_with("10.0.0."));
  out.clear();
  p.on_request(response_headers("200", true), out);
  EXPECT_EQ(inflight(), 0);
}

TEST_F(ProcessorTest, TrailersEndTheBody) {
  StreamProcessor p(core_);
  Replies out;
  p.on_request(post(), out);
  p.on_request(body(kBody, false), out);
  ASSERT_TRUE(out.empty());
  pb::ProcessingRequest t;
  t.mutable_request_trailers();
  EXPECT_TRUE(p.on_request(t, out));
  ASSERT_GE(out.size(), 3u);
  EXPECT_TRUE(out[0].has_request_headers());
  bool eos = true;
  EXPECT_EQ(streamed_body(out, 1, &eos), kBody);
  EXPECT_FALSE(eos) << "trailers follow the body";
  EXPECT_TRUE(out.back().has_request_trailers());
}

TEST_F(ProcessorTest, BufferedModeAnswersEveryMessageAndPicksOnTheBody) {
  StreamProcessor p(core_);
  Replies out;
  p.on_request(post("/v1/chat/completions", mode_pb::ProcessingMode::BUFFERED), out);
  EXPECT_FALSE(p.full_duplex());
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(out[0].has_request_headers());
  EXPECT_FALSE(out[0].request_headers().response().has_header_mutation());
  out.clear();
  p.on_request(body(R"({"model":"m","messages":[{"role":"user","content":"hi"}]})", true), out);
  ASSERT_EQ(out.size(), 1u);
  ASSERT_TRUE(out[0].has_request_body());
  EXPECT_FALSE(out[0].request_body().response().has_body_mutation());
  EXPECT_TRUE(destination(out[0].request_body().response(), out[0]).starts_with("10.0.0."));
  out.clear();
  p.on_request(response_headers("200"), out);
  p.on_request(response_body("{}", true), out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_TRUE(out[1].has_response_body());
  EXPECT_FALSE(out[1].response_body().response().has_body_mutation());
  EXPECT_EQ(inflight(), 0);
}

TEST_F(ProcessorTest, CancelAfterThePickReleasesTheBackend) {
  {
    StreamProcessor p(core_);
    Replies out;
    p.on_request(post(), out);
    p.on_request(body(kBody, true), out);
    EXPECT_EQ(inflight(), 1);
    p.on_stream_end();
    EXPECT_EQ(inflight(), 0);
  }
  {
    StreamProcessor p(core_);
    Replies out;
    p.on_request(post(), out);
    p.on_request(body(kBody, true), out);
    EXPECT_EQ(inflight(), 1);
  }  // destroyed without an end: released too
  EXPECT_EQ(inflight(), 0);
  EXPECT_NE(
      reg_.render().find(R"(llm_d_epp_request_running{model_name="m",target_model_name="m"} 0)"),
      std::string::npos)
      << reg_.render();
}

TEST_F(ProcessorTest, EngineErrorsCountTowardEjection) {
  StreamProcessor p(core_);
  Replies out;
  p.on_request(post(), out);
  p.on_request(body(kBody, true), out);
  const router::Backend* b = p.backend();
  ASSERT_NE(b, nullptr);
  p.on_request(response_headers("503", true), out);
  EXPECT_EQ(b->consecutive_failures.load(), 1);
}

TEST_F(ProcessorTest, RepeatedPrefixesFollowTheCacheThroughTheSharedCore) {
  make("kvroute", 4);
  std::string prefix;
  for (int i = 0; i < 200; ++i) prefix += "w" + std::to_string(i) + " ";
  std::string first;
  for (int i = 0; i < 8; ++i) {
    StreamProcessor p(core_);
    Replies out;
    p.on_request(post(), out);
    p.on_request(
        body(R"({"model":"m","prompt":")" + prefix + "q" + std::to_string(i) + R"("})", true), out);
    const std::string dest = destination(out[0].request_headers().response(), out[0]);
    if (i == 0) first = dest;
    EXPECT_EQ(dest, first) << i;
    p.on_request(response_headers("200"), out);
    p.on_request(response_body("{}", true), out);
  }
}

TEST(LabelCapTest, KeepsTheFirstValuesThenOther) {
  LabelCap cap(2);
  EXPECT_EQ(cap("a"), "a");
  EXPECT_EQ(cap("b"), "b");
  EXPECT_EQ(cap("c"), "other");
  EXPECT_EQ(cap("a"), "a");
}

TEST(EndpointAddress, BracketsIpv6) {
  EXPECT_EQ(endpoint_address({"10.1.2.3", 8000}), "10.1.2.3:8000");
  EXPECT_EQ(endpoint_address({"fd00::1", 8000}), "[fd00::1]:8000");
}

// Flow control (issue 18). The router here never scrapes its engines: their metrics are unknown,
// which counts as no room, until a test reports some.
class FlowProcessorTest : public ProcessorTest {
 protected:
  void SetUp() override {
    make("round-robin", 3, true);
    core_.inference_pool = "pool";
  }
  void report_room(int engine) {
    router_->backend_list()[engine]->scraped_at_ms.store(routing::steady_now_ms());
    router_->flow_control()->wake();
  }
  void listen(StreamProcessor& p) {
    p.set_admission_handler([this](const flow::Admission& a) {
      std::lock_guard l(mu_);
      answer_ = a;
      cv_.notify_all();
    });
  }
  std::optional<flow::Admission> wait_answer() {
    std::unique_lock l(mu_);
    cv_.wait_for(l, std::chrono::seconds(10), [&] { return answer_.has_value(); });
    return answer_;
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<flow::Admission> answer_;
};

TEST_F(FlowProcessorTest, TheRequestWaitsUntilAnEngineHasRoomThenGoesThere) {
  StreamProcessor p(core_);
  listen(p);
  Replies out;
  EXPECT_TRUE(p.on_request(post(), out));
  EXPECT_TRUE(p.on_request(body(R"({"model":"m","prompt":"hello"})", true), out));
  EXPECT_TRUE(out.empty());
  EXPECT_TRUE(p.queued());
  // Trailers while it waits: their reply follows the pick's.
  pb::ProcessingRequest trailers;
  trailers.mutable_request_trailers();
  EXPECT_TRUE(p.on_request(trailers, out));
  EXPECT_TRUE(out.empty());
  report_room(1);
  auto a = wait_answer();
  ASSERT_TRUE(a);
  EXPECT_EQ(a->outcome, flow::Outcome::kDispatched);
  EXPECT_TRUE(a->queued);
  EXPECT_TRUE(p.complete(*a, out));
  ASSERT_GE(out.size(), 3u);
  EXPECT_EQ(destination(out[0].request_headers().response(), out[0]), "10.0.0.2:8000");
  bool eos = true;
  EXPECT_EQ(streamed_body(out, 1, &eos), R"({"model":"m","prompt":"hello"})");
  EXPECT_FALSE(eos);  // trailers follow
  EXPECT_TRUE(out.back().has_request_trailers());
  EXPECT_EQ(inflight(), 1);
  // llm-d's flow-control series: the outcome as llm-d spells it, the time it waited.
  const std::string m = reg_.render();
  EXPECT_NE(m.find(R"(llm_d_epp_flow_control_requests_total{outcome="Dispatched",priority="0",)"
                   R"(inference_pool="pool"} 1)"),
            std::string::npos)
      << m;
  const auto count = m.find("llm_d_epp_flow_control_request_queue_duration_seconds_count{");
  ASSERT_NE(count, std::string::npos) << m;
  EXPECT_EQ(m.substr(m.find("priority=", count), 95),
            R"(priority="0",outcome="Dispatched",inference_pool="pool",model_name="m",)"
            R"(target_model_name="m"} 1)");
}

TEST_F(FlowProcessorTest, AStreamThatEndsWhileQueuedLeavesTheQueue) {
  {
    StreamProcessor p(core_);
    listen(p);
    Replies out;
    p.on_request(post(), out);
    p.on_request(body(R"({"model":"m","prompt":"x"})", true), out);
    EXPECT_EQ(router_->flow_control()->queued(), 1u);
    p.on_stream_end();
    EXPECT_EQ(router_->flow_control()->queued(), 0u);
    EXPECT_NE(reg_.render().find(R"(llm_d_epp_flow_control_requests_total{)"
                                 R"(outcome="EvictedContextCancelled",priority="0",)"
                                 R"(inference_pool="pool"} 1)"),
              std::string::npos);
  }
  report_room(0);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::lock_guard l(mu_);
  EXPECT_FALSE(answer_.has_value());
  EXPECT_EQ(inflight(), 0);
}

TEST_F(FlowProcessorTest, SheddableIsRefusedWith429WhileSaturated) {
  StreamProcessor p(core_);
  listen(p);
  Replies out;
  p.on_request(headers({{":method", "POST"},
                        {":path", "/v1/completions"},
                        {"x-gateway-inference-objective", "batch"}},
                       false),
               out);
  EXPECT_FALSE(p.on_request(body(R"({"model":"m","prompt":"x"})", true), out));
  ASSERT_EQ(out.size(), 1u);
  ASSERT_TRUE(out[0].has_immediate_response());
  EXPECT_EQ(out[0].immediate_response().status().code(), 429);
  EXPECT_NE(out[0].immediate_response().body().find("sheddable"), std::string::npos);
  std::map<std::string, std::string> hs;
  for (const auto& o : out[0].immediate_response().headers().set_headers())
    hs[o.header().key()] = o.header().raw_value();
  EXPECT_EQ(hs["retry-after"], "1");
  EXPECT_EQ(hs["x-kvroute-dropped-reason"], "rejected-saturated");
  EXPECT_NE(reg_.render().find(R"(llm_d_epp_flow_control_requests_total{outcome="RejectedOther",)"
                               R"(priority="-1",inference_pool="pool"} 1)"),
            std::string::npos);
}

TEST(LlmdFlowOutcome, SpelledAsLlmdSpellsThem) {
  EXPECT_EQ(llmd_flow_outcome(flow::Outcome::kDispatched, true), "Dispatched");
  EXPECT_EQ(llmd_flow_outcome(flow::Outcome::kRejectedCapacity, false), "RejectedCapacity");
  EXPECT_EQ(llmd_flow_outcome(flow::Outcome::kExpired, true), "EvictedTTL");
  EXPECT_EQ(llmd_flow_outcome(flow::Outcome::kCancelled, true), "EvictedContextCancelled");
  EXPECT_EQ(llmd_flow_outcome(flow::Outcome::kShuttingDown, true), "EvictedOther");
  EXPECT_EQ(llmd_flow_outcome(flow::Outcome::kShuttingDown, false), "RejectedOther");
  EXPECT_EQ(llmd_flow_outcome(flow::Outcome::kRateLimited, false), "RejectedOther");
}

}  // namespace
}  // namespace kvroute::epp
