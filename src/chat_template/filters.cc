// Renderer::apply_filter: the Jinja2 filters chat templates use
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

Value Renderer::apply_filter(const Node& n) {
  Value v = eval(*n.a);
  Args args = eval_args(n);
  const Node& at = n;
  switch (static_cast<FilterId>(n.op)) {
    case FilterId::kTrim: {
      const Value* c = args.get(0, "chars");
      const std::string* chars = nullptr;
      if (c != nullptr && !c->is_none()) chars = &need_str(c, "trim chars", at);
      return Value::string(py_strip(to_str(v), chars, true, true));
    }
    case FilterId::kToJson: {
      // HF transformers: tojson(x, ensure_ascii=False, indent=None, separators=None,
      // sort_keys=False)
      const Value* ensure_ascii = args.get(0, "ensure_ascii");
      const Value* indent_v = args.get(1, "indent");
      const Value* seps = args.get(2, "separators");
      const Value* sort_keys = args.get(3, "sort_keys");
      int indent = -1;
      if (indent_v != nullptr && !indent_v->is_none()) {
        std::int64_t i = need_int(indent_v, "tojson indent", at);
        indent = static_cast<int>(std::clamp<std::int64_t>(i, 0, 64));
      }
      std::string item_sep = indent >= 0 ? "," : ", ";
      std::string key_sep = ": ";
      if (seps != nullptr && !seps->is_none()) {
        if (!seps->is_array() || seps->arr->items.size() != 2)
          fail_at(at, "tojson separators must be a pair");
        item_sep = need_str(&seps->arr->items[0], "separator", at);
        key_sep = need_str(&seps->arr->items[1], "separator", at);
      }
      const Value& target = (sort_keys != nullptr && truthy(*sort_keys)) ? sorted_keys_copy(v) : v;
      Value holder = target;
      std::string out;
      std::string err;
      if (v.is_undefined()) undefined_error(v, at);
      if (!to_json(out, holder, indent, item_sep, key_sep, err)) fail_at(at, err);
      if (ensure_ascii != nullptr && truthy(*ensure_ascii)) out = escape_ascii_json(out);
      return Value::string(std::move(out));
    }
    case FilterId::kLength:
      switch (v.kind) {
        case Value::Kind::kUndefined:
          return Value::integer(0);
        case Value::Kind::kString:
          return Value::integer(static_cast<std::int64_t>(utf8_length(v.str)));
        case Value::Kind::kArray:
          return Value::integer(static_cast<std::int64_t>(v.arr->items.size()));
        case Value::Kind::kObject:
          return Value::integer(static_cast<std::int64_t>(v.obj->items.size()));
        default:
          fail_at(at, std::string("object of type '") + type_name(v) + "' has no len()");
      }
    case FilterId::kUpper:
      return Value::string(ascii_upper(to_str(v)));
    case FilterId::kLower:
      return Value::string(ascii_lower(to_str(v)));
    case FilterId::kTitle:
      return Value::string(py_title(to_str(v)));
    case FilterId::kCapitalize:
      return Value::string(py_capitalize(to_str(v)));
    case FilterId::kDefault: {
      const Value* d = args.get(0, "default_value");
      const Value* boolean = args.get(1, "boolean");
      bool use_default = v.is_undefined() || (boolean != nullptr && truthy(*boolean) && !truthy(v));
      if (use_default) return d != nullptr ? *d : Value::string("");
      return v;
    }
    case FilterId::kFirst: {
      if (v.is_undefined()) return Value::undefined("first");
      auto items = iterate(v, at);
      if (items.empty()) return Value::undefined("first");
      return items.front();
    }
    case FilterId::kLast: {
      if (v.is_undefined()) undefined_error(v, at);
      auto items = iterate(v, at);
      if (items.empty()) return Value::undefined("last");
      return items.back();
    }
    case FilterId::kJoin: {
      const Value* d = args.get(0, "d");
      const Value* attribute = args.get(1, "attribute");
      std::string sep = d != nullptr ? to_str(*d) : "";
      std::string out;
      bool first = true;
      for (auto& x : iterate(v, at)) {
        if (!first) out += sep;
        first = false;
        if (attribute != nullptr && !attribute->is_none()) {
          out += to_str(attr_path(x, to_str(*attribute), at));
        } else {
          out += to_str(x);
        }
      }
      return Value::string(std::move(out));
    }
    case FilterId::kMap: {
      std::vector<Value> items = iterate(v, at);
      std::vector<Value> out;
      if (const Value* attribute = args.get(99, "attribute")) {
        const Value* dflt = args.get(99, "default");
        for (auto& x : items) {
          Value r = attr_path(x, to_str(*attribute), at);
          if (r.is_undefined() && dflt != nullptr) r = *dflt;
          out.push_back(std::move(r));
        }
        return Value::array(std::move(out));
      }
      if (args.pos.empty()) fail_at(at, "map requires a filter name or attribute=");
      fail_at(at, "unsupported construct 'map(filter name)'");
    }
    case FilterId::kSelectAttr:
    case FilterId::kRejectAttr:
    case FilterId::kSelect:
    case FilterId::kReject: {
      auto id = static_cast<FilterId>(n.op);
      bool by_attr = id == FilterId::kSelectAttr || id == FilterId::kRejectAttr;
      bool keep_when = id == FilterId::kSelectAttr || id == FilterId::kSelect;
      std::size_t test_pos = by_attr ? 1 : 0;
      Args rest;
      for (std::size_t k = test_pos + 1; k < args.pos.size(); ++k) rest.pos.push_back(args.pos[k]);
      std::vector<Value> out;
      for (auto& x : iterate(v, at)) {
        Value subject =
            by_attr ? attr_path(x, to_str(args.pos.empty() ? Value() : args.pos[0]), at) : x;
        bool r = args.pos.size() > test_pos ? run_named_test(args.pos[test_pos], subject, rest, at)
                                            : truthy(subject);
        if (r == keep_when) out.push_back(x);
      }
      return Value::array(std::move(out));
    }
    case FilterId::kList:
      return Value::array(iterate(v, at));
    case FilterId::kString:
    case FilterId::kSafe:
    case FilterId::kEscape:
      return Value::string(to_str(v));
    case FilterId::kInt: {
      const Value* d = args.get(0, "default");
      Value dflt = d != nullptr ? *d : Value::integer(0);
      std::int64_t i = 0;
      if (as_int(v, i)) return Value::integer(i);
      if (v.kind == Value::Kind::kFloat) {
        if (!std::isfinite(v.f) || std::fabs(v.f) >= 9.2e18) return dflt;
        return Value::integer(static_cast<std::int64_t>(v.f));
      }
      if (v.is_string()) {
        std::string s = py_strip(v.str, nullptr, true, true);
        char* end = nullptr;
        errno = 0;
        long long x = std::strtoll(s.c_str(), &end, 10);
        if (!s.empty() && end == s.c_str() + s.size() && errno == 0) return Value::integer(x);
        double f = std::strtod(s.c_str(), &end);
        if (!s.empty() && end == s.c_str() + s.size() && std::isfinite(f) &&
            std::fabs(f) < 9.2e18) {
          return Value::integer(static_cast<std::int64_t>(f));
        }
      }
      return dflt;
    }
    case FilterId::kFloat: {
      const Value* d = args.get(0, "default");
      double f = 0;
      if (as_double(v, f)) return Value::floating(f);
      if (v.is_string()) {
        std::string s = py_strip(v.str, nullptr, true, true);
        char* end = nullptr;
        f = std::strtod(s.c_str(), &end);
        if (!s.empty() && end == s.c_str() + s.size()) return Value::floating(f);
      }
      return d != nullptr ? *d : Value::floating(0);
    }
    case FilterId::kReplace: {
      const Value* cnt = args.get(2, "count");
      std::int64_t count = (cnt == nullptr || cnt->is_none()) ? -1 : need_int(cnt, "count", at);
      return Value::string(py_replace(to_str(v),
                                      to_str(args.pos.size() > 0 ? args.pos[0] : Value()),
                                      to_str(args.pos.size() > 1 ? args.pos[1] : Value()), count));
    }
    case FilterId::kItems: {
      if (v.is_undefined()) return Value::array();
      if (!v.is_object()) fail_at(at, "items filter needs a mapping");
      std::vector<Value> items;
      for (const auto& [k, x] : v.obj->items)
        items.push_back(Value::array({Value::string(k), x}, true));
      return Value::array(std::move(items));
    }
    case FilterId::kIndent: {
      const Value* w = args.get(0, "width");
      const Value* first = args.get(1, "first");
      const Value* blank = args.get(2, "blank");
      std::string ind = "    ";
      if (w != nullptr)
        ind = w->is_string() ? w->str
                             : std::string(static_cast<std::size_t>(std::clamp<std::int64_t>(
                                               need_int(w, "width", at), 0, 1024)),
                                           ' ');
      std::string s = to_str(v) + "\n";
      auto lines = py_splitlines(s);
      std::string rv;
      if (blank != nullptr && truthy(*blank)) {
        for (std::size_t k = 0; k < lines.size(); ++k) {
          if (k) rv += "\n" + ind;
          rv += lines[k];
        }
      } else {
        rv = lines.empty() ? "" : lines[0];
        for (std::size_t k = 1; k < lines.size(); ++k) {
          rv += "\n";
          if (!lines[k].empty()) rv += ind;
          rv += lines[k];
        }
      }
      if (first != nullptr && truthy(*first)) rv = ind + rv;
      return Value::string(std::move(rv));
    }
    case FilterId::kAbs: {
      if (v.kind == Value::Kind::kFloat) return Value::floating(std::fabs(v.f));
      std::int64_t i = 0;
      if (!as_int(v, i) || i == std::numeric_limits<std::int64_t>::min())
        fail_at(at, "bad operand type for abs()");
      return Value::integer(i < 0 ? -i : i);
    }
    case FilterId::kUnique: {
      std::vector<Value> out;
      for (auto& x : iterate(v, at)) {
        bool seen = false;
        for (const auto& y : out) seen = seen || equals(x, y);
        if (!seen) out.push_back(std::move(x));
      }
      return Value::array(std::move(out));
    }
    case FilterId::kReverse: {
      if (v.is_string()) {
        auto chars = utf8_chars(v.str);
        std::string out;
        for (auto it = chars.rbegin(); it != chars.rend(); ++it) out.append(*it);
        return Value::string(std::move(out));
      }
      auto items = iterate(v, at);
      std::reverse(items.begin(), items.end());
      return Value::array(std::move(items));
    }
    case FilterId::kSum: {
      Value acc = Value::integer(0);
      for (auto& x : iterate(v, at)) acc = binary(BinOp::kAdd, acc, x, at);
      return acc;
    }
    case FilterId::kMax:
    case FilterId::kMin: {
      auto items = iterate(v, at);
      if (items.empty()) return Value::undefined();
      Value best = items[0];
      for (auto& x : items) {
        int c = compare_order(x, best, "<", at);
        if (static_cast<FilterId>(n.op) == FilterId::kMax ? c > 0 : c < 0) best = x;
      }
      return best;
    }
    case FilterId::kWordCount:
      return Value::integer(static_cast<std::int64_t>(py_split_ws(to_str(v), -1).size()));
    default:
      fail_at(at, "unsupported filter '" + n.name + "'");
  }
}

}  // namespace kvroute::chat_template::internal
