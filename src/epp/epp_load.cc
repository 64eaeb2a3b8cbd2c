// epp_load: a load client for `kvroute epp` that plays Envoy (FULL_DUPLEX_STREAMED). Each of
// --clients threads runs streams back to back for --seconds: request headers, the body in 64 KiB
// chunks, then it waits for the picker's headers reply and the streamed body, sends a short JSON
// response through, and closes. Reported: streams/s, and the picker's added time from the body's
// last message to the headers reply (p50/p90/p99), the figure gateways add to TTFT.
//
//   epp_load --target 127.0.0.1:9002 --prompt-tokens 8000 --clients 8 --seconds 10
//
// Prompts are word-tokenizer prompts (one token per word, as `--tokenizer word` counts them) that
// share a prefix per "document" (--documents), so the prefix index works as in production.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "envoy/service/ext_proc/v3/external_processor.grpc.pb.h"

namespace pb = envoy::service::ext_proc::v3;
namespace mode_pb = envoy::extensions::filters::http::ext_proc::v3;
using Clock = std::chrono::steady_clock;

namespace {

void add_header(pb::HttpHeaders& h, const std::string& k, const std::string& v) {
  auto* hv = h.mutable_headers()->add_headers();
  hv->set_key(k);
  hv->set_raw_value(v);
}

std::string prompt_body(int doc, int q, int tokens) {
  std::string p;
  p.reserve(static_cast<std::size_t>(tokens) * 8);
  for (int w = 0; w < tokens - 2; ++w)
    p += "d" + std::to_string(doc) + "w" + std::to_string(w) + " ";
  p += "q" + std::to_string(q);
  return R"({"model":"m","max_tokens":16,"prompt":")" + p + R"("})";
}

}  // namespace

int main(int argc, char** argv) {
  std::string target = "127.0.0.1:9002";
  int tokens = 1000, clients = 8, documents = 8;
  double seconds = 10;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--target")
      target = v;
    else if (k == "--prompt-tokens")
      tokens = std::atoi(v.c_str());
    else if (k == "--clients")
      clients = std::atoi(v.c_str());
    else if (k == "--documents")
      documents = std::atoi(v.c_str());
    else if (k == "--seconds")
      seconds = std::atof(v.c_str());
    else {
      std::fprintf(stderr, "unknown flag %s\n", k.c_str());
      return 2;
    }
  }
  // Bodies prepared up front: the client's own work stays out of the measured span.
  std::vector<std::string> bodies;
  for (int d = 0; d < documents; ++d) {
    for (int q = 0; q < 4; ++q) bodies.push_back(prompt_body(d, q, tokens));
  }
  auto channel_args = grpc::ChannelArguments();
  channel_args.SetMaxReceiveMessageSize(64 << 20);
  std::vector<std::vector<double>> added(static_cast<std::size_t>(clients));
  std::atomic<long> streams{0}, failures{0};
  const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      // One channel (HTTP/2 connection) per client, as Envoy spreads streams over connections.
      auto ch = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), channel_args);
      auto stub = pb::ExternalProcessor::NewStub(ch);
      std::size_t next = static_cast<std::size_t>(c);
      while (Clock::now() < deadline) {
        const std::string& body = bodies[next % bodies.size()];
        next += static_cast<std::size_t>(clients);
        grpc::ClientContext ctx;
        auto s = stub->Process(&ctx);
        pb::ProcessingRequest h;
        add_header(*h.mutable_request_headers(), ":method", "POST");
        add_header(*h.mutable_request_headers(), ":path", "/v1/completions");
        add_header(*h.mutable_request_headers(), "content-type", "application/json");
        h.mutable_protocol_config()->set_request_body_mode(
            mode_pb::ProcessingMode::FULL_DUPLEX_STREAMED);
        s->Write(h);
        Clock::time_point last{};
        for (std::size_t off = 0; off < body.size(); off += 65536) {
          pb::ProcessingRequest b;
          b.mutable_request_body()->set_body(body.substr(off, 65536));
          const bool eos = off + 65536 >= body.size();
          b.mutable_request_body()->set_end_of_stream(eos);
          if (eos) last = Clock::now();
          s->Write(b);
        }
        pb::ProcessingResponse r;
        bool ok = s->Read(&r) && r.has_request_headers();
        const auto replied = Clock::now();
        while (ok) {
          if (!s->Read(&r)) {
            ok = false;
            break;
          }
          if (r.request_body().response().body_mutation().streamed_response().end_of_stream())
            break;
        }
        if (ok) {
          pb::ProcessingRequest rh;
          add_header(*rh.mutable_response_headers(), ":status", "200");
          s->Write(rh);
          ok = s->Read(&r);
          pb::ProcessingRequest rb;
          rb.mutable_response_body()->set_body(R"({"choices":[{"text":"ok"}]})");
          rb.mutable_response_body()->set_end_of_stream(true);
          s->Write(rb);
          ok = ok && s->Read(&r);
        }
        s->WritesDone();
        while (s->Read(&r)) {
        }
        const bool finished = s->Finish().ok();
        if (ok && finished) {
          added[static_cast<std::size_t>(c)].push_back(
              std::chrono::duration<double, std::milli>(replied - last).count());
          streams.fetch_add(1);
        } else {
          failures.fetch_add(1);
        }
      }
    });
  }
  const auto t0 = Clock::now();
  for (auto& t : threads) t.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  std::vector<double> all;
  for (auto& v : added) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) {
    return all.empty() ? 0.0
                       : all[std::min(all.size() - 1, static_cast<std::size_t>(p * all.size()))];
  };
  std::printf(
      "{\"prompt_tokens\":%d,\"clients\":%d,\"streams\":%ld,\"failures\":%ld,\"streams_per_s\":%."
      "1f,"
      "\"added_ms_p50\":%.3f,\"added_ms_p90\":%.3f,\"added_ms_p99\":%.3f}\n",
      tokens, clients, streams.load(), failures.load(),
      static_cast<double>(streams.load()) / elapsed, pct(0.5), pct(0.9), pct(0.99));
  return failures.load() == 0 ? 0 : 1;
}
