#include "admin/admin.h"

#include "openai/error.h"

namespace kvroute::admin {

namespace {
bool is_admin_path(std::string_view p) {
  return p == "/metrics" || p == "/health" || p == "/ready" || p == "/status" ||
         p == "/status.json";
}
}  // namespace

http::Task<bool> handle(const Hooks& hooks, const auth::Gate& gate, http::Request& req,
                        http::ResponseWriter& w) {
  const std::string_view path = req.path();
  if (!is_admin_path(path)) co_return false;
  const http::Headers none;
  if (req.method != "GET" && req.method != "HEAD") {
    std::string body = openai::error_body(405, "use GET for " + std::string(path));
    co_await w.send(405, "application/json", std::move(body), none);
    co_return true;
  }
  // Probes stay open: the kubelet carries no secret.
  if (path != "/health" && path != "/ready") {
    if (auto ok = gate.check_admin(req.header("authorization")); !ok) {
      const http::Headers challenge{{"WWW-Authenticate", "Bearer"}};
      std::string body = openai::error_body(401, auth::refusal_message(ok.error()),
                                            "invalid_request_error", "invalid_api_key");
      co_await w.send(401, "application/json", std::move(body), challenge);
      co_return true;
    }
  }
  if (path == "/metrics") {
    std::string body = hooks.metrics();
    co_await w.send(200, "text/plain; version=0.0.4; charset=utf-8", std::move(body), none);
  } else if (path == "/status" || path == "/status.json") {
    if (!hooks.status) {
      std::string body = openai::error_body(404, "no status page here");
      co_await w.send(404, "application/json", std::move(body), none);
    } else if (path == "/status") {
      std::string body(kStatusPage);
      const http::Headers page{{"Cache-Control", "no-store"},
                               {"Content-Security-Policy",
                                "default-src 'none'; script-src 'unsafe-inline'; style-src "
                                "'unsafe-inline'; connect-src 'self'; img-src 'self' data:"}};
      co_await w.send(200, "text/html; charset=utf-8", std::move(body), page);
    } else {
      std::string body = hooks.status();
      co_await w.send(200, "application/json", std::move(body), none);
    }
  } else if (path == "/health") {
    std::string body = R"({"status":"ok"})";
    co_await w.send(200, "application/json", std::move(body), none);
  } else {
    auto [ok, body] = hooks.ready();
    co_await w.send(ok ? 200 : 503, "application/json", std::move(body), none);
  }
  co_return true;
}

AdminServer::AdminServer(Options opts, Hooks hooks, const auth::Gate& gate)
    : hooks_(std::move(hooks)), gate_(gate) {
  http::ServerOptions so;
  so.address = opts.address;
  so.port = opts.port;
  so.threads = opts.threads;
  so.max_body_bytes = 64 * 1024;
  so.error_body = [](int status, std::string_view message) {
    return openai::error_body(status, message);
  };
  server_ = std::make_unique<http::Server>(
      so, [this](http::Request& req, http::ResponseWriter& w) -> http::Task<void> {
        if (co_await handle(hooks_, gate_, req, w)) co_return;
        std::string body = openai::error_body(404, "no route for " + std::string(req.path()));
        const http::Headers none;
        co_await w.send(404, "application/json", std::move(body), none);
      });
}

Result<std::uint16_t> AdminServer::start() { return server_->start(); }
void AdminServer::stop() { server_->stop(std::chrono::milliseconds(1000)); }

}  // namespace kvroute::admin
