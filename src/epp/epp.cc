#include "epp/epp.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <deque>

#include "admin/admin.h"
#include "auth/auth.h"
#include "common/log.h"
#include "common/mutex.h"
#include "envoy/service/ext_proc/v3/external_processor.grpc.pb.h"
#include "epp/internal/health.h"
#include "epp/internal/processor.h"
#include "http/server.h"
#include "openai/error.h"
#include "tls/tls.h"

namespace kvroute::epp {

namespace {

// One ext_proc stream: reads Envoy's messages one at a time through the StreamProcessor and
// writes its replies in order. gRPC may run OnReadDone and OnWriteDone at once on two threads:
// the write queue and the end-of-stream flags are under mu_; the processor is touched only by
// the read side (one read outstanding at a time).
class ProcessReactor final
    : public grpc::ServerBidiReactor<pb::ProcessingRequest, pb::ProcessingResponse> {
 public:
  ProcessReactor(const EppCore& core, std::atomic<std::size_t>& open) : proc_(core), open_(open) {
    open_.fetch_add(1);
    // Flow control answers a queued request on its own thread (StreamProcessor::complete).
    proc_.set_admission_handler([this](const flow::Admission& a) { deliver(a); });
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // Envoy half-closed (the request is over) or the stream was cancelled.
      MutexLock lock(mu_);
      reads_done_ = true;
      finish_if_drained_locked();
      return;
    }
    std::vector<pb::ProcessingResponse> replies;
    bool more = false;
    {
      MutexLock p(proc_mu_);
      more = proc_.on_request(in_, replies);
    }
    {
      MutexLock lock(mu_);
      for (auto& r : replies) queue_.push_back(std::move(r));
      write_next_locked();
      if (!more) {
        // An immediate_response ends the stream once it is written.
        reads_done_ = true;
        finish_if_drained_locked();
        return;
      }
    }
    in_.Clear();
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    MutexLock lock(mu_);
    writing_ = false;
    queue_.pop_front();
    if (!ok) {
      // The stream is broken: nothing more will be written.
      queue_.clear();
      write_failed_ = true;
    }
    write_next_locked();
    finish_if_drained_locked();
  }

  void OnDone() override {
    // Not under proc_mu_: a delivery in progress holds the processor's pending lock and takes
    // proc_mu_; on_stream_end waits for it. No read reaction runs any more.
    proc_.on_stream_end();
    open_.fetch_sub(1);
    delete this;
  }

 private:
  // A request that waited in flow control's queue is answered: its replies go out in order.
  void deliver(const flow::Admission& a) {
    std::vector<pb::ProcessingResponse> replies;
    bool more = false;
    {
      MutexLock p(proc_mu_);
      more = proc_.complete(a, replies);
    }
    MutexLock lock(mu_);
    if (finished_) return;
    for (auto& r : replies) queue_.push_back(std::move(r));
    write_next_locked();
    if (!more) {
      // A refusal (immediate_response) ends the stream once written.
      reads_done_ = true;
      finish_if_drained_locked();
    }
  }

  void write_next_locked() REQUIRES(mu_) {
    if (writing_ || queue_.empty() || write_failed_) return;
    writing_ = true;
    // Deque elements keep their address while others are appended.
    StartWrite(&queue_.front());
  }
  void finish_if_drained_locked() REQUIRES(mu_) {
    if (finished_ || !reads_done_ || writing_ || (!queue_.empty() && !write_failed_)) return;
    finished_ = true;
    Finish(grpc::Status::OK);
  }

  Mutex proc_mu_;  // on_request (read side) and complete (flow control's thread)
  StreamProcessor proc_;
  std::atomic<std::size_t>& open_;
  pb::ProcessingRequest in_;
  Mutex mu_;
  std::deque<pb::ProcessingResponse> queue_ GUARDED_BY(mu_);
  bool writing_ GUARDED_BY(mu_) = false;
  bool reads_done_ GUARDED_BY(mu_) = false;
  bool write_failed_ GUARDED_BY(mu_) = false;
  bool finished_ GUARDED_BY(mu_) = false;
};

class ExtProcService final : public pb::ExternalProcessor::CallbackService {
 public:
  ExtProcService(const EppCore& core, std::atomic<std::size_t>& open) : core_(core), open_(open) {}
  grpc::ServerBidiReactor<pb::ProcessingRequest, pb::ProcessingResponse>* Process(
      grpc::CallbackServerContext* /*ctx*/) override {
    return new ProcessReactor(core_, open_);
  }

 private:
  const EppCore& core_;
  std::atomic<std::size_t>& open_;
};

Result<BodyMode> parse_body_mode(std::string_view s) {
  if (s == "auto") return BodyMode::kAuto;
  if (s == "full-duplex") return BodyMode::kFullDuplex;
  if (s == "buffered") return BodyMode::kBuffered;
  return fail(Error::invalid("--body-mode '" + std::string(s) +
                             "': expected auto, full-duplex or buffered"));
}

Result<std::unique_ptr<grpc::Server>> build_grpc(
    const std::string& address, int port, grpc::Service* service, std::size_t max_message,
    std::uint16_t& bound,
    std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials()) {
  grpc::ServerBuilder builder;
  int selected = 0;
  const std::string where =
      (address.find(':') != std::string::npos ? "[" + address + "]" : address) + ":" +
      std::to_string(port);
  builder.AddListeningPort(where, std::move(creds), &selected);
  builder.RegisterService(service);
  builder.SetMaxReceiveMessageSize(static_cast<int>(std::min<std::size_t>(max_message, INT32_MAX)));
  auto server = builder.BuildAndStart();
  if (!server || selected == 0) return fail(Error::unavailable("cannot listen on " + where));
  bound = static_cast<std::uint16_t>(selected);
  return server;
}

// TLS for the gateway's ext_proc stream (docs/adr/0022): gRPC's own TLS, with its file watcher
// reloading rotated certificates (at most every second), and mTLS with a client CA. The files are
// loaded once through tls:: first, so that a bad file fails start-up with its name.
Result<std::shared_ptr<grpc::ServerCredentials>> ext_proc_credentials(const config::Config& c) {
  if (c.tls_cert_file.empty()) return grpc::InsecureServerCredentials();
  tls::ServerConfig tc;
  tc.cert_file = c.tls_cert_file;
  tc.key_file = c.tls_key_file;
  tc.client_ca_file = c.tls_client_ca_file;
  KVROUTE_TRY(tls::make_server_context(tc));
  const auto every = static_cast<unsigned>(std::max<std::int64_t>(
      1, std::chrono::duration_cast<std::chrono::seconds>(c.tls_reload_interval).count()));
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      c.tls_key_file, c.tls_cert_file, c.tls_client_ca_file, every);
  grpc::experimental::TlsServerCredentialsOptions opts(provider);
  opts.watch_identity_key_cert_pairs();
  if (!c.tls_client_ca_file.empty()) {
    opts.watch_root_certs();
    opts.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  } else {
    opts.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  }
  return grpc::experimental::TlsServerCredentials(opts);
}

}  // namespace

struct Epp::Impl {
  config::Config cfg;
  EppOptions opts;
  metrics::Registry reg;
  // Checks API keys and the admin token (docs/adr/0023).
  std::unique_ptr<auth::Gate> gate;
  // The admin listener (/metrics, /health, /ready) runs the router's probe and scrape loops: it is
  // declared before the router so that the router's connection pools go first, while the
  // listener's executor lives.
  std::unique_ptr<admin::AdminServer> admin_server;
  std::unique_ptr<router::Router> router;
  std::unique_ptr<EppMetrics> metrics;
  EppCore core;
  std::atomic<std::size_t> open_streams{0};
  std::atomic<bool> draining{false};
  std::unique_ptr<ExtProcService> ext_proc;
  std::unique_ptr<HealthService> health;
  std::unique_ptr<grpc::Server> grpc_server;
  std::unique_ptr<grpc::Server> health_server;
  bool stopped = false;

  bool ready() const {
    return !draining.load() && ready_endpoints() > 0 && !router->replicas_warming();
  }
  int ready_endpoints() const {
    const auto now = routing::steady_now_ms();
    int n = 0;
    for (auto* b : router->backend_list()) n += b->available(now) ? 1 : 0;
    return n;
  }

  std::string render_metrics() {
    router->update_gauges();
    metrics->ready.with({}).set(ready_endpoints());
    if (router->flow_control()) {
      const double s = router->pool_saturation(routing::steady_now_ms());
      metrics->flow_pool_saturation.with({cfg.pool_name, "decode"}).set(s);
      metrics->flow_pool_saturation.with({cfg.pool_name, "effective"}).set(s);
    }
    return reg.render();
  }
  std::pair<bool, std::string> ready_body() const {
    const bool ok = ready();
    return {ok, fmt::format(R"({{"ready":{},"ready_endpoints":{}{}}})", ok ? "true" : "false",
                            ready_endpoints(),
                            router->replicas_warming() ? R"(,"warming":"replicas")" : "")};
  }
};

Epp::Epp(config::Config cfg, EppOptions opts) : impl_(std::make_unique<Impl>()) {
  impl_->cfg = std::move(cfg);
  impl_->opts = std::move(opts);
}

Epp::~Epp() { stop(std::chrono::milliseconds(0)); }

metrics::Registry& Epp::registry() { return impl_->reg; }
router::Router& Epp::router() { return *impl_->router; }
std::size_t Epp::open_streams() const { return impl_->open_streams.load(); }

Result<EppPorts> Epp::start() {
  auto& im = *impl_;
  KVROUTE_TRY(const BodyMode mode, parse_body_mode(im.opts.body_mode));
  KVROUTE_TRY(im.router, router::Router::create(std::move(im.cfg), im.reg));
  im.cfg = im.router->config();
  im.metrics = std::make_unique<EppMetrics>(im.reg);
  im.core.router = im.router.get();
  im.core.metrics = im.metrics.get();
  im.core.inference_pool = im.cfg.pool_name;
  im.core.body_mode = mode;
  im.core.max_body_bytes = im.opts.max_body_bytes;
  im.core.debug_headers = im.cfg.debug_headers;
  auth::GateOptions go;
  go.api_keys_file = im.cfg.api_keys_file;
  go.admin_token_file = im.cfg.admin_token_file;
  go.reload_interval = im.cfg.tls_reload_interval;
  KVROUTE_TRY(im.gate, auth::Gate::create(go, im.reg));
  im.core.gate = im.gate.get();
  const std::string upstream_auth = im.cfg.effective_upstream_authorization();
  if (upstream_auth == "none") im.core.upstream_auth = EppCore::UpstreamAuth::kNone;
  if (upstream_auth == "key") {
    im.core.upstream_auth = EppCore::UpstreamAuth::kKey;
    KVROUTE_TRY(auto key, auth::read_secret_file(im.cfg.upstream_api_key_file));
    im.core.upstream_authorization = "Bearer " + key;
  }
  KVROUTE_TRY(auto ext_proc_creds, ext_proc_credentials(im.cfg));

  EppPorts ports;
  // The admin listener (--admin-address/--admin-port, else --address/--metrics-port); its thread
  // also runs the router's health probes and metric scrapes.
  Impl* self = &im;
  admin::Options ao;
  ao.address = im.cfg.admin_port >= 0 ? im.cfg.admin_address : im.opts.address;
  ao.port =
      static_cast<std::uint16_t>(im.cfg.admin_port >= 0 ? im.cfg.admin_port : im.opts.metrics_port);
  admin::Hooks hooks;
  hooks.metrics = [self] { return self->render_metrics(); };
  hooks.ready = [self] { return self->ready_body(); };
  hooks.status = [self] { return self->router->status_json(); };
  im.admin_server = std::make_unique<admin::AdminServer>(ao, std::move(hooks), *im.gate);
  KVROUTE_TRY(ports.metrics, im.admin_server->start());
  im.router->start_background(im.admin_server->executor(), im.admin_server->executor());

  im.health = std::make_unique<HealthService>([self] { return self->ready(); });
  KVROUTE_TRY(im.health_server, build_grpc(im.opts.address, im.opts.health_port, im.health.get(),
                                           1 << 20, ports.health));
  im.ext_proc = std::make_unique<ExtProcService>(im.core, im.open_streams);
  // A BUFFERED gateway sends the whole body in one message.
  KVROUTE_TRY(im.grpc_server,
              build_grpc(im.opts.address, im.opts.grpc_port, im.ext_proc.get(),
                         im.opts.max_body_bytes + (1u << 20), ports.grpc, ext_proc_creds));
  spdlog::info(
      "kvroute epp: ext_proc on {}:{}, gRPC health on {}, metrics on {}; {} backends, policy {}, "
      "body mode {}",
      im.opts.address, ports.grpc, ports.health, ports.metrics, im.router->backend_list().size(),
      im.router->policy().name(), im.opts.body_mode);
  return ports;
}

void Epp::drain() {
  if (!impl_->draining.exchange(true)) spdlog::info("epp draining: readiness is NOT_SERVING");
}

void Epp::stop(std::chrono::milliseconds grace) {
  auto& im = *impl_;
  if (im.stopped) return;
  im.stopped = true;
  drain();
  // Open streams finish within the grace period; gRPC then cancels what remains.
  if (im.grpc_server) im.grpc_server->Shutdown(std::chrono::system_clock::now() + grace);
  if (im.health_server) im.health_server->Shutdown(std::chrono::system_clock::now());
  if (im.admin_server) im.admin_server->stop();
  if (im.router) im.router->stop();
}

int run_epp(config::Config cfg, EppOptions opts) {
  if (!set_log_level(cfg.log_level)) {
    spdlog::error("unknown log level '{}'", cfg.log_level);
    return 2;
  }
  const auto grace = cfg.shutdown_grace;
  Epp epp(std::move(cfg), std::move(opts));
  auto ports = epp.start();
  if (!ports) {
    spdlog::error("{}", ports.error().message);
    return 1;
  }
  boost::asio::io_context signals_ctx;
  boost::asio::signal_set signals(signals_ctx, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code&, int sig) {
    spdlog::info("signal {}: draining (grace {} ms)", sig, grace.count());
  });
  signals_ctx.run();
  epp.stop(grace);
  spdlog::info("kvroute epp stopped");
  return 0;
}

}  // namespace kvroute::epp
