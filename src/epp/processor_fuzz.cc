// libFuzzer target: the ext_proc state machine driven by arbitrary message sequences, as a buggy
// or hostile gateway could send them. The input is read as steps: an op byte (which message), a
// flags byte (end_of_stream, body mode, subset hint) and a length-prefixed payload (header values,
// body bytes). Invariants checked after every step: nothing is answered after an
// immediate_response; a pick names the same endpoint in the header and the metadata; streamed
// chunks stay within the limit; the backend is released when the stream ends.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "epp/internal/processor.h"

using namespace kvroute;
using namespace kvroute::epp;

namespace {

struct Fixture {
  metrics::Registry reg;
  std::unique_ptr<router::Router> router;
  std::unique_ptr<EppMetrics> m;
  EppCore core;
  Fixture() {
    config::Config c;
    c.log_level = "off";
    c.policy = "kvroute";
    for (int i = 0; i < 3; ++i) {
      config::BackendConfig b;
      b.url = "http://10.0.0." + std::to_string(i + 1) + ":8000";
      b.name = b.url;
      b.models = {"m"};
      c.backends.push_back(b);
    }
    auto r = router::Router::create(std::move(c), reg);
    if (!r) std::abort();
    router = std::move(*r);
    m = std::make_unique<EppMetrics>(reg);
    core.router = router.get();
    core.metrics = m.get();
    core.max_body_bytes = 4096;
    core.chunk_bytes = 100;  // small, so chunking is exercised
  }
};

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static Fixture* f = new Fixture();
  namespace mode_pb = envoy::extensions::filters::http::ext_proc::v3;
  {
    StreamProcessor p(f->core);
    bool over = false;
    std::size_t i = 0;
    auto take = [&](std::size_t n) {
      std::string s(reinterpret_cast<const char*>(data + i), std::min(n, size - i));
      i += s.size();
      return s;
    };
    while (i + 2 <= size) {
      const std::uint8_t op = data[i] % 7;
      const std::uint8_t flags = data[i + 1];
      i += 2;
      const std::size_t len = i < size ? data[i++] : 0;
      std::string payload = take(len);
      pb::ProcessingRequest in;
      const bool eos = flags & 1;
      switch (op) {
        case 0: {
          auto* h = in.mutable_request_headers();
          auto add = [&](const char* k, std::string v) {
            auto* hv = h->mutable_headers()->add_headers();
            hv->set_key(k);
            if (flags & 8)
              hv->set_value(std::move(v));
            else
              hv->set_raw_value(std::move(v));
          };
          add(":method", flags & 16 ? "GET" : "POST");
          add(":path",
              flags & 32 ? "/v1/chat/completions" : (flags & 64 ? payload : "/v1/completions"));
          add("x-session-id", payload);
          h->set_end_of_stream(eos);
          if (flags & 2) {
            in.mutable_protocol_config()->set_request_body_mode(
                flags & 4 ? mode_pb::ProcessingMode::BUFFERED
                          : mode_pb::ProcessingMode::FULL_DUPLEX_STREAMED);
          }
          if (flags & 128) {
            auto& ns = (*in.mutable_metadata_context()
                             ->mutable_filter_metadata())[std::string(kSubsetNamespace)];
            (*ns.mutable_fields())[std::string(kSubsetKey)].set_string_value(payload);
          }
          break;
        }
        case 1:
          in.mutable_request_body()->set_body(payload);
          in.mutable_request_body()->set_end_of_stream(eos);
          break;
        case 2:
          // A valid body with the payload in its prompt: reaches the router and the pick.
          in.mutable_request_body()->set_body(R"({"model":"m","prompt":")" +
                                              std::string(payload.size(), 'a') + R"("})");
          in.mutable_request_body()->set_end_of_stream(eos);
          break;
        case 3:
          in.mutable_request_trailers();
          break;
        case 4: {
          auto* hv = in.mutable_response_headers()->mutable_headers()->add_headers();
          hv->set_key(":status");
          hv->set_raw_value(payload);
          in.mutable_response_headers()->set_end_of_stream(eos);
          break;
        }
        case 5:
          in.mutable_response_body()->set_body(payload);
          in.mutable_response_body()->set_end_of_stream(eos);
          break;
        default:
          in.mutable_response_trailers();
          break;
      }
      std::vector<pb::ProcessingResponse> out;
      const bool more = p.on_request(in, out);
      if (over) check(out.empty() && !more);
      for (const auto& r : out) {
        if (r.has_immediate_response()) {
          const int code = static_cast<int>(r.immediate_response().status().code());
          check(code >= 400 && code < 600);
          check(!more);
        }
        const pb::CommonResponse* c = nullptr;
        if (r.has_request_headers()) c = &r.request_headers().response();
        if (r.has_request_body()) c = &r.request_body().response();
        if (c && c->body_mutation().has_streamed_response()) {
          check(c->body_mutation().streamed_response().body().size() <= f->core.chunk_bytes ||
                r.has_response_body());
        }
        if (c && c->clear_route_cache()) {
          std::string header;
          for (const auto& o : c->header_mutation().set_headers()) {
            if (o.header().key() == kDestinationHeader) header = o.header().raw_value();
          }
          const auto& lb = r.dynamic_metadata().fields().at(std::string(kLbNamespace));
          check(lb.struct_value().fields().at(std::string(kDestinationHeader)).string_value() ==
                header);
          check(!header.empty());
        }
      }
      over = over || !more;
    }
    p.on_stream_end();
  }
  for (auto* b : f->router->backend_list()) check(b->inflight.load() == 0);
  return 0;
}
