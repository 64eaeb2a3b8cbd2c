// `kvroute epp` over real gRPC, with the test playing Envoy: a stand-in that opens one ext_proc
// stream per request in FULL_DUPLEX_STREAMED mode (as llm-d's gateways configure it), sends the
// headers and the body in chunks, forwards the body the picker streams back to the endpoint it
// named, and passes the engine's response through the picker. Engines are simulated (`kvroute
// sim` in-process). Also: the gRPC health service, drain, cancels, deadlines, a 10 MB body.
#include "epp/epp.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <thread>

#include "envoy/service/ext_proc/v3/external_processor.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "proxy/proxy.h"
#include "sim/server.h"
#include "testing/certs.h"
#include "testing/fake_kube_api.h"
#include "testing/raw_http.h"
#include "testing/wait.h"

namespace kvroute::epp {
namespace {

using namespace std::chrono_literals;
namespace pb = envoy::service::ext_proc::v3;
namespace mode_pb = envoy::extensions::filters::http::ext_proc::v3;

config::Config engines_config(const sim::SimCluster& sim) {
  config::Config c;
  c.address = "127.0.0.1";
  c.port = 0;
  c.log_level = "warn";
  c.policy = "kvroute";
  c.tokenizer = "word";  // the simulator's tokenizer: the router's blocks are the engines'
  c.metrics_scrape_interval = 0ms;  // decisions depend on the requests alone
  for (const auto& e : sim.endpoints()) {
    config::BackendConfig b;
    b.url = e.url;
    b.name = e.url;
    b.models = {"m"};
    c.backends.push_back(b);
  }
  return c;
}

EppOptions loopback() {
  EppOptions o;
  o.address = "127.0.0.1";
  o.grpc_port = 0;
  o.health_port = 0;
  o.metrics_port = 0;
  return o;
}

void add_header(pb::HttpHeaders& h, std::string k, std::string v) {
  auto* hv = h.mutable_headers()->add_headers();
  hv->set_key(std::move(k));
  hv->set_raw_value(std::move(v));
}

// What the stand-in saw of one request.
struct Exchange {
  grpc::Status status;
  std::string destination;     // x-gateway-destination-endpoint
  std::string metadata_dest;   // envoy.lb dynamic metadata
  std::string forwarded_body;  // the body the picker streamed back
  std::size_t max_chunk = 0;
  int immediate_status = 0;  // an immediate_response instead of a pick
  std::string immediate_body;
  int engine_status = 0;
  std::string client_body;                    // what the client received (the echoed response)
  std::string authorization = "(untouched)";  // what the pick did to Authorization
};

// Envoy's part, for one request.
class EnvoyStandIn {
 public:
  explicit EnvoyStandIn(std::uint16_t grpc_port, std::shared_ptr<grpc::ChannelCredentials> creds =
                                                     grpc::InsecureChannelCredentials())
      : channel_(grpc::CreateChannel("127.0.0.1:" + std::to_string(grpc_port), std::move(creds))),
        stub_(pb::ExternalProcessor::NewStub(channel_)) {}
  // Request headers the client sent besides the pseudo-headers and content fields.
  std::vector<std::pair<std::string, std::string>> extra_headers;

  Exchange send(const std::string& path, const std::string& body, std::size_t chunk = 4096) {
    Exchange x;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 30s);
    auto stream = stub_->Process(&ctx);
    pb::ProcessingRequest req;
    add_header(*req.mutable_request_headers(), ":method", "POST");
    add_header(*req.mutable_request_headers(), ":path", path);
    add_header(*req.mutable_request_headers(), "content-type", "application/json");
    add_header(*req.mutable_request_headers(), "content-length", std::to_string(body.size()));
    for (const auto& [k, v] : extra_headers) add_header(*req.mutable_request_headers(), k, v);
    req.mutable_protocol_config()->set_request_body_mode(
        mode_pb::ProcessingMode::FULL_DUPLEX_STREAMED);
    req.mutable_protocol_config()->set_response_body_mode(
        mode_pb::ProcessingMode::FULL_DUPLEX_STREAMED);
    EXPECT_TRUE(stream->Write(req));
    // Full duplex: the body follows without waiting for a reply.
    for (std::size_t off = 0; off < body.size() || off == 0; off += chunk) {
      pb::ProcessingRequest b;
      b.mutable_request_body()->set_body(body.substr(off, chunk));
      b.mutable_request_body()->set_end_of_stream(off + chunk >= body.size());
      // A picker that answered from the headers (an immediate 401) may have closed the stream
      // already: the reply is read below.
      if (!stream->Write(b)) break;
      if (body.empty()) break;
    }
    pb::ProcessingResponse resp;
    if (!stream->Read(&resp)) {
      stream->WritesDone();
      x.status = stream->Finish();
      return x;
    }
    if (resp.has_immediate_response()) {
      x.immediate_status = static_cast<int>(resp.immediate_response().status().code());
      x.immediate_body = resp.immediate_response().body();
      stream->WritesDone();
      x.status = stream->Finish();
      return x;
    }
    EXPECT_TRUE(resp.has_request_headers());
    for (const auto& o : resp.request_headers().response().header_mutation().set_headers()) {
      if (o.header().key() == "x-gateway-destination-endpoint")
        x.destination = o.header().raw_value();
      if (o.header().key() == "authorization") x.authorization = o.header().raw_value();
    }
    for (const auto& r : resp.request_headers().response().header_mutation().remove_headers()) {
      if (r == "authorization") x.authorization = "(removed)";
    }
    x.metadata_dest = resp.dynamic_metadata()
                          .fields()
                          .at("envoy.lb")
                          .struct_value()
                          .fields()
                          .at("x-gateway-destination-endpoint")
                          .string_value();
    for (;;) {
      EXPECT_TRUE(stream->Read(&resp));
      const auto& sr = resp.request_body().response().body_mutation().streamed_response();
      x.forwarded_body += sr.body();
      x.max_chunk = std::max(x.max_chunk, sr.body().size());
      if (sr.end_of_stream()) break;
    }
    // Forward to the endpoint chosen (ORIGINAL_DST on the header), as Envoy's router would.
    const auto colon = x.destination.rfind(':');
    const auto port = static_cast<std::uint16_t>(std::stoi(x.destination.substr(colon + 1)));
    auto r = testing::post_json(port, path, x.forwarded_body);
    x.engine_status = r.status;
    pb::ProcessingRequest rh;
    add_header(*rh.mutable_response_headers(), ":status", std::to_string(r.status));
    add_header(*rh.mutable_response_headers(), "content-type", "application/json");
    EXPECT_TRUE(stream->Write(rh));
    EXPECT_TRUE(stream->Read(&resp));
    EXPECT_TRUE(resp.has_response_headers());
    // The response body in two pieces, each echoed.
    const std::size_t half = r.body.size() / 2;
    for (int i = 0; i < 2; ++i) {
      pb::ProcessingRequest rb;
      rb.mutable_response_body()->set_body(i == 0 ? r.body.substr(0, half) : r.body.substr(half));
      rb.mutable_response_body()->set_end_of_stream(i == 1);
      EXPECT_TRUE(stream->Write(rb));
      EXPECT_TRUE(stream->Read(&resp));
      x.client_body += resp.response_body().response().body_mutation().streamed_response().body();
    }
    stream->WritesDone();
    EXPECT_FALSE(stream->Read(&resp)) << "the picker closes after the last reply";
    x.status = stream->Finish();
    return x;
  }

  std::shared_ptr<grpc::Channel> channel() { return channel_; }
  pb::ExternalProcessor::Stub& stub() { return *stub_; }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::ExternalProcessor::Stub> stub_;
};

// Shared-prefix workload: 6 long documents, 5 questions each, in a fixed shuffled order.
std::vector<std::string> workload() {
  std::vector<std::string> bodies;
  for (int d = 0; d < 6; ++d) {
    std::string doc;
    for (int w = 0; w < 300; ++w) doc += "d" + std::to_string(d) + "w" + std::to_string(w) + " ";
    for (int q = 0; q < 5; ++q) {
      bodies.push_back(R"({"model":"m","max_tokens":2,"prompt":")" + doc + "question " +
                       std::to_string(q) + R"("})");
    }
  }
  std::mt19937 rng(7);
  std::shuffle(bodies.begin(), bodies.end(), rng);
  return bodies;
}

std::int64_t cached_tokens(const std::string& response) {
  const std::string key = R"("cached_tokens":)";
  const auto at = response.find(key);
  return at == std::string::npos ? -1 : std::stoll(response.substr(at + key.size()));
}

// Sends `bodies` through `kvroute serve` with `c` and adds up the cached tokens the engines report.
void serve_cached_tokens(const config::Config& c, const std::vector<std::string>& bodies,
                         std::int64_t& total) {
  proxy::Proxy p(c);
  auto port = p.start();
  ASSERT_TRUE(port) << port.error().message;
  for (const auto& b : bodies) {
    auto r = testing::post_json(*port, "/v1/completions", b);
    ASSERT_EQ(r.status, 200) << r.raw;
    total += cached_tokens(r.body);
  }
  p.stop(1s);
}

TEST(Epp, HitRateThroughTheGatewayEqualsServesOnTheSameWorkload) {
  const auto bodies = workload();
  std::int64_t epp_cached = 0;
  std::set<std::string> used;
  {
    sim::SimCluster sim(sim::loopback_options(4, "m", 4096));
    ASSERT_TRUE(sim.start());
    Epp epp(engines_config(sim), loopback());
    auto ports = epp.start();
    ASSERT_TRUE(ports) << ports.error().message;
    EnvoyStandIn envoy(ports->grpc);
    for (const auto& b : bodies) {
      auto x = envoy.send("/v1/completions", b);
      ASSERT_TRUE(x.status.ok()) << x.status.error_message();
      ASSERT_EQ(x.engine_status, 200) << x.client_body;
      EXPECT_EQ(x.destination, x.metadata_dest);
      EXPECT_EQ(x.forwarded_body, b);
      used.insert(x.destination);
      const auto c = cached_tokens(x.client_body);
      ASSERT_GE(c, 0) << x.client_body;
      epp_cached += c;
    }
    EXPECT_TRUE(testing::wait_until([&] { return epp.open_streams() == 0; }, 5s));
    for (auto* b : epp.router().backend_list()) EXPECT_EQ(b->inflight.load(), 0) << b->name;
    auto m = testing::get(ports->metrics, "/metrics");
    EXPECT_NE(m.body.find(R"(llm_d_epp_request_total{model_name="m",target_model_name="m"} 30)"),
              std::string::npos)
        << m.body;
    EXPECT_NE(m.body.find("kvroute_routing_decisions_total{policy=\"kvroute\""), std::string::npos);
    epp.stop(1s);
  }
  std::int64_t serve_cached = 0;
  {
    sim::SimCluster sim(sim::loopback_options(4, "m", 4096));
    ASSERT_TRUE(sim.start());
    serve_cached_tokens(engines_config(sim), bodies, serve_cached);
  }
  // One routing core: the same decisions, so the same hits. Each document's first request
  // misses; the rest hit its ~300-token prefix.
  EXPECT_EQ(epp_cached, serve_cached);
  EXPECT_GT(epp_cached, 24 * 280);
  EXPECT_GE(used.size(), 2u) << "load spreads documents over engines";
}

// The same comparison with the EPP's engines found through an InferencePool (the fake API server)
// and the serve side given the same backends in the same order.
TEST(Epp, HitRateWithEnginesFromAnInferencePoolEqualsServes) {
  const auto bodies = workload();
  std::int64_t epp_cached = 0;
  std::vector<config::BackendConfig> found;
  {
    sim::SimCluster sim(sim::loopback_options(4, "m", 4096));
    ASSERT_TRUE(sim.start());
    std::vector<std::uint16_t> ports;
    for (const auto& e : sim.endpoints())
      ports.push_back(static_cast<std::uint16_t>(std::stoi(e.url.substr(e.url.rfind(':') + 1))));
    std::string pool = R"({"kind":"InferencePool","metadata":{"name":"pool"},"spec":)"
                       R"({"selector":{"matchLabels":{"app":"sim"}},"targetPorts":[)";
    for (std::size_t i = 0; i < ports.size(); ++i) {
      pool += (i ? "," : "") + std::string(R"({"number":)") + std::to_string(ports[i]) + "}";
    }
    pool += "]}}";
    testing::FakeKubeApi api(pool);
    api.set_pod("sim-0", "127.0.0.1", true);
    config::Config c = engines_config(sim);
    c.backends.clear();
    c.pool_name = "pool";
    c.pool_namespace = "llm";
    c.kube_api_server = api.url();
    Epp epp(c, loopback());
    auto started = epp.start();
    ASSERT_TRUE(started) << started.error().message;
    ASSERT_TRUE(testing::wait_until([&] { return epp.router().backend_list().size() == 4; }, 10s));
    ASSERT_TRUE(testing::wait_until(
        [&] {
          for (auto* b : epp.router().backend_list()) {
            if (!b->models.get()) return false;  // learned from /v1/models by the health loop
          }
          return true;
        },
        10s));
    for (auto* b : epp.router().backend_list()) {
      config::BackendConfig bc;
      bc.url = b->url;
      bc.name = b->name;
      bc.models = {"m"};
      found.push_back(bc);
    }
    EXPECT_EQ(found[0].name.rfind("sim-0:", 0), 0u) << found[0].name;
    EnvoyStandIn envoy(started->grpc);
    for (const auto& b : bodies) {
      auto x = envoy.send("/v1/completions", b);
      ASSERT_TRUE(x.status.ok()) << x.status.error_message();
      ASSERT_EQ(x.engine_status, 200) << x.client_body;
      epp_cached += cached_tokens(x.client_body);
    }
    EXPECT_GE(api.watches(), 2) << "the pool and its pods are watched";
    epp.stop(1s);
  }
  std::int64_t serve_cached = 0;
  {
    sim::SimCluster sim(sim::loopback_options(4, "m", 4096));
    ASSERT_TRUE(sim.start());
    config::Config c = engines_config(sim);
    // The same names in the order discovery gave them (the engines are alike and start empty).
    c.backends.clear();
    for (std::size_t i = 0; i < found.size(); ++i) {
      config::BackendConfig bc = found[i];
      bc.url = sim.endpoints()[i].url;
      c.backends.push_back(bc);
    }
    serve_cached_tokens(c, bodies, serve_cached);
  }
  EXPECT_EQ(epp_cached, serve_cached);
  EXPECT_GT(epp_cached, 24 * 280);
}

// Flow control (issue 18) through the gateway: one engine that runs one request at a time; the
// picker holds the third stream's request until the engine has room, then answers it.
TEST(Epp, FlowControlHoldsAStreamUntilTheEngineHasRoom) {
  auto so = sim::loopback_options(1, "m", 256);
  so.engine.max_num_seqs = 1;
  so.preset = "llama-3.1-8b-h100";  // real time: a 48-token answer takes ~0.4 s
  sim::SimCluster sim(so);
  ASSERT_TRUE(sim.start());
  auto c = engines_config(sim);
  c.policy = "round-robin";
  c.metrics_scrape_interval = 20ms;
  c.flow_control.enabled = true;
  c.flow_control.queue_depth_threshold = 1;
  c.flow_control.metrics_staleness = 2000ms;
  Epp epp(c, loopback());
  auto ports = epp.start();
  ASSERT_TRUE(ports) << ports.error().message;
  auto* fc = epp.router().flow_control();
  ASSERT_NE(fc, nullptr);
  // Scraped once: room.
  ASSERT_TRUE(testing::wait_until(
      [&] {
        return epp.router().has_room(*epp.router().backend_list()[0], routing::steady_now_ms());
      },
      5s));
  std::vector<Exchange> got(3);
  std::vector<std::thread> streams;
  std::atomic<std::size_t> most_queued{0};
  for (int i = 0; i < 3; ++i) {
    streams.emplace_back([&, i] {
      EnvoyStandIn envoy(ports->grpc);
      got[i] = envoy.send("/v1/completions", R"({"model":"m","max_tokens":48,"prompt":"stream )" +
                                                 std::to_string(i) + R"("})");
    });
    std::this_thread::sleep_for(40ms);
    most_queued = std::max(most_queued.load(), fc->queued());
  }
  for (auto& t : streams) t.join();
  EXPECT_EQ(most_queued.load(), 1u);  // one ran, one waited in the engine, one in the picker
  for (const auto& x : got) {
    EXPECT_TRUE(x.status.ok()) << x.status.error_message();
    EXPECT_EQ(x.immediate_status, 0) << x.immediate_body;
    EXPECT_EQ(x.engine_status, 200);
    EXPECT_FALSE(x.destination.empty());
  }
  EXPECT_EQ(fc->queued(), 0u);
}

TEST(Epp, RefusalsAreImmediateResponsesAndTheStreamEndsOk) {
  sim::SimCluster sim(sim::loopback_options(2, "m", 256));
  ASSERT_TRUE(sim.start());
  Epp epp(engines_config(sim), loopback());
  auto ports = epp.start();
  ASSERT_TRUE(ports) << ports.error().message;
  EnvoyStandIn envoy(ports->grpc);
  auto x = envoy.send("/v1/completions", "{oops");
  EXPECT_TRUE(x.status.ok()) << x.status.error_message();
  EXPECT_EQ(x.immediate_status, 400);
  EXPECT_NE(x.immediate_body.find("invalid_request_error"), std::string::npos) << x.immediate_body;
  x = envoy.send("/v1/chat/completions",
                 R"({"model":"nope","messages":[{"role":"user","content":"hi"}]})");
  EXPECT_EQ(x.immediate_status, 404) << x.immediate_body;
  // The picker keeps serving.
  x = envoy.send("/v1/chat/completions",
                 R"({"model":"m","max_tokens":2,"messages":[{"role":"user","content":"hi"}]})");
  EXPECT_TRUE(x.status.ok());
  EXPECT_EQ(x.engine_status, 200) << x.client_body;
  EXPECT_NE(x.client_body.find("chat.completion"), std::string::npos) << x.client_body;
}

TEST(Epp, TenMegabyteBodyComesBackInChunksOf62000) {
  sim::SimCluster sim(sim::loopback_options(2, "m", 256));
  ASSERT_TRUE(sim.start());
  auto c = engines_config(sim);
  c.policy = "least-inflight";
  Epp epp(c, loopback());
  auto ports = epp.start();
  ASSERT_TRUE(ports) << ports.error().message;
  // Sent to the picker only (the stand-in's forward would need an engine that takes 10 MB).
  EnvoyStandIn envoy(ports->grpc);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 60s);
  auto stream = envoy.stub().Process(&ctx);
  pb::ProcessingRequest req;
  add_header(*req.mutable_request_headers(), ":method", "POST");
  add_header(*req.mutable_request_headers(), ":path", "/v1/completions");
  ASSERT_TRUE(stream->Write(req));
  const std::string body =
      R"({"model":"m","max_tokens":1,"prompt":")" + std::string(10u << 20, 'a') + R"("})";
  for (std::size_t off = 0; off < body.size(); off += 65536) {
    pb::ProcessingRequest b;
    b.mutable_request_body()->set_body(body.substr(off, 65536));
    b.mutable_request_body()->set_end_of_stream(off + 65536 >= body.size());
    ASSERT_TRUE(stream->Write(b));
  }
  pb::ProcessingResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  ASSERT_TRUE(resp.has_request_headers()) << resp.DebugString().substr(0, 500);
  std::size_t total = 0, chunks = 0, max_chunk = 0;
  for (;;) {
    ASSERT_TRUE(stream->Read(&resp));
    const auto& sr = resp.request_body().response().body_mutation().streamed_response();
    total += sr.body().size();
    max_chunk = std::max(max_chunk, sr.body().size());
    ++chunks;
    if (sr.end_of_stream()) break;
  }
  EXPECT_EQ(total, body.size());
  EXPECT_EQ(max_chunk, 62000u);
  EXPECT_EQ(chunks, (body.size() + 61999) / 62000);
  ctx.TryCancel();  // the client went away before the response
  stream->Finish();
  EXPECT_TRUE(testing::wait_until([&] { return epp.open_streams() == 0; }, 5s));
  for (auto* b : epp.router().backend_list()) EXPECT_EQ(b->inflight.load(), 0);
}

TEST(Epp, CancelMidBodyAndStreamsThatNeverEndAreBoundedAndReleased) {
  sim::SimCluster sim(sim::loopback_options(2, "m", 256));
  ASSERT_TRUE(sim.start());
  Epp epp(engines_config(sim), loopback());
  auto ports = epp.start();
  ASSERT_TRUE(ports) << ports.error().message;
  EnvoyStandIn envoy(ports->grpc);
  {
    // Cancel mid-body.
    grpc::ClientContext ctx;
    auto stream = envoy.stub().Process(&ctx);
    pb::ProcessingRequest req;
    add_header(*req.mutable_request_headers(), ":method", "POST");
    add_header(*req.mutable_request_headers(), ":path", "/v1/completions");
    ASSERT_TRUE(stream->Write(req));
    pb::ProcessingRequest b;
    b.mutable_request_body()->set_body(R"({"model":"m",)");
    ASSERT_TRUE(stream->Write(b));
    ASSERT_TRUE(testing::wait_until([&] { return epp.open_streams() == 1; }, 5s));
    ctx.TryCancel();
    EXPECT_FALSE(stream->Finish().ok());
  }
  {
    // Routed, then the response never ends: the gateway's deadline bounds it.
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 500ms);
    auto stream = envoy.stub().Process(&ctx);
    pb::ProcessingRequest req;
    add_header(*req.mutable_request_headers(), ":method", "POST");
    add_header(*req.mutable_request_headers(), ":path", "/v1/completions");
    req.mutable_request_headers()->set_end_of_stream(false);
    ASSERT_TRUE(stream->Write(req));
    pb::ProcessingRequest b;
    b.mutable_request_body()->set_body(R"({"model":"m","prompt":"x"})");
    b.mutable_request_body()->set_end_of_stream(true);
    ASSERT_TRUE(stream->Write(b));
    pb::ProcessingResponse resp;
    ASSERT_TRUE(stream->Read(&resp));
    EXPECT_TRUE(resp.has_request_headers());
    int inflight = 0;
    for (auto* be : epp.router().backend_list()) inflight += be->inflight.load();
    EXPECT_EQ(inflight, 1);
    while (stream->Read(&resp)) {
    }
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  EXPECT_TRUE(testing::wait_until([&] { return epp.open_streams() == 0; }, 5s));
  for (auto* b : epp.router().backend_list()) EXPECT_EQ(b->inflight.load(), 0);
}

TEST(Epp, HealthServicesFollowReadinessAndDrain) {
  sim::SimCluster sim(sim::loopback_options(1, "m", 256));
  ASSERT_TRUE(sim.start());
  Epp epp(engines_config(sim), loopback());
  auto ports = epp.start();
  ASSERT_TRUE(ports) << ports.error().message;
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(ports->health),
                                     grpc::InsecureChannelCredentials());
  auto health = grpc::health::v1::Health::NewStub(channel);
  using HS = grpc::health::v1::HealthCheckResponse;
  auto check = [&](const std::string& service) {
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    HS resp;
    auto st = health->Check(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp.status();
  };
  for (const char* s : {"liveness", "readiness", "", "envoy.service.ext_proc.v3.ExternalProcessor",
                        "inference-extension"}) {
    EXPECT_EQ(check(s), HS::SERVING) << s;
  }
  EXPECT_EQ(check("something-else"), HS::SERVICE_UNKNOWN);
  EXPECT_EQ(testing::get(ports->metrics, "/ready").status, 200);
  epp.drain();
  EXPECT_EQ(check("readiness"), HS::NOT_SERVING);
  EXPECT_EQ(check("envoy.service.ext_proc.v3.ExternalProcessor"), HS::NOT_SERVING);
  EXPECT_EQ(check("liveness"), HS::SERVING);
  EXPECT_EQ(testing::get(ports->metrics, "/ready").status, 503);
  // Draining still serves streams already coming.
  EnvoyStandIn envoy(ports->grpc);
  auto x = envoy.send("/v1/completions", R"({"model":"m","max_tokens":1,"prompt":"hi"})");
  EXPECT_EQ(x.engine_status, 200);
}

// The EPP's side of security: ext_proc over TLS (gRPC's, with the test's CA), API keys answered
// with an immediate 401, the engine's Authorization set to the router's own key, and the admin
// listener behind its token.
TEST(Epp, TlsApiKeysAndTheAdminToken) {
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("kvroute_epp_tls_" + std::to_string(::getpid())))
          .string();
  std::filesystem::create_directories(dir);
  auto ca = testing::TestCa::create("kvroute test CA");
  const auto leaf = ca.issue("epp", {"IP:127.0.0.1"});
  testing::write_file(dir + "/tls.crt", leaf.cert_pem);
  testing::write_file(dir + "/tls.key", leaf.key_pem);
  testing::write_file(dir + "/keys", "sk-gateway-client team-a\n");
  testing::write_file(dir + "/engine-key", "engine-secret\n");
  testing::write_file(dir + "/admin-token", "admin-secret\n");

  sim::SimCluster sim(sim::loopback_options(1, "m", 256));
  ASSERT_TRUE(sim.start());
  auto c = engines_config(sim);
  c.tls_cert_file = dir + "/tls.crt";
  c.tls_key_file = dir + "/tls.key";
  c.api_keys_file = dir + "/keys";
  c.upstream_api_key_file = dir + "/engine-key";
  c.admin_token_file = dir + "/admin-token";
  Epp epp(c, loopback());
  auto ports = epp.start();
  ASSERT_TRUE(ports) << ports.error().message;

  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ca.cert_pem();
  EnvoyStandIn envoy(ports->grpc, grpc::SslCredentials(ssl));
  const std::string body = R"({"model":"m","max_tokens":1,"prompt":"hi"})";
  auto refused = envoy.send("/v1/completions", body);
  EXPECT_TRUE(refused.status.ok()) << refused.status.error_message();
  EXPECT_EQ(refused.immediate_status, 401);
  EXPECT_NE(refused.immediate_body.find(R"("code":"invalid_api_key")"), std::string::npos)
      << refused.immediate_body;
  // Two credentials: refused (the engine could read the other one).
  envoy.extra_headers = {{"authorization", "Bearer sk-gateway-client"},
                         {"Authorization", "Bearer sk-other"}};
  EXPECT_EQ(envoy.send("/v1/completions", body).immediate_status, 401);
  envoy.extra_headers = {{"authorization", "Bearer sk-gateway-client"}};
  auto ok = envoy.send("/v1/completions", body);
  EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
  EXPECT_EQ(ok.engine_status, 200);
  EXPECT_EQ(ok.authorization, "Bearer engine-secret");

  // A plaintext client cannot reach the TLS port.
  EnvoyStandIn plain(ports->grpc);
  EXPECT_FALSE(plain.channel()->WaitForConnected(std::chrono::system_clock::now() + 500ms));

  EXPECT_EQ(testing::get(ports->metrics, "/metrics").status, 401);
  EXPECT_EQ(testing::get(ports->metrics, "/health").status, 200);
  auto m = testing::raw_request(ports->metrics,
                                "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                                "admin-secret\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(m.status, 200);
  EXPECT_NE(m.body.find(R"(kvroute_auth_refusals_total{listener="api",reason="missing"} 1)"),
            std::string::npos)
      << m.body;
  EXPECT_NE(m.body.find(R"(kvroute_auth_refusals_total{listener="api",reason="malformed"} 1)"),
            std::string::npos);
  EXPECT_NE(m.body.find("llm_d_epp_request_error_total"), std::string::npos);
  epp.stop(1s);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kvroute::epp
