#include "bench/internal/compare.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <thread>

#include "common/log.h"
#include "config/config.h"
#include "http/client.h"
#include "proxy/proxy.h"
#include "routing/policy.h"

namespace kvroute::bench {

std::vector<std::string> split_list(std::string_view s) {
  std::vector<std::string> out;
  std::size_t p = 0;
  while (p <= s.size()) {
    std::size_t e = s.find(',', p);
    if (e == std::string_view::npos) e = s.size();
    std::string_view item = s.substr(p, e - p);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (!item.empty()) out.emplace_back(item);
    p = e + 1;
  }
  return out;
}

Result<CompareTarget> parse_target(std::string_view spec) {
  CompareTarget t;
  const std::size_t eq = spec.find('=');
  const bool named =
      eq != std::string_view::npos && spec.substr(0, eq).find("://") == std::string_view::npos;
  t.url = std::string(named ? spec.substr(eq + 1) : spec);
  if (t.url.find("://") == std::string::npos)
    return fail(
        Error::invalid("--target '" + std::string(spec) + "': expected NAME=http://host:port"));
  auto ep = http::parse_http_url(t.url);
  if (!ep)
    return fail(Error::invalid("--target '" + std::string(spec) + "': " + ep.error().message));
  if (ep->tls) {
    return fail(Error::invalid("--target '" + std::string(spec) +
                               "': the load generator speaks plain HTTP (https: use wrk)"));
  }
  t.name = named ? std::string(spec.substr(0, eq)) : fmt::format("{}:{}", ep->host, ep->port);
  if (t.name.empty())
    return fail(Error::invalid("--target '" + std::string(spec) + "': empty name"));
  return t;
}

namespace {

// The summary options of a run: in process, the engines' block size when none was given.
SummaryOptions summary_options(const CompareOptions& o) {
  SummaryOptions s = o.summary;
  if (s.block_size == 0 && o.targets.empty()) s.block_size = o.sim.engine.block_size;
  return s;
}

Result<std::vector<CompareRun>> run_targets(const Workload& workload, const CompareOptions& o) {
  if (!o.policies.empty())
    return fail(Error::invalid("--policies and --target cannot be combined"));
  if (o.simultaneous)
    return fail(Error::invalid(
        "--simultaneous and --target cannot be combined (the targets share engines)"));
  std::vector<CompareRun> out;
  for (const auto& target : o.targets) {
    CompareRun cr;
    cr.policy = target.name;
    if (o.on_start) o.on_start(target.name);
    const auto t0 = std::chrono::steady_clock::now();
    LoadOptions lo = o.load;
    lo.url = target.url;
    lo.backend_metrics = o.engine_urls;
    lo.reset_prefix_cache = o.reset_prefix_cache && !o.engine_urls.empty();
    if (lo.progress_label.empty()) lo.progress_label = fmt::format("{:<20} ", target.name);
    auto run = run_load(workload, lo);
    if (!run) {
      cr.error = run.error().message;
      out.push_back(std::move(cr));
      continue;
    }
    cr.run = std::move(*run);
    cr.summary = summarize(target.name, workload, cr.run, summary_options(o));
    for (const auto& w : cr.run.warnings) cr.summary.errors.push_back(w);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (o.on_done) o.on_done(target.name, cr.summary, secs);
    out.push_back(std::move(cr));
  }
  return out;
}

}  // namespace

namespace {

// One in-process policy run: its engines, its router and the load options pointing at them.
struct PolicyRun {
  CompareRun cr;          // cr.policy: the row's label
  std::string policy;     // the policy (or --policy-config name) it runs
  int replicas = 1;       // routers in front of the engines
  bool exchange = false;  // the replicas exchange decisions and load
  std::unique_ptr<sim::SimCluster> cluster;
  std::vector<std::unique_ptr<proxy::Proxy>> proxies;
  std::vector<sim::EngineEndpoints> endpoints;
  LoadOptions load;
  std::chrono::steady_clock::time_point t0;
  Result<RunResult> result = fail(Error::unavailable("not run"));
};

// Starts the engines and the router of one policy; on failure, `cr.error` says why and nothing
// runs.
void start_policy(PolicyRun& pr, const CompareOptions& o) {
  const std::string& policy = pr.policy;
  if (o.on_start) o.on_start(pr.cr.policy);
  pr.t0 = std::chrono::steady_clock::now();

  // A policy defined by a config file: read before any engine starts.
  std::optional<config::Config> scheduler;
  if (auto pc = std::find_if(o.policy_configs.begin(), o.policy_configs.end(),
                             [&](const auto& nc) { return nc.first == policy; });
      pc != o.policy_configs.end()) {
    auto file = config::load_file(pc->second);
    if (file && file->plugins.empty() && !file->flow_control.enabled) {
      file =
          fail(Error::invalid(pc->second + ": no plugins (a scheduler config needs plugins and "
                                           "schedulingProfiles; or flowControl, on its `policy`)"));
    }
    if (!file) {
      pr.cr.error = file.error().message;
      return;
    }
    scheduler = std::move(*file);
  }

  sim::SimOptions so = o.sim;
  so.host = "127.0.0.1";
  so.port = 0;
  so.kv_events_port = 0;
  so.kv_replay_port = 0;
  so.kv_events_ephemeral = o.kv_events;
  pr.cluster = std::make_unique<sim::SimCluster>(so);
  if (auto st = pr.cluster->start(); !st) {
    pr.cr.error = "simulated engines: " + st.error().message;
    pr.cluster.reset();
    return;
  }
  pr.endpoints = pr.cluster->endpoints();

  config::Config cfg;
  cfg.address = "127.0.0.1";
  cfg.port = 0;
  cfg.threads = o.proxy_threads;
  cfg.policy = policy;
  if (scheduler) {
    // The file's scheduler (or, without plugins, its preset `policy`) and its flow control, with
    // the metrics scrape interval its saturation detector was tuned for.
    if (scheduler->plugins.empty()) {
      cfg.policy = scheduler->policy;
    } else {
      cfg.plugins = std::move(scheduler->plugins);
      cfg.profiles = std::move(scheduler->profiles);
    }
    cfg.flow_control = scheduler->flow_control;
    cfg.metrics_scrape_interval = scheduler->metrics_scrape_interval;
  }
  cfg.debug_headers = true;
  cfg.log_level = o.proxy_log_level;
  cfg.tokenizer = so.tokenizer.empty() ? "word" : so.tokenizer;
  cfg.block_size = so.engine.block_size;
  pr.load = o.load;
  pr.load.backend_metrics.clear();
  for (std::size_t i = 0; i < pr.endpoints.size(); ++i) {
    const auto& ep = pr.endpoints[i];
    config::BackendConfig b;
    b.url = ep.url;
    b.name = fmt::format("engine-{}", i);
    b.models = {so.model};
    b.kv_events_endpoint = ep.kv_events;
    b.kv_events_replay = ep.kv_replay;
    b.num_gpu_blocks = so.engine.num_gpu_blocks;
    cfg.backends.push_back(std::move(b));
    pr.load.backend_metrics.push_back(ep.url);
  }
  if (pr.exchange) {
    cfg.replicas.listen = "tcp://127.0.0.1:*";
    cfg.replicas.warmup_timeout = std::chrono::milliseconds(0);  // they start together
    // The engines run time_scale times faster than real time: the load heartbeat keeps pace.
    cfg.replicas.load_interval = std::chrono::milliseconds(std::max<long>(
        2, static_cast<long>(static_cast<double>(cfg.replicas.load_interval.count()) /
                             std::max(1.0, so.time_scale))));
  }
  const auto fail_router = [&](const std::string& why) {
    pr.cr.error = "router: " + why;
    for (auto& p : pr.proxies) p->stop(std::chrono::milliseconds(0));
    pr.proxies.clear();
    pr.cluster->stop();
    pr.cluster.reset();
  };
  pr.load.replica_urls.clear();
  for (int i = 0; i < pr.replicas; ++i) {
    auto& px = pr.proxies.emplace_back(std::make_unique<proxy::Proxy>(cfg));
    auto port = px->start();
    if (!port) return fail_router(port.error().message);
    pr.load.replica_urls.push_back(fmt::format("http://127.0.0.1:{}", *port));
  }
  pr.load.url = pr.load.replica_urls.front();
  if (pr.replicas == 1) pr.load.replica_urls.clear();
  pr.load.spread_random = o.spread_random;
  if (pr.exchange && pr.replicas > 1) {
    // Every replica hears every other before the load starts (bounded: 10 s).
    for (auto& a : pr.proxies)
      for (auto& b : pr.proxies)
        if (a != b) a->router()->add_replica_peer(b->router()->replicas_endpoint());
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    const auto all_heard = [&] {
      return std::all_of(pr.proxies.begin(), pr.proxies.end(), [&](const auto& p) {
        return p->router()->replica_peers() == static_cast<std::size_t>(pr.replicas - 1);
      });
    };
    while (!all_heard() && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (!all_heard()) return fail_router("replicas did not hear each other within 10 s");
  }
  if (pr.load.model.empty()) pr.load.model = so.model;
  if (pr.load.progress_label.empty()) pr.load.progress_label = fmt::format("{:<20} ", pr.cr.policy);
}

// Stops the policy's router and engines and summarizes its run.
Status finish_policy(PolicyRun& pr, const Workload& workload, const CompareOptions& o) {
  for (auto& p : pr.proxies) p->stop(std::chrono::milliseconds(1000));
  pr.cluster->stop();
  pr.proxies.clear();  // a long sequential comparison keeps no stopped engines or routers around
  pr.cluster.reset();
  if (!pr.result) return fail(pr.result.error());
  pr.cr.run = std::move(*pr.result);
  pr.cr.summary = summarize(pr.cr.policy, workload, pr.cr.run, summary_options(o));
  // Name engines as the router does.
  for (std::size_t i = 0; i < pr.cr.summary.backends.size() && i < pr.endpoints.size(); ++i) {
    if (pr.cr.summary.backends[i].name == pr.endpoints[i].url)
      pr.cr.summary.backends[i].name = fmt::format("engine-{}", i);
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - pr.t0).count();
  if (o.on_done) o.on_done(pr.cr.policy, pr.cr.summary, secs);
  return {};
}

}  // namespace

Result<std::vector<CompareRun>> run_compare_once(const Workload& workload,
                                                 const CompareOptions& o) {
  if (!o.targets.empty() && o.replicas > 1)
    return fail(Error::invalid("--replicas runs in-process routers: not with --target"));
  if (!o.targets.empty()) return run_targets(workload, o);
  std::vector<std::string> policies = o.policies.empty() ? routing::policy_names() : o.policies;
  if (o.sim.engines < 1) return fail(Error::invalid("--engines must be at least 1"));
  if (!o.proxy_log_level.empty())
    set_log_level(o.proxy_log_level);  // the in-process router logs per request
  if (o.replicas < 1) return fail(Error::invalid("--replicas must be at least 1"));
  if (o.exchange != "on" && o.exchange != "off" && o.exchange != "both")
    return fail(Error::invalid("--replica-exchange must be on, off or both"));
  std::vector<PolicyRun> runs;
  for (const auto& p : policies) {
    for (const bool ex : {true, false}) {
      if (o.replicas > 1 && (ex ? o.exchange == "off" : o.exchange == "on")) continue;
      if (o.replicas == 1 && !ex) continue;
      PolicyRun& pr = runs.emplace_back();
      pr.policy = p;
      pr.replicas = o.replicas;
      pr.exchange = ex && o.replicas > 1;
      pr.cr.policy =
          o.replicas == 1 ? p : fmt::format("{} x{}{}", p, o.replicas, ex ? "" : " uncoord");
    }
  }
  if (o.simultaneous) {
    // Every policy's engines and router first, then all loads at once: a stall of the machine
    // then hits every policy alike. The progress bars would interleave: none.
    for (auto& pr : runs) start_policy(pr, o);
    std::vector<std::thread> threads;
    for (auto& pr : runs) {
      if (!pr.cr.error.empty()) continue;
      pr.load.progress = false;
      threads.emplace_back([&pr, &workload] { pr.result = run_load(workload, pr.load); });
    }
    for (auto& t : threads) t.join();
    std::optional<Error> first_error;
    for (auto& pr : runs) {
      if (!pr.cr.error.empty()) continue;
      if (auto st = finish_policy(pr, workload, o); !st && !first_error) first_error = st.error();
    }
    if (first_error) return fail(*first_error);
  } else {
    for (auto& pr : runs) {
      start_policy(pr, o);
      if (!pr.cr.error.empty()) continue;
      pr.result = run_load(workload, pr.load);
      if (auto st = finish_policy(pr, workload, o); !st) return fail(st.error());
    }
  }
  std::vector<CompareRun> out;
  for (auto& pr : runs) out.push_back(std::move(pr.cr));
  return out;
}

Result<std::vector<CompareRun>> run_compare(const Workload& workload, const CompareOptions& o) {
  if (o.repeat < 1) return fail(Error::invalid("--repeat must be at least 1"));
  if (o.repeat == 1) return run_compare_once(workload, o);
  std::vector<std::vector<CompareRun>> reps;
  for (int i = 0; i < o.repeat; ++i) {
    KVROUTE_TRY(auto runs, run_compare_once(workload, o));
    reps.push_back(std::move(runs));
  }
  std::vector<CompareRun> out;
  for (std::size_t p = 0; p < reps[0].size(); ++p) {
    CompareRun cr;
    cr.policy = reps[0][p].policy;
    std::vector<RunResult> runs;
    for (auto& rep : reps) {
      if (p >= rep.size()) continue;
      if (!rep[p].error.empty()) {
        cr.error = rep[p].error;
        break;
      }
      runs.push_back(std::move(rep[p].run));
    }
    if (cr.error.empty()) {
      cr.summary = summarize_pooled(cr.policy, workload, runs, summary_options(o));
      // Engines as the first run named them (engine-N in process).
      const auto& first = reps[0][p].summary.backends;
      for (std::size_t i = 0; i < cr.summary.backends.size() && i < first.size(); ++i) {
        cr.summary.backends[i].name = first[i].name;
      }
      cr.run = pool_runs(runs);
    }
    out.push_back(std::move(cr));
  }
  return out;
}

Result<double> measure_capacity(const Workload& workload, const CompareOptions& options,
                                int concurrency, bool steady) {
  if (concurrency < 1) return fail(Error::invalid("saturation concurrency must be at least 1"));
  CompareOptions cal = options;
  cal.on_start = nullptr;
  cal.on_done = nullptr;
  cal.repeat = 1;
  cal.replicas = 1;  // the engines' capacity, whatever the routers in front
  if (cal.targets.empty()) {
    cal.policies = {"round-robin"};
  } else {
    cal.targets.resize(1);
  }
  cal.load.rate = 0;
  cal.load.concurrency = concurrency;
  cal.load.progress_label = "capacity            ";
  KVROUTE_TRY(auto runs, run_compare(workload, cal));
  if (runs.empty() || !runs[0].error.empty())
    return fail(Error::unavailable("capacity run: " +
                                   (runs.empty() ? std::string("no run") : runs[0].error)));
  const Summary& s = runs[0].summary;
  if (s.completed == 0 || s.request_throughput <= 0)
    return fail(Error::unavailable("capacity run completed nothing"));
  if (!steady) return s.request_throughput;
  // Throughput while every user had work: completions between a fifth of the way to the last send
  // (warm-up) and the last send. After that the loop drains and the few longest requests (a long
  // tail of output lengths) would stretch the wall clock and understate the engines' capacity.
  double last_send = 0;
  for (const auto& r : runs[0].run.records) last_send = std::max(last_send, r.start_s);
  const double from = last_send / 5;
  std::size_t done = 0;
  for (const auto& r : runs[0].run.records) {
    const double end = r.start_s + r.e2e_s;
    if (r.outcome == Outcome::kOk && r.e2e_s >= 0 && end >= from && end <= last_send) ++done;
  }
  if (last_send - from >= 1.0 && done >= 50) return static_cast<double>(done) / (last_send - from);
  return s.request_throughput;
}

double session_rate_for(const Workload& workload, double capacity_rps, double fraction) {
  const double sessions = static_cast<double>(std::max<std::size_t>(1, workload.sessions.size()));
  const double per_session = static_cast<double>(workload.num_requests()) / sessions;
  return capacity_rps * fraction / std::max(1.0, per_session);
}

}  // namespace kvroute::bench
