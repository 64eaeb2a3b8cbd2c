#include "top/top.h"

#include <fmt/format.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <cmath>
#include <csignal>
#include <ctime>
#include <set>

#include "http/client.h"
#include "metrics/prom_parser.h"

namespace kvroute::top {

namespace net = boost::asio;

namespace {

http::Task<std::optional<std::string>> fetch(http::ConnectionPool& pool, const std::string& url,
                                             const http::Headers& headers) {
  auto ep = http::parse_http_url(url);
  if (!ep) co_return std::nullopt;
  auto ex = co_await pool.start(*ep, "GET", "/metrics", headers, {});
  if (!ex || ex->status() != 200) co_return std::nullopt;
  auto body = co_await ex->read_all(32u << 20);
  if (!body) co_return std::nullopt;
  co_return std::move(*body);
}

void read_router(std::string_view text, Snapshot::Router& r) {
  r.up = true;
  for (const auto& s : metrics::parse_exposition(text).samples) {
    if (s.name == "kvroute_requests_total") {
      r.requests += s.value;
      if (s.label("code").starts_with("5")) r.errors += s.value;
    } else if (s.name == "kvroute_routing_decisions_total") {
      r.decisions[std::string(s.label("reason"))] += s.value;
    } else if (s.name == "kvroute_time_to_first_byte_seconds_bucket") {
      const std::string_view le = s.label("le");
      const double bound = le == "+Inf" ? INFINITY : std::strtod(std::string(le).c_str(), nullptr);
      r.ttfb_buckets[bound] += s.value;
    } else if (s.name == "kvroute_backend_inflight_requests") {
      r.inflight[std::string(s.label("backend"))] += s.value;
    } else if (s.name == "kvroute_backend_healthy") {
      r.healthy[std::string(s.label("backend"))] = s.value;
    }
  }
}

void read_engine(std::string_view text, Snapshot::Engine& e) {
  e.up = true;
  for (const auto& s : metrics::parse_exposition(text).samples) {
    if (s.name == "vllm:num_requests_running") e.running += s.value;
    if (s.name == "vllm:num_requests_waiting") e.waiting += s.value;
    if (s.name == "vllm:kv_cache_usage_perc" || s.name == "vllm:gpu_cache_usage_perc")
      e.kv_usage = std::max(e.kv_usage, s.value);
    if (s.name == "vllm:prefix_cache_hits_total") e.hits += s.value;
    if (s.name == "vllm:prefix_cache_queries_total") e.queries += s.value;
    if (s.name == "vllm:request_success_total") e.requests += s.value;
  }
}

// The q-th quantile of the observations between two cumulative bucket sets (Prometheus's
// histogram_quantile: linear within the bucket).
double quantile(const std::map<double, double>& a, const std::map<double, double>& b, double q) {
  std::vector<std::pair<double, double>> d;
  for (const auto& [le, n] : b) {
    const auto it = a.find(le);
    d.emplace_back(le, n - (it == a.end() ? 0 : it->second));
  }
  if (d.empty() || d.back().second <= 0) return NAN;
  const double rank = q * d.back().second;
  double prev_le = 0, prev_n = 0;
  for (const auto& [le, n] : d) {
    if (n >= rank) {
      if (std::isinf(le)) return prev_le;
      return prev_le + (le - prev_le) * (n > prev_n ? (rank - prev_n) / (n - prev_n) : 0);
    }
    prev_le = le;
    prev_n = n;
  }
  return NAN;
}

std::string ms(double seconds) {
  if (std::isnan(seconds)) return "-";
  return seconds < 1 ? fmt::format("{:.1f} ms", seconds * 1e3) : fmt::format("{:.2f} s", seconds);
}

std::string fit(std::string s, std::size_t width) {
  if (s.size() > width) s = s.substr(0, width - 1) + "~";
  return s;
}

}  // namespace

Snapshot sample(const Options& o) {
  net::io_context ioc;
  http::ClientOptions co;
  co.connect_timeout = std::chrono::milliseconds(500);
  co.first_byte_timeout = std::chrono::milliseconds(2000);
  co.idle_timeout = std::chrono::milliseconds(2000);
  http::ConnectionPool pool(ioc.get_executor(), co);
  http::Headers auth;
  if (!o.token.empty()) auth.emplace_back("Authorization", "Bearer " + o.token);
  auto body = [&]() -> http::Task<Snapshot> {
    Snapshot s;
    std::set<std::string> engines(o.engines.begin(), o.engines.end());
    for (const auto& url : o.routers) {
      auto& r = s.routers[url];
      if (auto text = co_await fetch(pool, url, auth)) read_router(*text, r);
      for (const auto& [backend, v] : r.healthy) {
        if (backend.starts_with("http://") || backend.starts_with("https://"))
          engines.insert(backend);
      }
    }
    for (const auto& url : engines) {
      auto& e = s.engines[url];
      const http::Headers none;
      if (auto text = co_await fetch(pool, url, none)) read_engine(*text, e);
    }
    pool.close_idle();
    co_return s;
  };
  auto fut = net::co_spawn(ioc, body(), net::use_future);
  ioc.run();
  Snapshot s = fut.get();
  s.at = std::chrono::steady_clock::now();
  return s;
}

std::string render(const Options& o, const Snapshot& before, const Snapshot& now, int width) {
  const double dt = std::max(1e-3, std::chrono::duration<double>(now.at - before.at).count());
  const auto w = static_cast<std::size_t>(std::max(60, width));
  std::string out;
  const std::time_t t = std::time(nullptr);
  char clock[16];
  std::strftime(clock, sizeof clock, "%H:%M:%S", std::localtime(&t));
  out += fmt::format("kvroute top: {} router(s), {} engine(s), {} (every {:.1f} s)   q: quit\n\n",
                     now.routers.size(), now.engines.size(), clock,
                     static_cast<double>(o.interval.count()) / 1e3);
  out += fmt::format("{:<34} {:>9} {:>7} {:>10} {:>10}  {}\n", "ROUTER", "req/s", "5xx/s",
                     "TTFT p50", "TTFT p99", "decisions");
  for (const auto& [url, r] : now.routers) {
    if (!r.up) {
      out += fmt::format("{:<34} {:>9}\n", fit(url, 34), "down");
      continue;
    }
    const auto& b = before.routers.count(url) ? before.routers.at(url) : Snapshot::Router{};
    double total = 0;
    for (const auto& [k, v] : r.decisions)
      total += v - (b.decisions.count(k) ? b.decisions.at(k) : 0);
    std::string reasons;
    for (const auto& [k, v] : r.decisions) {
      const double d = v - (b.decisions.count(k) ? b.decisions.at(k) : 0);
      if (d > 0 && total > 0) reasons += fmt::format("{} {:.0f}%  ", k, 100 * d / total);
    }
    out += fmt::format("{:<34} {:>9.1f} {:>7.1f} {:>10} {:>10}  {}\n", fit(url, 34),
                       (r.requests - b.requests) / dt, (r.errors - b.errors) / dt,
                       ms(quantile(b.ttfb_buckets, r.ttfb_buckets, 0.5)),
                       ms(quantile(b.ttfb_buckets, r.ttfb_buckets, 0.99)),
                       fit(reasons.empty() ? "-" : reasons, w > 80 ? w - 80 : 10));
  }
  out += fmt::format("\n{:<34} {:>7} {:>8} {:>7} {:>7} {:>7} {:>9} {:>7}\n", "ENGINE", "health",
                     "inflight", "running", "waiting", "KV use", "hit rate", "req/s");
  for (const auto& [url, e] : now.engines) {
    std::string health = e.up ? "up" : "down";
    double inflight = 0;
    for (const auto& [ru, r] : now.routers) {
      if (auto it = r.healthy.find(url); it != r.healthy.end() && it->second == 0)
        health = "ejected";
      if (auto it = r.inflight.find(url); it != r.inflight.end()) inflight += it->second;
    }
    if (!e.up) {
      out += fmt::format("{:<34} {:>7}\n", fit(url, 34), health);
      continue;
    }
    const auto& b = before.engines.count(url) ? before.engines.at(url) : Snapshot::Engine{};
    const double q = e.queries - b.queries;
    out += fmt::format("{:<34} {:>7} {:>8.0f} {:>7.0f} {:>7.0f} {:>6.1f}% {:>9} {:>7.1f}\n",
                       fit(url, 34), health, inflight, e.running, e.waiting, 100 * e.kv_usage,
                       q > 0 ? fmt::format("{:.1f}%", 100 * (e.hits - b.hits) / q) : "-",
                       (e.requests - b.requests) / dt);
  }
  return out;
}

namespace {
// The terminal in raw mode while the view runs (q arrives without Enter), restored on exit.
struct RawTerminal {
  termios saved{};
  bool active = false;
  RawTerminal() {
    if (::isatty(STDIN_FILENO) && ::tcgetattr(STDIN_FILENO, &saved) == 0) {
      termios raw = saved;
      raw.c_lflag &= static_cast<tcflag_t>(~(ICANON | ECHO));
      raw.c_cc[VMIN] = 0;
      raw.c_cc[VTIME] = 0;
      active = ::tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
    }
    std::fputs("\x1b[?25l", stdout);  // hide the cursor
  }
  ~RawTerminal() {
    if (active) ::tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    std::fputs("\x1b[?25h\n", stdout);
    std::fflush(stdout);
  }
};

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

// Waits up to `d` for q (true: quit).
bool wait_for_quit(std::chrono::milliseconds d) {
  const auto end = std::chrono::steady_clock::now() + d;
  while (!g_stop) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    // Once stdin is at its end (/dev/null, a closed pipe) only the interval is waited for.
    static bool stdin_done = false;
    pollfd p{STDIN_FILENO, POLLIN, 0};
    const int timeout = static_cast<int>(left.count());
    if (stdin_done) {
      ::poll(nullptr, 0, timeout);
      continue;
    }
    if (::poll(&p, 1, timeout) > 0 && (p.revents & (POLLIN | POLLHUP)) != 0) {
      char c = 0;
      const ssize_t n = ::read(STDIN_FILENO, &c, 1);
      if (n <= 0) stdin_done = true;
      if (n == 1 && (c == 'q' || c == 'Q')) return true;
    }
  }
  return true;
}
}  // namespace

int run(const Options& o) {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  RawTerminal term;
  Snapshot before = sample(o);
  for (int frame = 0; o.frames == 0 || frame < o.frames; ++frame) {
    if (wait_for_quit(o.interval)) break;
    Snapshot now = sample(o);
    winsize ws{};
    const int width =
        ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 ? ws.ws_col : 120;
    const std::string frame_text = render(o, before, now, width);
    std::fputs("\x1b[H\x1b[2J", stdout);  // home, clear
    std::fputs(frame_text.c_str(), stdout);
    std::fflush(stdout);
    before = std::move(now);
  }
  return 0;
}

}  // namespace kvroute::top
