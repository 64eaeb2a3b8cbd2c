#include "bench/internal/report.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <numeric>
#include <set>

#include "common/hash.h"
#include "http/message.h"

extern char** environ;

namespace kvroute::bench {

namespace {

std::string jstr(std::string_view s) {
  std::string out = "\"";
  http::append_json_escaped(out, s);
  out += '"';
  return out;
}

std::string jnum(double v) {
  if (!std::isfinite(v)) return "null";
  // Counters (token and request counts) exactly, not as 1.44794e+08.
  if (v == std::floor(v) && std::fabs(v) < 9.0e15) return fmt::format("{:.0f}", v);
  return fmt::format("{:.6g}", v);
}

std::string pct_json(const Percentiles& p) {
  return fmt::format(R"({{"n":{},"mean":{},"p50":{},"p90":{},"p99":{}}})", p.n, jnum(p.mean),
                     jnum(p.p50), jnum(p.p90), jnum(p.p99));
}

std::string fmt_latency(double s, std::size_t n) {
  if (n == 0) return "-";
  if (s >= 1.0) return fmt::format("{:.2f} s", s);
  const double ms = s * 1000.0;
  if (ms >= 10.0) return fmt::format("{:.0f} ms", ms);
  return fmt::format("{:.1f} ms", ms);
}

// achieved / reference; 0 without a reference (no oracle), 1 when the reference is 0.
double fraction_of(double achieved, double reference, std::uint32_t have) {
  if (have == 0) return 0;
  return reference > 0 ? achieved / reference : (achieved > 0 ? 0 : 1);
}

std::string fmt_pct(double v) { return fmt::format("{:.1f}%", v * 100.0); }

std::string sanitize(std::string_view s) {
  std::string out;
  for (char c : s)
    out += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') ? c : '_';
  return out.empty() ? "run" : out;
}

std::string gp_quote(std::string_view s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'')
      out += "''";
    else
      out += c;
  }
  return out + "'";
}

}  // namespace

Percentiles percentiles_of(std::vector<double> v) {
  Percentiles p;
  p.n = v.size();
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  p.p50 = percentile_sorted(v, 50);
  p.p90 = percentile_sorted(v, 90);
  p.p99 = percentile_sorted(v, 99);
  p.mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  return p;
}

Summary summarize(const std::string& label, const Workload& wl, const RunResult& run,
                  const SummaryOptions& opts) {
  Summary s;
  s.label = label;
  s.workload = wl.name;
  s.sent = run.records.size();
  s.wall_s = run.wall_s;
  std::vector<double> ttft, e2e, itl;
  std::uint64_t out_tokens = 0;
  std::map<std::string, std::uint64_t> by_header;
  std::set<std::string> errs;
  for (const auto& r : run.records) {
    if (r.outcome == Outcome::kCancelled) {
      ++s.cancelled;
      continue;
    }
    if (r.outcome != Outcome::kOk) {
      ++s.failed;
      if (errs.size() < 5) errs.insert(r.error);
      continue;
    }
    ++s.completed;
    if (r.ttft_s >= 0) ttft.push_back(r.ttft_s);
    e2e.push_back(r.e2e_s);
    for (float x : r.itl_s) itl.push_back(x);
    out_tokens += r.output_tokens;
    if (r.usage) {
      s.usage_prompt_tokens += r.prompt_tokens;
      s.usage_cached_tokens += r.cached_tokens;
    }
    if (!r.backend.empty()) ++by_header[r.backend];
  }
  s.errors.assign(errs.begin(), errs.end());
  s.ttft = percentiles_of(std::move(ttft));
  s.e2e = percentiles_of(std::move(e2e));
  s.itl = percentiles_of(std::move(itl));
  if (s.wall_s > 0) {
    s.request_throughput = static_cast<double>(s.completed) / s.wall_s;
    s.output_throughput = static_cast<double>(out_tokens) / s.wall_s;
  }
  s.usage_hit_rate = s.usage_prompt_tokens == 0 ? 0
                                                : static_cast<double>(s.usage_cached_tokens) /
                                                      static_cast<double>(s.usage_prompt_tokens);

  // Engines' counters.
  double engine_requests = 0, engine_blocks = 0, engine_block_size = 0, engine_block_tokens = 0;
  s.engine_counters = !run.engines.empty();
  for (const auto& e : run.engines) {
    if (!e.ok) s.engine_counters = false;
    s.engine_queries += e.queries;
    s.engine_hits += e.hits;
    engine_requests += e.requests;
    engine_blocks += e.num_gpu_blocks;
    engine_block_tokens += e.num_gpu_blocks * (e.block_size > 0 ? e.block_size : 16);
    if (e.block_size > 0) engine_block_size = e.block_size;
  }
  if (s.engine_counters && s.engine_queries > 0)
    s.engine_hit_rate = s.engine_hits / s.engine_queries;
  s.hit_rate = s.engine_counters ? s.engine_hit_rate : s.usage_hit_rate;
  // The engines count a lookup each time the scheduler tries a request: one that waits for memory
  // (a backlog) is looked up again, so their counters can differ from what the responses report.
  if (s.engine_counters && s.usage_prompt_tokens > 0 && s.engine_queries > 0 &&
      (std::fabs(s.engine_hit_rate - s.usage_hit_rate) > 0.02 ||
       s.engine_queries > 1.02 * static_cast<double>(s.usage_prompt_tokens))) {
    s.warnings.push_back(fmt::format(
        "the engines' prefix-cache counters ({} of {:.0f} queried tokens) and the responses' "
        "cached_tokens ({} of {} prompt tokens) disagree: engines looked requests up more than "
        "once (retried under a backlog) or counted requests the load generator did not finish; "
        "hit rate uses the engines' counters",
        fmt_pct(s.engine_hit_rate), s.engine_queries, fmt_pct(s.usage_hit_rate),
        s.usage_prompt_tokens));
  }

  // Bounds over the completed requests, in the order they were sent. The pooled capacity is the
  // engines' KV memory in tokens, counted in blocks of the bounds' block size (which may differ
  // from the engines', e.g. a Mooncake trace's 512-token hash blocks).
  const std::uint32_t bs = opts.block_size > 0     ? opts.block_size
                           : engine_block_size > 0 ? static_cast<std::uint32_t>(engine_block_size)
                                                   : 16;
  const std::uint64_t cap = opts.capacity_blocks > 0
                                ? opts.capacity_blocks
                                : static_cast<std::uint64_t>(engine_block_tokens / bs);
  (void)engine_blocks;
  const auto engines =
      static_cast<std::uint32_t>(opts.engines > 0 ? opts.engines : run.engines.size());
  BoundsCalculator bc(bs, cap, engines, opts.oracle_load_cap);
  // The per-engine replay of where the hits went (HitLoss), when the records name engines.
  std::map<std::string, int> engine_of;
  for (const auto& r : run.records) {
    if (r.outcome == Outcome::kOk && !r.backend.empty()) engine_of.emplace(r.backend, 0);
  }
  int next_engine = 0;
  for (auto& [name, idx] : engine_of) idx = next_engine++;
  HitLoss& loss = s.loss;
  loss.known = !engine_of.empty();
  std::vector<LruBlocks> shadow;
  if (loss.known) {
    const std::uint64_t per = cap == 0 ? 0 : std::max<std::uint64_t>(1, cap / engine_of.size());
    shadow.assign(engine_of.size(), LruBlocks(per));
    loss.best_tokens.assign(run.records.size(), 0);
    loss.chosen_tokens.assign(run.records.size(), 0);
    loss.best_engine.assign(run.records.size(), -1);
  }
  for (std::size_t i = 0; i < run.records.size(); ++i) {
    const auto& r = run.records[i];
    if (r.outcome != Outcome::kOk) continue;
    const auto tokens = predicted_tokens(wl.sessions[r.session].turns[r.turn], opts.vocab_size);
    const auto hashes = chained_block_hashes(tokens, bs, 0);
    bc.add(hashes, tokens.size(), r.output_tokens);
    if (!loss.known || r.backend.empty()) continue;
    const std::size_t max_blocks = max_hit_blocks(hashes.size(), tokens.size(), bs);
    std::size_t best = 0;
    for (std::size_t e = 0; e < shadow.size(); ++e) {
      const std::size_t h = shadow[e].prefix_hits(hashes, max_blocks);
      if (h > best) {
        best = h;
        loss.best_engine[i] = static_cast<int>(e);
      }
    }
    const auto chosen = static_cast<std::size_t>(engine_of[r.backend]);
    const std::size_t mine = shadow[chosen].prefix_hits(hashes, max_blocks);
    loss.best_tokens[i] = static_cast<std::uint32_t>(best * bs);
    loss.chosen_tokens[i] = static_cast<std::uint32_t>(mine * bs);
    loss.shadow_hit_tokens += mine * bs;
    if (mine < best) {
      loss.spill_tokens += (best - mine) * bs;
      ++loss.spilled_requests;
    }
    if (r.predicted_tokens >= 0 && r.usage) {
      const auto predicted = static_cast<std::uint64_t>(r.predicted_tokens);
      if (predicted > r.cached_tokens) loss.overpredicted_tokens += predicted - r.cached_tokens;
      if (predicted < r.cached_tokens) loss.underpredicted_tokens += r.cached_tokens - predicted;
    }
    shadow[chosen].admit(hashes, output_blocks(tokens.size(), r.output_tokens, bs));
  }
  s.bounds = bc.result();
  const double bound = s.bounds.lru_hit_rate();
  s.fraction_of_bound = bound > 0 ? s.hit_rate / bound : (s.hit_rate > 0 ? 0 : 1);
  s.fraction_of_oracle = fraction_of(s.hit_rate, s.bounds.oracle_hit_rate(), s.bounds.engines);

  // Load per backend.
  if (s.engine_counters && engine_requests > 0) {
    for (const auto& e : run.engines)
      s.backends.push_back({e.url, static_cast<std::uint64_t>(e.requests + 0.5)});
  } else {
    for (const auto& [name, n] : by_header) s.backends.push_back({name, n});
  }
  if (!s.backends.empty()) {
    std::uint64_t mx = 0, sum = 0;
    for (const auto& b : s.backends) {
      mx = std::max(mx, b.requests);
      sum += b.requests;
    }
    const double mean = static_cast<double>(sum) / static_cast<double>(s.backends.size());
    s.imbalance = mean > 0 ? static_cast<double>(mx) / mean : 0;
  }
  s.classes = class_summaries(run);
  return s;
}

RunResult pool_runs(std::span<const RunResult> runs) {
  RunResult out;
  double offset = 0;
  for (const auto& r : runs) {
    if (out.model.empty()) out.model = r.model;
    for (const auto& rec : r.records) {
      out.records.push_back(rec);
      out.records.back().start_s += offset;
    }
    if (out.engines.empty()) {
      out.engines = r.engines;
    } else {
      for (std::size_t i = 0; i < out.engines.size(); ++i) {
        if (i >= r.engines.size()) {
          out.engines[i].ok = false;
          continue;
        }
        auto& e = out.engines[i];
        const auto& x = r.engines[i];
        e.ok = e.ok && x.ok;
        if (e.error.empty()) e.error = x.error;
        e.queries += x.queries;
        e.hits += x.hits;
        e.requests += x.requests;
      }
    }
    offset += r.wall_s;
    out.wall_s += r.wall_s;
    out.hit_deadline = out.hit_deadline || r.hit_deadline;
    for (const auto& w : r.warnings) out.warnings.push_back(w);
  }
  return out;
}

Summary summarize_pooled(const std::string& label, const Workload& wl,
                         std::span<const RunResult> runs, const SummaryOptions& opts) {
  if (runs.size() == 1) return summarize(label, wl, runs[0], opts);
  Summary s = summarize(label, wl, pool_runs(runs), opts);
  BoundsResult b;
  HitLoss loss;
  std::vector<Percentiles> ttft, e2e;
  for (const auto& r : runs) {
    const Summary single = summarize(label, wl, r, opts);
    ttft.push_back(single.ttft);
    e2e.push_back(single.e2e);
    const BoundsResult& one = single.bounds;
    b.requests += one.requests;
    b.query_tokens += one.query_tokens;
    b.infinite_hit_tokens += one.infinite_hit_tokens;
    b.lru_hit_tokens += one.lru_hit_tokens;
    b.lru_output_hit_tokens += one.lru_output_hit_tokens;
    b.oracle_hit_tokens += one.oracle_hit_tokens;
    b.capacity_blocks = one.capacity_blocks;
    b.block_size = one.block_size;
    b.engines = one.engines;
    b.load_cap = one.load_cap;
    b.oracle_imbalance = std::max(b.oracle_imbalance, one.oracle_imbalance);
    // Each run replays from cold caches.
    HitLoss& l = loss;
    l.known = l.known || single.loss.known;
    l.spill_tokens += single.loss.spill_tokens;
    l.spilled_requests += single.loss.spilled_requests;
    l.overpredicted_tokens += single.loss.overpredicted_tokens;
    l.underpredicted_tokens += single.loss.underpredicted_tokens;
    l.shadow_hit_tokens += single.loss.shadow_hit_tokens;
    const std::size_t n = r.records.size();
    auto append = [n](auto& to, const auto& from, auto none) {
      if (from.size() == n) {
        to.insert(to.end(), from.begin(), from.end());
      } else {
        to.insert(to.end(), n, none);
      }
    };
    append(l.best_tokens, single.loss.best_tokens, std::uint32_t{0});
    append(l.chosen_tokens, single.loss.chosen_tokens, std::uint32_t{0});
    append(l.best_engine, single.loss.best_engine, -1);
  }
  s.bounds = b;
  s.loss = std::move(loss);
  // Latency percentiles: the median over the runs of each run's percentile, so that one run hit by
  // the machine's noise (a shared VM stalls for tens of ms at times) does not set the tail.
  auto median_of = [](const std::vector<Percentiles>& v, double Percentiles::*field) {
    std::vector<double> x;
    for (const auto& p : v) x.push_back(p.*field);
    std::sort(x.begin(), x.end());
    const std::size_t n = x.size();
    return n % 2 ? x[n / 2] : (x[n / 2 - 1] + x[n / 2]) / 2;
  };
  for (auto field : {&Percentiles::p50, &Percentiles::p90, &Percentiles::p99}) {
    s.ttft.*field = median_of(ttft, field);
    s.e2e.*field = median_of(e2e, field);
  }
  const double bound = b.lru_hit_rate();
  s.fraction_of_bound = bound > 0 ? s.hit_rate / bound : (s.hit_rate > 0 ? 0 : 1);
  s.fraction_of_oracle = fraction_of(s.hit_rate, s.bounds.oracle_hit_rate(), s.bounds.engines);
  s.repeats = static_cast<int>(runs.size());
  return s;
}

std::vector<ClassSummary> class_summaries(const RunResult& run) {
  std::vector<ClassSummary> out;
  std::vector<std::vector<double>> ttft, queue;
  for (const auto& r : run.records) {
    if (r.cls.empty()) continue;
    auto it = std::find_if(out.begin(), out.end(),
                           [&](const ClassSummary& c) { return c.name == r.cls; });
    if (it == out.end()) {
      out.push_back({});
      out.back().name = r.cls;
      ttft.emplace_back();
      queue.emplace_back();
      it = out.end() - 1;
    }
    const auto k = static_cast<std::size_t>(it - out.begin());
    ClassSummary& c = *it;
    ++c.sent;
    if (r.outcome == Outcome::kOk) {
      ++c.completed;
      if (r.ttft_s >= 0) ttft[k].push_back(r.ttft_s);
      if (r.queue_ms >= 0) queue[k].push_back(r.queue_ms);
    } else if (r.outcome == Outcome::kCancelled) {
      ++c.cancelled;
    } else if (r.outcome == Outcome::kHttpError && r.status == 429) {
      ++c.rejected_429;
    } else if (r.outcome == Outcome::kHttpError && r.status == 503) {
      ++c.rejected_503;
    } else {
      ++c.failed_other;
    }
  }
  for (std::size_t k = 0; k < out.size(); ++k) {
    out[k].ttft = percentiles_of(std::move(ttft[k]));
    out[k].queue_ms = percentiles_of(std::move(queue[k]));
    out[k].goodput = run.wall_s > 0 ? static_cast<double>(out[k].completed) / run.wall_s : 0;
  }
  return out;
}

std::string class_lines(const std::string& label, const std::vector<ClassSummary>& classes) {
  std::string out;
  for (const auto& c : classes) {
    out += fmt::format(
        "class {}/{}: {} sent, {} ok ({:.2f}/s), {} x 429, {} x 503, {} failed, {} cancelled; "
        "TTFT p50 {:.1f} ms, p99 {:.1f} ms; router queue p50 {:.0f} ms, p99 {:.0f} ms\n",
        label, c.name, c.sent, c.completed, c.goodput, c.rejected_429, c.rejected_503,
        c.failed_other, c.cancelled, c.ttft.p50 * 1000, c.ttft.p99 * 1000, c.queue_ms.p50,
        c.queue_ms.p99);
  }
  return out;
}

std::string summary_json(const Summary& s) {
  std::string b = "{";
  b += fmt::format(
      R"("label":{},"workload":{},"sent":{},"completed":{},"failed":{},"cancelled":{},)",
      jstr(s.label), jstr(s.workload), s.sent, s.completed, s.failed, s.cancelled);
  b += fmt::format(R"("wall_s":{},"request_throughput":{},"output_throughput":{},)", jnum(s.wall_s),
                   jnum(s.request_throughput), jnum(s.output_throughput));
  b += fmt::format(R"("ttft_s":{},"e2e_s":{},"itl_s":{},)", pct_json(s.ttft), pct_json(s.e2e),
                   pct_json(s.itl));
  b += fmt::format(
      R"("hit_rate":{},"usage_hit_rate":{},"usage_prompt_tokens":{},"usage_cached_tokens":{},)",
      jnum(s.hit_rate), jnum(s.usage_hit_rate), s.usage_prompt_tokens, s.usage_cached_tokens);
  b += fmt::format(
      R"("engine_counters":{},"engine_hit_rate":{},"engine_queries":{},"engine_hits":{},)",
      s.engine_counters ? "true" : "false", jnum(s.engine_hit_rate), jnum(s.engine_queries),
      jnum(s.engine_hits));
  b += fmt::format(
      R"("bounds":{{"requests":{},"query_tokens":{},"block_size":{},"capacity_blocks":{},"infinite_hit_rate":{},"pooled_lru_hit_rate":{},"pooled_lru_outputs_hit_rate":{},"oracle":{{"engines":{},"load_cap":{},"hit_rate":{},"imbalance":{}}}}},)",
      s.bounds.requests, s.bounds.query_tokens, s.bounds.block_size, s.bounds.capacity_blocks,
      jnum(s.bounds.infinite_hit_rate()), jnum(s.bounds.lru_hit_rate()),
      jnum(s.bounds.lru_output_hit_rate()), s.bounds.engines, jnum(s.bounds.load_cap),
      jnum(s.bounds.oracle_hit_rate()), jnum(s.bounds.oracle_imbalance));
  b += fmt::format(R"("fraction_of_oracle":{},)", jnum(s.fraction_of_oracle));
  if (s.loss.known) {
    b += fmt::format(
        R"("hit_loss":{{"replay_hit_tokens":{},"spilled_requests":{},"spill_tokens":{},"overpredicted_tokens":{},"underpredicted_tokens":{}}},)",
        s.loss.shadow_hit_tokens, s.loss.spilled_requests, s.loss.spill_tokens,
        s.loss.overpredicted_tokens, s.loss.underpredicted_tokens);
  }
  b += fmt::format(R"("fraction_of_bound":{},"imbalance":{},"repeats":{},"backends":[)",
                   jnum(s.fraction_of_bound), jnum(s.imbalance), s.repeats);
  for (std::size_t i = 0; i < s.backends.size(); ++i) {
    b += fmt::format(R"({}{{"name":{},"requests":{}}})", i ? "," : "", jstr(s.backends[i].name),
                     s.backends[i].requests);
  }
  b += "],\"errors\":[";
  for (std::size_t i = 0; i < s.errors.size(); ++i) b += (i ? "," : "") + jstr(s.errors[i]);
  b += "],\"warnings\":[";
  for (std::size_t i = 0; i < s.warnings.size(); ++i) b += (i ? "," : "") + jstr(s.warnings[i]);
  b += "],\"classes\":[";
  for (std::size_t i = 0; i < s.classes.size(); ++i) {
    const auto& c = s.classes[i];
    b += fmt::format(
        R"({}{{"name":{},"sent":{},"completed":{},"rejected_429":{},"rejected_503":{},"failed":{},"cancelled":{},"goodput":{},"ttft_s":{},"queue_ms":{}}})",
        i ? "," : "", jstr(c.name), c.sent, c.completed, c.rejected_429, c.rejected_503,
        c.failed_other, c.cancelled, jnum(c.goodput), pct_json(c.ttft), pct_json(c.queue_ms));
  }
  b += "]}";
  return b;
}

std::string summaries_json(const std::vector<Summary>& runs, const std::string& extra_fields) {
  std::string b = "{";
  if (!extra_fields.empty()) b += extra_fields + ",";
  b += "\"runs\":[";
  for (std::size_t i = 0; i < runs.size(); ++i) b += (i ? ",\n" : "\n") + summary_json(runs[i]);
  b += "\n]}\n";
  return b;
}

std::string markdown_header(bool oracle) {
  // "bound" is the pooled LRU (ADR 0201); "+out" the same with outputs taking blocks; "oracle" the
  // load-capped longest-prefix oracle (ADR 0024), shown when the engines are known.
  return oracle ? "| policy | hit rate | bound | of bound | bound +out | oracle | of oracle "
                  "| TTFT p50 | TTFT p99 | e2e p50 | imbalance | req/s | ok/sent |\n"
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
                : "| policy | hit rate | bound | of bound | TTFT p50 | TTFT p99 | e2e p50 "
                  "| imbalance | req/s | ok/sent |\n"
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
}

std::string markdown_row(const Summary& s, bool oracle) {
  std::string t = fmt::format("| {} | {} | {} | {} ", s.label, fmt_pct(s.hit_rate),
                              fmt_pct(s.bounds.lru_hit_rate()), fmt_pct(s.fraction_of_bound));
  if (oracle) {
    t += fmt::format("| {} | {} | {} ", fmt_pct(s.bounds.lru_output_hit_rate()),
                     fmt_pct(s.bounds.oracle_hit_rate()), fmt_pct(s.fraction_of_oracle));
  }
  t += fmt::format("| {} | {} | {} | {} | {:.1f} | {}/{} |\n", fmt_latency(s.ttft.p50, s.ttft.n),
                   fmt_latency(s.ttft.p99, s.ttft.n), fmt_latency(s.e2e.p50, s.e2e.n),
                   s.imbalance > 0 ? fmt::format("{:.2f}", s.imbalance) : std::string("-"),
                   s.request_throughput, s.completed, s.sent);
  return t;
}

bool has_oracle(const std::vector<Summary>& runs) {
  for (const auto& s : runs) {
    if (s.bounds.engines > 0) return true;
  }
  return false;
}

std::string markdown_table(const std::vector<Summary>& runs) {
  const bool oracle = has_oracle(runs);
  std::string t = markdown_header(oracle);
  for (const auto& s : runs) t += markdown_row(s, oracle);
  return t;
}

std::string hit_loss_line(const Summary& s) {
  if (!s.loss.known || s.usage_prompt_tokens == 0) return {};
  const double q = static_cast<double>(s.usage_prompt_tokens);
  return fmt::format(
      "where the hits went ({}): a per-engine LRU replay of its routing holds {}; {} requests "
      "went past an engine with a longer prefix ({} of prompt tokens); the router predicted {} "
      "more than the engines reported and {} less",
      s.label, fmt_pct(static_cast<double>(s.loss.shadow_hit_tokens) / q), s.loss.spilled_requests,
      fmt_pct(static_cast<double>(s.loss.spill_tokens) / q),
      fmt_pct(static_cast<double>(s.loss.overpredicted_tokens) / q),
      fmt_pct(static_cast<double>(s.loss.underpredicted_tokens) / q));
}

std::string text_report(const Summary& s) {
  std::string t;
  t += fmt::format("workload {}: {} sent, {} completed, {} failed, {} cancelled in {:.2f} s\n",
                   s.workload, s.sent, s.completed, s.failed, s.cancelled, s.wall_s);
  t += fmt::format("throughput: {:.2f} req/s, {:.1f} output tok/s\n", s.request_throughput,
                   s.output_throughput);
  t += fmt::format("TTFT  p50 {}  p90 {}  p99 {}\n", fmt_latency(s.ttft.p50, s.ttft.n),
                   fmt_latency(s.ttft.p90, s.ttft.n), fmt_latency(s.ttft.p99, s.ttft.n));
  t += fmt::format("ITL   p50 {}  p90 {}  p99 {}\n", fmt_latency(s.itl.p50, s.itl.n),
                   fmt_latency(s.itl.p90, s.itl.n), fmt_latency(s.itl.p99, s.itl.n));
  t += fmt::format("e2e   p50 {}  p90 {}  p99 {}\n", fmt_latency(s.e2e.p50, s.e2e.n),
                   fmt_latency(s.e2e.p90, s.e2e.n), fmt_latency(s.e2e.p99, s.e2e.n));
  if (s.engine_counters) {
    t += fmt::format("prefix-cache hit rate (engines' counters): {} ({:.0f}/{:.0f} tokens)\n",
                     fmt_pct(s.engine_hit_rate), s.engine_hits, s.engine_queries);
  }
  t += fmt::format("prefix-cache hit rate (usage cached_tokens): {} ({}/{} tokens)\n",
                   fmt_pct(s.usage_hit_rate), s.usage_cached_tokens, s.usage_prompt_tokens);
  t += fmt::format(
      "bounds: infinite cache {}, pooled LRU of {} blocks {}; achieved {} of the bound\n",
      fmt_pct(s.bounds.infinite_hit_rate()),
      s.bounds.capacity_blocks ? fmt::format("{}", s.bounds.capacity_blocks)
                               : std::string("unbounded"),
      fmt_pct(s.bounds.lru_hit_rate()), fmt_pct(s.fraction_of_bound));
  if (s.bounds.engines > 0) {
    t += fmt::format(
        "        pooled LRU with outputs taking blocks {}; longest-prefix oracle over {} engines "
        "capped at {:.2f}x mean load {} (its imbalance {:.2f}); achieved {} of the oracle\n",
        fmt_pct(s.bounds.lru_output_hit_rate()), s.bounds.engines, s.bounds.load_cap,
        fmt_pct(s.bounds.oracle_hit_rate()), s.bounds.oracle_imbalance,
        fmt_pct(s.fraction_of_oracle));
  }
  if (!s.backends.empty()) {
    t += fmt::format("load imbalance (max/mean requests per backend): {:.2f} —", s.imbalance);
    for (const auto& b : s.backends) t += fmt::format(" {}={}", b.name, b.requests);
    t += "\n";
  }
  if (s.loss.known) t += hit_loss_line(s) + "\n";
  for (const auto& e : s.errors) t += "error: " + e + "\n";
  for (const auto& w : s.warnings) t += "warning: " + w + "\n";
  return t;
}

std::vector<std::string> check_thresholds(const Summary& s, const CheckOptions& c) {
  std::vector<std::string> f;
  if (s.completed == 0) f.push_back("no request completed");
  if (c.min_hit_rate && !(s.hit_rate >= *c.min_hit_rate)) {
    f.push_back(
        fmt::format("hit rate {:.3f} is below --min-hit-rate {:.3f}", s.hit_rate, *c.min_hit_rate));
  }
  if (c.max_ttft_p99_s && (s.ttft.n == 0 || !(s.ttft.p99 <= *c.max_ttft_p99_s))) {
    f.push_back(s.ttft.n == 0 ? std::string("TTFT p99 unknown (no request produced a token)")
                              : fmt::format("TTFT p99 {:.3f} s is above --max-ttft-p99 {:.3f} s",
                                            s.ttft.p99, *c.max_ttft_p99_s));
  }
  if (c.max_imbalance) {
    if (s.backends.empty()) {
      f.push_back("load imbalance unknown: no x-kvroute-backend headers and no --backend-metrics");
    } else if (!(s.imbalance <= *c.max_imbalance)) {
      f.push_back(fmt::format("load imbalance {:.2f} is above --max-imbalance {:.2f}", s.imbalance,
                              *c.max_imbalance));
    }
  }
  if (c.max_error_rate && s.sent > 0) {
    const double er = static_cast<double>(s.failed) / static_cast<double>(s.sent);
    if (er > *c.max_error_rate) {
      f.push_back(
          fmt::format("error rate {:.3f} is above --max-error-rate {:.3f}", er, *c.max_error_rate));
    }
  }
  return f;
}

int run_gnuplot(const std::string& script_path, const std::string& log_path) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::string prog = "gnuplot";
  std::string arg = script_path;
  char* argv[] = {prog.data(), arg.data(), nullptr};
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, "gnuplot", &fa, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return -1;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

Result<std::vector<std::string>> write_plots(const std::string& dir,
                                             const std::vector<PlotInput>& runs) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return fail(Error::io("cannot create " + dir + ": " + ec.message()));
  auto write = [&](const std::string& name, const std::string& text) -> Status {
    std::ofstream f(fs::path(dir) / name, std::ios::binary | std::ios::trunc);
    if (!f) return fail(Error::io("cannot write " + (fs::path(dir) / name).string()));
    f << text;
    return {};
  };
  std::vector<std::string> pngs;
  // Hit rate bars.
  std::string hit = "# label achieved pooled_lru infinite oracle\n";
  for (const auto& r : runs) {
    hit += fmt::format("\"{}\" {:.6f} {:.6f} {:.6f} {:.6f}\n", sanitize(r.summary.label),
                       r.summary.hit_rate, r.summary.bounds.lru_hit_rate(),
                       r.summary.bounds.infinite_hit_rate(), r.summary.bounds.oracle_hit_rate());
  }
  if (auto st = write("hit_rate.dat", hit); !st) return fail(st.error());
  std::string body;
  body +=
      "set output 'hit_rate.png'\nset title 'Prefix-cache hit rate per policy'\n"
      "set style data histograms\nset style histogram clustered gap 1\nset style fill solid 0.8 "
      "border -1\n"
      "set yrange [0:1.05]\nset ylabel 'hit rate (tokens)'\nset key top left\nset grid ytics\n"
      "plot 'hit_rate.dat' using 2:xtic(1) title 'achieved', '' using 3 title 'pooled-LRU bound', "
      "'' using 4 title 'infinite-cache bound', '' using 5 title 'load-capped prefix oracle'\n";
  pngs.push_back((fs::path(dir) / "hit_rate.png").string());
  // TTFT CDF.
  std::string plot_cmd;
  for (std::size_t i = 0; i < runs.size(); ++i) {
    std::vector<double> t;
    if (runs[i].run != nullptr) {
      for (const auto& r : runs[i].run->records) {
        if (r.outcome == Outcome::kOk && r.ttft_s >= 0) t.push_back(r.ttft_s * 1000.0);
      }
    }
    std::sort(t.begin(), t.end());
    std::string d = "# ttft_ms fraction\n";
    for (std::size_t k = 0; k < t.size(); ++k) {
      d += fmt::format("{:.4f} {:.6f}\n", t[k],
                       static_cast<double>(k + 1) / static_cast<double>(t.size()));
    }
    if (t.empty()) d += "0 0\n";
    const std::string name = fmt::format("ttft_{}.dat", i);
    if (auto st = write(name, d); !st) return fail(st.error());
    plot_cmd += fmt::format("{}'{}' using 1:2 with steps lw 2 title {}",
                            plot_cmd.empty() ? "" : ", ", name, gp_quote(runs[i].summary.label));
  }
  body +=
      "reset\nset output 'ttft_cdf.png'\nset title 'TTFT CDF per policy'\nset xlabel 'TTFT (ms)'\n"
      "set ylabel 'fraction of requests'\nset yrange [0:1.02]\nset key bottom right\nset grid\n"
      "set logscale x\nplot " +
      plot_cmd + "\n";
  pngs.push_back((fs::path(dir) / "ttft_cdf.png").string());
  // Load per backend over time: in-flight requests per backend.
  for (const auto& r : runs) {
    if (r.run == nullptr) continue;
    std::vector<std::string> names;
    for (const auto& rec : r.run->records) {
      if (!rec.backend.empty() &&
          std::find(names.begin(), names.end(), rec.backend) == names.end()) {
        names.push_back(rec.backend);
      }
    }
    if (names.empty()) continue;
    std::sort(names.begin(), names.end());
    const double wall = std::max(r.run->wall_s, 1e-3);
    const int buckets = 100;
    std::string d = "# t_s";
    for (const auto& n : names) d += " " + sanitize(n);
    d += "\n";
    for (int b = 0; b <= buckets; ++b) {
      const double t = wall * b / buckets;
      d += fmt::format("{:.4f}", t);
      for (const auto& n : names) {
        int inflight = 0;
        for (const auto& rec : r.run->records) {
          if (rec.backend != n) continue;
          const double end = rec.e2e_s >= 0 ? rec.start_s + rec.e2e_s : wall;
          if (rec.start_s <= t && t < end) ++inflight;
        }
        d += fmt::format(" {}", inflight);
      }
      d += "\n";
    }
    const std::string base = "load_" + sanitize(r.summary.label);
    if (auto st = write(base + ".dat", d); !st) return fail(st.error());
    std::string cmd;
    for (std::size_t k = 0; k < names.size(); ++k) {
      cmd += fmt::format("{}'{}.dat' using 1:{} with lines lw 2 title {}", k ? ", " : "", base,
                         k + 2, gp_quote(names[k]));
    }
    body += fmt::format(
        "reset\nset output '{0}.png'\nset title {1}\nset xlabel 'time (s)'\nset ylabel 'requests "
        "in flight'\n"
        "set key top right\nset grid\nplot {2}\n",
        base, gp_quote("Load per backend: " + r.summary.label), cmd);
    pngs.push_back((fs::path(dir) / (base + ".png")).string());
  }
  // gnuplot resolves relative names against its working directory: cd into `dir` first.
  const std::string abs_dir = fs::absolute(dir).string();
  for (const char* term :
       {"pngcairo size 900,520 noenhanced font ',10'", "png size 900,520 noenhanced"}) {
    std::string script = fmt::format("cd {}\nset terminal {}\n", gp_quote(abs_dir), term);
    // `reset` keeps the terminal; re-state it anyway after each reset for old versions.
    std::string b2;
    std::size_t p = 0;
    while (p < body.size()) {
      std::size_t e = body.find('\n', p);
      if (e == std::string::npos) e = body.size();
      const std::string line = body.substr(p, e - p);
      b2 += line + "\n";
      if (line == "reset") b2 += fmt::format("set terminal {}\n", term);
      p = e + 1;
    }
    script += b2;
    if (auto st = write("plots.gp", script); !st) return fail(st.error());
    const std::string script_path = (fs::path(abs_dir) / "plots.gp").string();
    const std::string log_path = (fs::path(abs_dir) / "gnuplot.log").string();
    const int rc = run_gnuplot(script_path, log_path);
    if (rc == -1) return fail(Error::unavailable("gnuplot is not installed (needed for --plots)"));
    if (rc == 0) return pngs;
  }
  return fail(
      Error::internal("gnuplot failed; see " + (fs::path(abs_dir) / "gnuplot.log").string()));
}

std::string records_csv(const std::string& label, const RunResult& run, bool header,
                        const Summary* summary) {
  std::string out;
  if (header) {
    out +=
        "label,session,turn,start_s,ttft_s,e2e_s,prompt_tokens,cached_tokens,output_tokens,backend,"
        "status,outcome,reason,predicted_tokens,best_engine,best_tokens,chosen_tokens,class,queue_"
        "ms\n";
  }
  const HitLoss* loss = summary != nullptr && summary->loss.known &&
                                summary->loss.best_tokens.size() == run.records.size()
                            ? &summary->loss
                            : nullptr;
  for (std::size_t i = 0; i < run.records.size(); ++i) {
    const auto& r = run.records[i];
    fmt::format_to(std::back_inserter(out), "{},{},{},{:.6f},{:.6f},{:.6f},{},{},{},{},{},{},{},{}",
                   label, r.session, r.turn, r.start_s, r.ttft_s, r.e2e_s, r.prompt_tokens,
                   r.cached_tokens, r.output_tokens, r.backend, r.status, to_string(r.outcome),
                   r.reason, r.predicted_tokens);
    if (loss != nullptr) {
      fmt::format_to(std::back_inserter(out), ",{},{},{}", loss->best_engine[i],
                     loss->best_tokens[i], loss->chosen_tokens[i]);
    } else {
      out += ",,,";
    }
    fmt::format_to(std::back_inserter(out), ",{},{}\n", r.cls, r.queue_ms);
  }
  return out;
}

}  // namespace kvroute::bench
