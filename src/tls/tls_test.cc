#include "tls/tls.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

#include "http/client.h"
#include "http/server.h"
#include "testing/certs.h"
#include "testing/raw_http.h"
#include "testing/tls_client.h"
#include "testing/wait.h"

namespace kvroute::tls {
namespace {

namespace net = boost::asio;
using testing::TestCa;
using testing::TlsClient;
using testing::TlsClientOptions;

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (std::filesystem::temp_directory_path() /
            ("kvroute_tls_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    std::filesystem::create_directories(dir_);
    write("ca.crt", ca_.cert_pem());
    write_pair("server", ca_.issue("server-one", {"IP:127.0.0.1", "DNS:localhost"}));
  }
  void TearDown() override {
    if (server_) server_->stop(std::chrono::milliseconds(0));
    std::filesystem::remove_all(dir_);
  }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  void write(const std::string& name, const std::string& text) const {
    testing::write_file(path(name), text);
  }
  void write_pair(const std::string& stem, const testing::CertKey& ck) const {
    write(stem + ".crt", ck.cert_pem);
    write(stem + ".key", ck.key_pem);
  }
  ServerConfig server_config() const {
    ServerConfig c;
    c.cert_file = path("server.crt");
    c.key_file = path("server.key");
    c.reload_interval = std::chrono::milliseconds(0);
    return c;
  }
  // Starts an HTTPS server answering "hello" with `cfg`'s certificates.
  std::uint16_t start(const ServerConfig& cfg) {
    auto contexts = ServerContexts::create(cfg);
    EXPECT_TRUE(contexts) << contexts.error().message;
    contexts_ = *contexts;
    http::ServerOptions o;
    o.address = "127.0.0.1";
    o.port = 0;
    o.threads = 1;
    o.tls = [c = contexts_] { return c->current(); };
    o.on_tls_failure = [this](std::string_view why) {
      std::lock_guard l(mu_);
      reasons_.emplace_back(why);
    };
    server_ = std::make_unique<http::Server>(
        o, [](http::Request&, http::ResponseWriter& w) -> http::Task<void> {
          co_await w.send(200, "text/plain", "hello", {});
        });
    auto port = server_->start();
    EXPECT_TRUE(port);
    return *port;
  }
  // One GET through the router's own upstream client to https://host:port/.
  Expected<std::pair<int, std::string>, http::UpstreamFailure> client_get(
      std::uint16_t port, const ClientConfig& cc, const std::string& host = "127.0.0.1") {
    auto ctx = make_client_context(cc);
    EXPECT_TRUE(ctx) << ctx.error().message;
    http::ClientOptions co;
    co.tls = *ctx;
    co.tls_verify = !cc.insecure_skip_verify;
    net::io_context ioc;
    http::ConnectionPool pool(ioc.get_executor(), co);
    http::Endpoint ep{host, port, true};
    auto body = [&]() -> http::Task<Expected<std::pair<int, std::string>, http::UpstreamFailure>> {
      auto r = co_await pool.get(ep, "/", std::chrono::seconds(5));
      pool.close_idle();
      co_return r;
    };
    auto fut = net::co_spawn(ioc, body(), net::use_future);
    ioc.run();
    return fut.get();
  }
  TlsClientOptions client_options() const {
    TlsClientOptions o;
    o.ca_file = path("ca.crt");
    return o;
  }

  // Why the server's handshakes failed (ServerOptions::on_tls_failure), waited for: the server
  // notices a failure after the client has given up.
  std::vector<std::string> reasons(std::size_t at_least) {
    testing::wait_until(
        [&] {
          std::lock_guard l(mu_);
          return reasons_.size() >= at_least;
        },
        std::chrono::seconds(5));
    std::lock_guard l(mu_);
    return reasons_;
  }

  TestCa ca_ = TestCa::create("kvroute test CA");
  std::mutex mu_;
  std::vector<std::string> reasons_;
  std::string dir_;
  std::shared_ptr<ServerContexts> contexts_;
  std::unique_ptr<http::Server> server_;
};

constexpr std::string_view kGet = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";

TEST_F(TlsTest, HandshakeWithAlpnAndTheRightCertificate) {
  const auto port = start(server_config());
  TlsClient c;
  ASSERT_TRUE(c.connect(port, client_options())) << c.error();
  EXPECT_EQ(c.alpn(), "http/1.1");
  EXPECT_EQ(c.peer_common_name(), "server-one");
  auto r = c.request(kGet);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "hello");
  // Keep-alive over TLS: a second request on the same connection.
  EXPECT_EQ(c.request(kGet).status, 200);
  EXPECT_EQ(c.version(), "TLSv1.3");
  // TLS 1.2 too; not 1.1.
  TlsClient v12;
  auto o12 = client_options();
  o12.max_version = TLS1_2_VERSION;
  ASSERT_TRUE(v12.connect(port, o12)) << v12.error();
  EXPECT_EQ(v12.version(), "TLSv1.2");
  EXPECT_EQ(v12.alpn(), "http/1.1");
  EXPECT_EQ(v12.request(kGet).status, 200);
  TlsClient v11;
  auto o11 = client_options();
  o11.min_version = TLS1_VERSION;
  o11.max_version = TLS1_1_VERSION;
  EXPECT_FALSE(v11.connect(port, o11));
  // A client that offers only h2 goes on without ALPN and speaks HTTP/1.1.
  TlsClient h2;
  auto o = client_options();
  o.alpn = "h2";
  ASSERT_TRUE(h2.connect(port, o)) << h2.error();
  EXPECT_EQ(h2.alpn(), "");
  EXPECT_EQ(h2.request(kGet).status, 200);
}

TEST_F(TlsTest, PlainHttpToATlsPortIsCutAndCounted) {
  const auto port = start(server_config());
  auto r = testing::raw_request(port, kGet, std::chrono::seconds(5));
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(reasons(1), std::vector<std::string>{"protocol"});
  EXPECT_GE(server_->tls_handshake_failures(), 1u);
  // The server goes on serving TLS.
  TlsClient c;
  ASSERT_TRUE(c.connect(port, client_options())) << c.error();
  EXPECT_EQ(c.request(kGet).status, 200);
}

TEST_F(TlsTest, RotationReachesNewConnectionsAndKeepsOpenOnes) {
  const auto port = start(server_config());
  TlsClient before;
  ASSERT_TRUE(before.connect(port, client_options())) << before.error();
  EXPECT_EQ(before.peer_common_name(), "server-one");
  EXPECT_EQ(before.request(kGet).status, 200);
  // Kubernetes swaps the files (a rename here): the certificate first, then the key. Between the
  // two the pair does not match: the old context stays.
  const auto next = ca_.issue("server-two", {"IP:127.0.0.1"});
  write("server.crt", next.cert_pem);
  contexts_->reload_if_changed();
  EXPECT_EQ(contexts_->reload_failures(), 1u);
  TlsClient halfway;
  ASSERT_TRUE(halfway.connect(port, client_options())) << halfway.error();
  EXPECT_EQ(halfway.peer_common_name(), "server-one");
  write("server.key", next.key_pem);
  TlsClient after;
  ASSERT_TRUE(after.connect(port, client_options())) << after.error();
  EXPECT_EQ(after.peer_common_name(), "server-two");
  EXPECT_EQ(contexts_->reloads(), 1u);
  // The connection opened before the rotation goes on.
  EXPECT_EQ(before.request(kGet).status, 200);
  EXPECT_EQ(after.request(kGet).status, 200);
}

TEST_F(TlsTest, BadFilesFailStartUpWithTheirNames) {
  auto c = server_config();
  c.key_file = path("missing.key");
  auto r = ServerContexts::create(c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("missing.key"), std::string::npos);
  write_pair("other", ca_.issue("other", {"IP:127.0.0.1"}));
  c.key_file = path("other.key");
  r = ServerContexts::create(c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("does not match"), std::string::npos);
}

TEST_F(TlsTest, UpstreamClientVerifiesChainNameAndValidity) {
  const auto port = start(server_config());
  ClientConfig cc;
  cc.ca_file = path("ca.crt");
  auto ok = client_get(port, cc);
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(ok->first, 200);
  EXPECT_EQ(ok->second, "hello");
  // A DNS name the certificate carries.
  EXPECT_TRUE(client_get(port, cc, "localhost"));

  // The wrong CA.
  const auto other_ca = TestCa::create("another CA");
  write("other-ca.crt", other_ca.cert_pem());
  ClientConfig wrong = cc;
  wrong.ca_file = path("other-ca.crt");
  auto bad = client_get(port, wrong);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().kind, http::UpstreamError::kConnect);
  EXPECT_NE(bad.error().message.find("local issuer"), std::string::npos) << bad.error().message;
  // The client's alert (unknown CA) is the server's reason.
  EXPECT_EQ(reasons(1), std::vector<std::string>{"client_alert"});
  // The opt-out accepts it.
  wrong.insecure_skip_verify = true;
  EXPECT_TRUE(client_get(port, wrong));
}

TEST_F(TlsTest, UpstreamClientRefusesAWrongNameAndAnExpiredCertificate) {
  ClientConfig cc;
  cc.ca_file = path("ca.crt");
  write_pair("server", ca_.issue("elsewhere", {"DNS:engine.elsewhere"}));
  auto port = start(server_config());
  auto wrong_name = client_get(port, cc);
  ASSERT_FALSE(wrong_name);
  EXPECT_NE(wrong_name.error().message.find("mismatch"), std::string::npos)
      << wrong_name.error().message;
  server_->stop(std::chrono::milliseconds(0));

  write_pair("server", ca_.issue("expired", {"IP:127.0.0.1"}, std::chrono::hours(-48),
                                 std::chrono::hours(-24)));
  port = start(server_config());
  auto expired = client_get(port, cc);
  ASSERT_FALSE(expired);
  EXPECT_NE(expired.error().message.find("expired"), std::string::npos) << expired.error().message;
}

TEST_F(TlsTest, MutualTlsAcceptsTheCasClientsAndRefusesOthers) {
  auto cfg = server_config();
  cfg.client_ca_file = path("ca.crt");
  const auto port = start(cfg);
  write_pair("client", ca_.issue("router", {}));
  const auto stranger_ca = TestCa::create("stranger CA");
  write_pair("stranger", stranger_ca.issue("stranger", {}));

  // The router's upstream client with its certificate.
  ClientConfig cc;
  cc.ca_file = path("ca.crt");
  cc.cert_file = path("client.crt");
  cc.key_file = path("client.key");
  auto ok = client_get(port, cc);
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(ok->first, 200);

  // Without a certificate: refused (TLS 1.3 reports it at the first read).
  TlsClient none;
  bool refused = !none.connect(port, client_options());
  if (!refused) refused = none.request(kGet).status == 0;
  EXPECT_TRUE(refused);
  // With a certificate from another CA: refused.
  TlsClient stranger;
  auto so = client_options();
  so.cert_file = path("stranger.crt");
  so.key_file = path("stranger.key");
  refused = !stranger.connect(port, so);
  if (!refused) refused = stranger.request(kGet).status == 0;
  EXPECT_TRUE(refused);
  // An expired certificate from the right CA: refused.
  write_pair("expired",
             ca_.issue("old-router", {}, std::chrono::hours(-48), std::chrono::hours(-1)));
  TlsClient expired;
  auto eo = client_options();
  eo.cert_file = path("expired.crt");
  eo.key_file = path("expired.key");
  refused = !expired.connect(port, eo);
  if (!refused) refused = expired.request(kGet).status == 0;
  EXPECT_TRUE(refused);
  // The client reads the server's alert before the server's coroutine records the failure, and
  // the three records may land in any order: wait for all three, compare them as a set.
  auto why = reasons(3);
  std::sort(why.begin(), why.end());
  EXPECT_EQ(why,
            (std::vector<std::string>{"client_certificate_rejected", "client_certificate_rejected",
                                      "no_client_certificate"}));
  EXPECT_EQ(server_->tls_handshake_failures(), 3u);
  // A client certificate needs its key.
  ClientConfig half = cc;
  half.key_file.clear();
  EXPECT_FALSE(make_client_context(half));
}

}  // namespace
}  // namespace kvroute::tls
