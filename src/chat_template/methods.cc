// Renderer::call_method and call_global: methods of str, dict and list values, and global functions
// (chat_template/internal/renderer.h).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <limits>
#include <string>
#include <unordered_set>
#include <vector>

#include "chat_template/internal/renderer.h"

namespace kvroute::chat_template::internal {

Value Renderer::call_method(const Value& m, const Args& args, const Node& at) {
  const std::string& name = m.str;
  if (!m.self) return call_global(name, args, at);
  const Value& self = *m.self;
  if (self.is_string()) {
    const std::string& s = self.str;
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      const Value* c = args.get(0, "chars");
      const std::string* chars = nullptr;
      if (c != nullptr && !c->is_none()) chars = &need_str(c, "strip argument", at);
      return Value::string(py_strip(s, chars, name != "rstrip", name != "lstrip"));
    }
    if (name == "split" || name == "rsplit") {
      const Value* sep = args.get(0, "sep");
      const Value* mx = args.get(1, "maxsplit");
      std::int64_t maxsplit = mx == nullptr ? -1 : need_int(mx, "maxsplit", at);
      std::vector<std::string> parts;
      if (sep == nullptr || sep->is_none()) {
        if (name == "rsplit" && maxsplit >= 0)
          fail_at(at, "unsupported construct 'rsplit(None, maxsplit)'");
        parts = py_split_ws(s, maxsplit);
      } else {
        const std::string& sp = need_str(sep, "separator", at);
        if (sp.empty()) fail_at(at, "empty separator");
        parts = name == "split" ? py_split(s, sp, maxsplit) : py_rsplit(s, sp, maxsplit);
      }
      std::vector<Value> items;
      for (auto& p : parts) items.push_back(Value::string(std::move(p)));
      return Value::array(std::move(items));
    }
    if (name == "startswith" || name == "endswith") {
      const Value* arg = args.get(0, "prefix");
      if (arg == nullptr) fail_at(at, name + "() takes at least 1 argument");
      if (args.pos.size() > 1) fail_at(at, "unsupported construct '" + name + "(prefix, start)'");
      std::vector<const Value*> cands;
      if (arg->is_array() && arg->arr->is_tuple) {
        for (const auto& x : arg->arr->items) cands.push_back(&x);
      } else {
        cands.push_back(arg);
      }
      for (const Value* c : cands) {
        const std::string& p = need_str(c, "prefix", at);
        bool hit = name == "startswith" ? s.starts_with(p) : s.ends_with(p);
        if (hit) return Value::boolean(true);
      }
      return Value::boolean(false);
    }
    if (name == "upper") return Value::string(ascii_upper(s));
    if (name == "lower") return Value::string(ascii_lower(s));
    if (name == "title") return Value::string(py_title(s));
    if (name == "capitalize") return Value::string(py_capitalize(s));
    if (name == "replace") {
      const Value* cnt = args.get(2, "count");
      return Value::string(py_replace(s, need_str(args.get(0, "old"), "replace argument", at),
                                      need_str(args.get(1, "new"), "replace argument", at),
                                      cnt == nullptr ? -1 : need_int(cnt, "count", at)));
    }
    if (name == "find" || name == "count") {
      const std::string& sub = need_str(args.get(0, "sub"), "argument", at);
      if (name == "find") {
        std::size_t hit = s.find(sub);
        if (hit == std::string::npos) return Value::integer(-1);
        return Value::integer(
            static_cast<std::int64_t>(utf8_length(std::string_view(s).substr(0, hit))));
      }
      if (sub.empty()) return Value::integer(static_cast<std::int64_t>(utf8_length(s)) + 1);
      std::int64_t n = 0;
      for (std::size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size()))
        ++n;
      return Value::integer(n);
    }
    if (name == "join") {
      const Value* seq = args.get(0, "iterable");
      if (seq == nullptr) fail_at(at, "join() takes exactly one argument");
      std::string out;
      bool first = true;
      for (const auto& x : iterate(*seq, at)) {
        if (!x.is_string())
          fail_at(at,
                  std::string("sequence item: expected str instance, ") + type_name(x) + " found");
        if (!first) out += s;
        first = false;
        out += x.str;
      }
      return Value::string(std::move(out));
    }
    if (name == "splitlines") {
      std::vector<Value> items;
      for (auto& p : py_splitlines(s)) items.push_back(Value::string(std::move(p)));
      return Value::array(std::move(items));
    }
    if (name.starts_with("is")) {
      if (s.empty()) return Value::boolean(false);
      bool ok = true;
      bool any_cased = false;
      for (char ch : s) {
        auto c = static_cast<unsigned char>(ch);
        if (c >= 0x80) fail_at(at, "unsupported construct '" + name + "()' on non-ASCII text");
        if (name == "isdigit") ok = ok && std::isdigit(c);
        if (name == "isalpha") ok = ok && std::isalpha(c);
        if (name == "isalnum") ok = ok && std::isalnum(c);
        if (name == "isspace") ok = ok && std::isspace(c);
        if (name == "islower") ok = ok && !std::isupper(c);
        if (name == "isupper") ok = ok && !std::islower(c);
        any_cased = any_cased || std::isalpha(c);
      }
      if (name == "islower" || name == "isupper") ok = ok && any_cased;
      return Value::boolean(ok);
    }
  } else if (self.is_object()) {
    if (name == "items") {
      std::vector<Value> items;
      for (const auto& [k, v] : self.obj->items)
        items.push_back(Value::array({Value::string(k), v}, true));
      return Value::array(std::move(items));
    }
    if (name == "keys" || name == "values") {
      std::vector<Value> items;
      for (const auto& [k, v] : self.obj->items)
        items.push_back(name == "keys" ? Value::string(k) : v);
      return Value::array(std::move(items));
    }
    if (name == "get") {
      const Value* key = args.get(0, "key");
      if (key == nullptr) fail_at(at, "get expected at least 1 argument");
      const Value* dflt = args.get(1, "default");
      if (key->is_string()) {
        if (const Value* v = self.obj->find(key->str)) return *v;
      }
      return dflt != nullptr ? *dflt : Value::none();
    }
  } else if (self.is_array() && name == "count") {
    std::int64_t n = 0;
    const Value* x = args.get(0, "value");
    for (const auto& v : self.arr->items) n += (x != nullptr && equals(v, *x)) ? 1 : 0;
    return Value::integer(n);
  }
  fail_at(at, "unsupported method '" + name + "' on " + type_name(self));
}

Value Renderer::call_global(const std::string& name, const Args& args, const Node& at) {
  if (name == "raise_exception") {
    const Value* msg = args.get(0, "message");
    throw RenderError{msg == nullptr ? std::string() : to_str(*msg), true};
  }
  if (name == "namespace") {
    Value ns;
    ns.kind = Value::Kind::kNamespace;
    ns.obj = std::make_shared<Object>();
    if (!args.pos.empty()) {
      if (!args.pos[0].is_object()) fail_at(at, "namespace() positional argument must be a dict");
      for (const auto& [k, v] : args.pos[0].obj->items) ns.obj->set(k, v);
    }
    for (const auto& [k, v] : args.kw) ns.obj->set(k, v);
    return ns;
  }
  if (name == "dict") {
    Value d = Value::object();
    for (const auto& [k, v] : args.kw) d.obj->set(k, v);
    return d;
  }
  if (name == "range") {
    std::int64_t start = 0, stop = 0, step = 1;
    if (args.pos.size() == 1) {
      stop = need_int(&args.pos[0], "range argument", at);
    } else if (args.pos.size() >= 2 && args.pos.size() <= 3) {
      start = need_int(&args.pos[0], "range argument", at);
      stop = need_int(&args.pos[1], "range argument", at);
      if (args.pos.size() == 3) step = need_int(&args.pos[2], "range argument", at);
    } else {
      fail_at(at, "range expected 1 to 3 arguments");
    }
    if (step == 0) fail_at(at, "range() arg 3 must not be zero");
    // Element count computed up front (unsigned arithmetic cannot overflow here) so a huge range
    // fails before allocating.
    bool nonempty = step > 0 ? start < stop : start > stop;
    std::uint64_t count = 0;
    if (nonempty) {
      std::uint64_t span =
          step > 0 ? static_cast<std::uint64_t>(stop) - static_cast<std::uint64_t>(start)
                   : static_cast<std::uint64_t>(start) - static_cast<std::uint64_t>(stop);
      std::uint64_t mag =
          step > 0 ? static_cast<std::uint64_t>(step) : static_cast<std::uint64_t>(-(step + 1)) + 1;
      count = (span - 1) / mag + 1;
    }
    if (count > opts_.max_loop_iterations) fail_at(at, "range exceeds the loop iteration limit");
    std::vector<Value> items;
    items.reserve(static_cast<std::size_t>(count));
    std::int64_t k = start;
    for (std::uint64_t j = 0; j < count; ++j, k += (j < count ? step : 0))
      items.push_back(Value::integer(k));
    return Value::array(std::move(items));
  }
  if (name == "strftime_now") {
    const std::string& fmt = need_str(args.get(0, "format"), "strftime_now format", at);
    long long now = opts_.clock ? opts_.clock()
                                : std::chrono::duration_cast<std::chrono::seconds>(
                                      std::chrono::system_clock::now().time_since_epoch())
                                      .count();
    return Value::string(strftime_utc(fmt, now));
  }
  fail_at(at, "unsupported function '" + name + "'");
}

}  // namespace kvroute::chat_template::internal
