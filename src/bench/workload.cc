#include "bench/internal/workload.h"

#include <fmt/format.h>
#include <simdjson.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <unordered_map>

#include "common/hash.h"
#include "http/message.h"
#include "prompt/prompt.h"

namespace kvroute::bench {

namespace {

std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::uint64_t stream_id(std::string_view tag, std::uint64_t seed, std::uint64_t a,
                        std::uint64_t b = 0) {
  const std::string key = fmt::format("{}/{}/{}/{}", tag, seed, a, b);
  return hash64(key);
}

template <typename T>
void shuffle(std::vector<T>& v, Rng& rng) {
  for (std::size_t i = v.size(); i > 1; --i) {
    const std::size_t j = rng.below(i);
    std::swap(v[i - 1], v[j]);
  }
}

void append_segments(std::string& out, const std::vector<Segment>& segs) {
  for (const auto& s : segs) {
    for (std::uint32_t i = 0; i < s.count; ++i) {
      if (!out.empty() && out.back() != '\n') out += ' ';
      out += synth_word(s.stream, s.offset + i);
    }
  }
}

}  // namespace

std::uint64_t Rng::next() {
  s_ += 0x9e3779b97f4a7c15ULL;
  return mix64(s_);
}
double Rng::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
std::uint64_t Rng::below(std::uint64_t n) { return n == 0 ? 0 : next() % n; }
double Rng::exponential(double mean) { return mean <= 0 ? 0 : -std::log(1.0 - uniform()) * mean; }

std::size_t Workload::num_requests() const {
  std::size_t n = 0;
  for (const auto& s : sessions) n += s.turns.size();
  return n;
}

std::vector<std::string> workload_names() {
  return {"shared-prefix", "multi-turn", "long-doc-qa", "mooncake", "mix"};
}

std::string synth_word(std::uint64_t stream, std::uint32_t index) {
  std::uint64_t h =
      mix64(stream ^ mix64(static_cast<std::uint64_t>(index) + 0x632be59bd9b4e019ULL));
  char buf[7];
  for (char& c : buf) {
    c = static_cast<char>('a' + h % 26);
    h /= 26;
  }
  return std::string(buf, sizeof buf);
}

std::uint64_t mooncake_stream(std::uint64_t hash_id) { return stream_id("mooncake", 0, hash_id); }

std::string render_segments(const std::vector<Segment>& segs) {
  std::string out;
  append_segments(out, segs);
  return out;
}

std::string render_prompt(const Item& item) {
  if (!item.chat) return render_segments(item.prompt);
  std::string out;
  for (const auto& m : item.messages) {
    out += "<|" + m.role + "|>\n";
    std::string content = render_segments(m.content);
    out += content;
    out += '\n';
  }
  out += "<|assistant|>\n";
  return out;
}

std::vector<std::uint32_t> predicted_tokens(const Item& item, std::uint32_t vocab_size) {
  return prompt::word_tokens(render_prompt(item), vocab_size);
}

std::string request_body(const Item& item, std::string_view model) {
  std::string b = "{";
  if (!model.empty()) {
    b += "\"model\":\"";
    http::append_json_escaped(b, model);
    b += "\",";
  }
  if (item.chat) {
    b += "\"messages\":[";
    bool first = true;
    for (const auto& m : item.messages) {
      if (!first) b += ',';
      first = false;
      b += "{\"role\":\"";
      http::append_json_escaped(b, m.role);
      b += "\",\"content\":\"";
      http::append_json_escaped(b, render_segments(m.content));
      b += "\"}";
    }
    b += "],";
  } else {
    b += "\"prompt\":\"";
    http::append_json_escaped(b, render_segments(item.prompt));
    b += "\",";
  }
  b += fmt::format(
      R"("max_tokens":{},"ignore_eos":true,"stream":true,"stream_options":{{"include_usage":true}}}})",
      item.max_tokens);
  return b;
}

Result<Workload> make_shared_prefix(const WorkloadOptions& o) {
  if (o.sp_groups == 0 || o.sp_prompts_per_group == 0 || o.sp_system_len + o.sp_question_len == 0) {
    return fail(Error::invalid(
        "shared-prefix: groups, prompts per group and prompt length must be positive"));
  }
  Workload w;
  w.name = "shared-prefix";
  for (std::uint32_t g = 0; g < o.sp_groups; ++g) {
    const Segment sys{stream_id("sp-sys", o.seed, g), 0, o.sp_system_len};
    for (std::uint32_t p = 0; p < o.sp_prompts_per_group; ++p) {
      Item it;
      if (sys.count > 0) it.prompt.push_back(sys);
      it.prompt.push_back({stream_id("sp-q", o.seed, g, p), 0, o.sp_question_len});
      it.max_tokens = std::max<std::uint32_t>(1, o.output_len);
      Session s;
      s.id = fmt::format("sp-{}-{}", g, p);
      s.turns.push_back(std::move(it));
      w.sessions.push_back(std::move(s));
    }
  }
  Rng rng(o.seed ^ 0x5350ULL);
  shuffle(w.sessions, rng);
  return w;
}

Result<Workload> make_multi_turn(const WorkloadOptions& o) {
  if (o.mt_sessions == 0 || o.mt_turns == 0 || o.mt_turn_len == 0) {
    return fail(Error::invalid("multi-turn: sessions, turns and tokens per turn must be positive"));
  }
  Workload w;
  w.name = "multi-turn";
  Rng rng(o.seed ^ 0x4d54ULL);
  const std::uint32_t out = std::max<std::uint32_t>(1, o.output_len);
  for (std::uint32_t s = 0; s < o.mt_sessions; ++s) {
    Session sess;
    sess.id = fmt::format("mt-{}", s);
    std::vector<Message> history;
    if (o.mt_system_len > 0)
      history.push_back({"system", {{stream_id("mt-sys", o.seed, 0), 0, o.mt_system_len}}});
    for (std::uint32_t t = 0; t < o.mt_turns; ++t) {
      history.push_back({"user", {{stream_id("mt-user", o.seed, s, t), 0, o.mt_turn_len}}});
      Item it;
      it.chat = true;
      it.messages = history;
      it.max_tokens = out;
      it.think_s = t == 0 ? 0 : rng.exponential(o.mt_think_s);
      sess.turns.push_back(std::move(it));
      // The next turn carries a synthetic answer of output_len words (docs/adr/0200).
      history.push_back({"assistant", {{stream_id("mt-answer", o.seed, s, t), 0, out}}});
    }
    w.sessions.push_back(std::move(sess));
  }
  return w;
}

Result<Workload> make_long_doc_qa(const WorkloadOptions& o) {
  if (o.ld_docs == 0 || o.ld_questions == 0 || o.ld_doc_len == 0) {
    return fail(
        Error::invalid("long-doc-qa: documents, questions and document length must be positive"));
  }
  Workload w;
  w.name = "long-doc-qa";
  for (std::uint32_t d = 0; d < o.ld_docs; ++d) {
    for (std::uint32_t q = 0; q < o.ld_questions; ++q) {
      Item it;
      it.prompt.push_back({stream_id("ld-doc", o.seed, d), 0, o.ld_doc_len});
      it.prompt.push_back({stream_id("ld-q", o.seed, d, q), 0, o.ld_question_len});
      it.max_tokens = std::max<std::uint32_t>(1, o.output_len);
      Session s;
      s.id = fmt::format("ld-{}-{}", d, q);
      s.turns.push_back(std::move(it));
      w.sessions.push_back(std::move(s));
    }
  }
  Rng rng(o.seed ^ 0x4c44ULL);
  shuffle(w.sessions, rng);
  return w;
}

Result<Workload> make_mix(const WorkloadOptions& o) {
  KVROUTE_TRY(Workload sp, make_shared_prefix(o));
  KVROUTE_TRY(Workload mt, make_multi_turn(o));
  Workload w;
  w.name = "mix";
  // Interleave proportionally to the session counts, with a deterministic random order.
  std::vector<int> order(sp.sessions.size(), 0);
  order.insert(order.end(), mt.sessions.size(), 1);
  Rng rng(o.seed ^ 0x4d4958ULL);
  shuffle(order, rng);
  std::size_t i = 0, j = 0;
  for (int k : order) {
    if (k == 0)
      w.sessions.push_back(std::move(sp.sessions[i++]));
    else
      w.sessions.push_back(std::move(mt.sessions[j++]));
  }
  return w;
}

Result<std::vector<TraceRecord>> parse_mooncake(std::string_view jsonl, std::size_t limit) {
  std::vector<TraceRecord> out;
  simdjson::dom::parser parser;
  std::size_t line_no = 0;
  std::size_t pos = 0;
  while (pos < jsonl.size()) {
    std::size_t end = jsonl.find('\n', pos);
    if (end == std::string_view::npos) end = jsonl.size();
    std::string_view line = jsonl.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
    if (line.empty()) continue;
    auto bad = [&](std::string_view what) {
      return fail(Error::invalid(fmt::format("mooncake trace line {}: {}", line_no, what)));
    };
    simdjson::dom::element doc;
    if (parser.parse(line.data(), line.size()).get(doc) != simdjson::SUCCESS)
      return bad("not JSON");
    TraceRecord r;
    std::uint64_t ts = 0, in = 0, outl = 0;
    double tsd = 0;
    if (doc["timestamp"].get(ts) != simdjson::SUCCESS) {
      if (doc["timestamp"].get(tsd) != simdjson::SUCCESS || !(tsd >= 0))
        return bad("missing or bad timestamp");
      ts = static_cast<std::uint64_t>(tsd);
    }
    if (doc["input_length"].get(in) != simdjson::SUCCESS || in == 0 || in > (1u << 24)) {
      return bad("missing or bad input_length");
    }
    if (doc["output_length"].get(outl) != simdjson::SUCCESS || outl > (1u << 24)) {
      return bad("missing or bad output_length");
    }
    simdjson::dom::array ids;
    if (doc["hash_ids"].get(ids) != simdjson::SUCCESS) return bad("missing hash_ids");
    for (simdjson::dom::element e : ids) {
      std::uint64_t id = 0;
      if (e.get(id) != simdjson::SUCCESS) return bad("hash_ids must be non-negative integers");
      r.hash_ids.push_back(id);
    }
    r.timestamp_ms = ts;
    r.input_length = static_cast<std::uint32_t>(in);
    r.output_length = static_cast<std::uint32_t>(outl);
    out.push_back(std::move(r));
    if (limit > 0 && out.size() >= limit) break;
  }
  return out;
}

std::vector<std::size_t> mooncake_conversations(const std::vector<TraceRecord>& records,
                                                std::uint32_t block_tokens) {
  const std::uint32_t bt = std::max<std::uint32_t>(1, block_tokens);
  // Chained hash of a record's first k hash ids -> the latest record with exactly k full blocks.
  std::unordered_map<std::uint64_t, std::size_t> by_prefix;
  std::vector<std::size_t> root(records.size());
  std::vector<std::uint64_t> chain;
  for (std::size_t j = 0; j < records.size(); ++j) {
    const auto& ids = records[j].hash_ids;
    chain.resize(ids.size());
    std::uint64_t h = 0x9e3779b97f4a7c15ULL;
    for (std::size_t k = 0; k < ids.size(); ++k) {
      h = mix64(h ^ mix64(ids[k] + 0x632be59bd9b4e019ULL * (k + 1)));
      chain[k] = h;
    }
    root[j] = j;
    for (std::size_t k = ids.size() > 0 ? ids.size() - 1 : 0; k >= 1; --k) {
      if (auto it = by_prefix.find(chain[k - 1]); it != by_prefix.end()) {
        root[j] = root[it->second];
        break;
      }
    }
    const std::size_t full = std::min<std::size_t>(ids.size(), records[j].input_length / bt);
    if (full >= 1) by_prefix[chain[full - 1]] = j;
  }
  return root;
}

Workload mooncake_workload(const std::vector<TraceRecord>& records, std::uint32_t block_tokens,
                           std::uint32_t output_len) {
  Workload w;
  w.name = "mooncake";
  w.timestamps = true;
  const std::uint32_t bt = std::max<std::uint32_t>(1, block_tokens);
  const auto root = mooncake_conversations(records, bt);
  std::size_t n = 0;
  for (const auto& r : records) {
    Item it;
    std::uint32_t left = r.input_length;
    for (std::uint64_t id : r.hash_ids) {
      if (left == 0) break;
      const std::uint32_t c = std::min(left, bt);
      it.prompt.push_back({mooncake_stream(id), 0, c});
      left -= c;
    }
    // More tokens than hash ids cover: a unique tail.
    if (left > 0) it.prompt.push_back({stream_id("mooncake-tail", 0, n), 0, left});
    it.max_tokens = std::max<std::uint32_t>(1, output_len > 0 ? output_len : r.output_length);
    Session s;
    s.id = fmt::format("mc-{}", root[n]);
    s.at_s = static_cast<double>(r.timestamp_ms) / 1000.0;
    s.turns.push_back(std::move(it));
    w.sessions.push_back(std::move(s));
    ++n;
  }
  return w;
}

Result<TrafficClass> parse_traffic_class(std::string_view spec) {
  auto bad = [&](std::string_view why) {
    return fail(Error::invalid(fmt::format(
        "--class '{}': {} (want NAME:SHARE[:HEADER=VALUE[,HEADER=VALUE...]])", spec, why)));
  };
  TrafficClass c;
  const auto c1 = spec.find(':');
  if (c1 == std::string_view::npos || c1 == 0) return bad("no NAME:SHARE");
  c.name = std::string(spec.substr(0, c1));
  const auto c2 = spec.find(':', c1 + 1);
  const std::string share(
      spec.substr(c1 + 1, c2 == std::string_view::npos ? spec.npos : c2 - c1 - 1));
  char* end = nullptr;
  c.share = std::strtod(share.c_str(), &end);
  if (share.empty() || end != share.c_str() + share.size() || !(c.share > 0) ||
      !std::isfinite(c.share))
    return bad("SHARE must be a number above 0");
  if (c2 == std::string_view::npos) return c;
  std::string_view rest = spec.substr(c2 + 1);
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    const std::string_view kv = rest.substr(0, comma);
    const auto eq = kv.find('=');
    if (eq == std::string_view::npos || eq == 0) return bad("a header is not HEADER=VALUE");
    const std::string_view name = kv.substr(0, eq);
    const std::string_view value = kv.substr(eq + 1);
    if (!http::is_token(name) || !http::is_field_value(value))
      return bad("invalid header name or value");
    c.headers.emplace_back(std::string(name), std::string(value));
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  return c;
}

void assign_classes(Workload& wl, const std::vector<TrafficClass>& classes, std::uint64_t seed) {
  if (classes.empty()) return;
  double total = 0;
  for (const auto& c : classes) total += c.share;
  Rng rng(seed ^ 0x636c617373657321ULL);  // its own stream: arrivals and text stay as without
  for (auto& s : wl.sessions) {
    double u = rng.uniform() * total;
    const TrafficClass* pick = &classes.back();
    for (const auto& c : classes) {
      if (u < c.share) {
        pick = &c;
        break;
      }
      u -= c.share;
    }
    s.cls = pick->name;
    s.headers = pick->headers;
  }
}

Status vary_output_lengths(Workload& wl, std::string_view dist, std::uint32_t mean,
                           std::uint64_t seed) {
  if (dist == "fixed") return {};
  if (dist != "uniform" && dist != "exponential")
    return fail(Error::invalid(fmt::format(
        "unknown output length distribution '{}' (fixed, uniform, exponential)", dist)));
  Rng rng(seed ^ 0x6f75747075746c65ULL);  // its own stream
  const double m = std::max<std::uint32_t>(mean, 1);
  for (auto& s : wl.sessions) {
    for (auto& item : s.turns) {
      double v = dist == "uniform" ? 1 + std::floor(rng.uniform() * (2 * m - 1))
                                   : std::round(rng.exponential(m));
      v = std::clamp(v, 1.0, 8 * m);
      item.max_tokens = static_cast<std::uint32_t>(v);
    }
  }
  return {};
}

namespace {

Result<Workload> make_workload_unclassed(const WorkloadOptions& o) {
  if (o.name == "shared-prefix") return make_shared_prefix(o);
  if (o.name == "multi-turn") return make_multi_turn(o);
  if (o.name == "long-doc-qa") return make_long_doc_qa(o);
  if (o.name == "mix") return make_mix(o);
  if (o.name == "mooncake") {
    if (o.trace_path.empty()) return fail(Error::invalid("mooncake: --trace FILE is required"));
    std::FILE* f = std::fopen(o.trace_path.c_str(), "rb");
    if (f == nullptr) return fail(Error::io("cannot open trace '" + o.trace_path + "'"));
    std::string text;
    char buf[1 << 16];
    std::size_t got = 0;
    while ((got = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, got);
    std::fclose(f);
    KVROUTE_TRY(auto recs, parse_mooncake(text, o.trace_limit));
    return mooncake_workload(recs, o.trace_block, o.trace_output_len);
  }
  std::string known;
  for (const auto& n : workload_names()) known += (known.empty() ? "" : ", ") + n;
  return fail(Error::invalid("unknown workload '" + o.name + "' (known: " + known + ")"));
}

}  // namespace

Result<Workload> make_workload(const WorkloadOptions& o) {
  KVROUTE_TRY(auto wl, make_workload_unclassed(o));
  if (o.name != "mooncake")
    KVROUTE_TRY_STATUS(vary_output_lengths(wl, o.output_len_dist, o.output_len, o.seed));
  assign_classes(wl, o.classes, o.seed);
  return wl;
}

}  // namespace kvroute::bench
