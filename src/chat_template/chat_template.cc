// ChatTemplate: compile() parses into an immutable Node tree; render() evaluates it with a
// per-call Renderer. Runtime failures are raised internally as RenderError and converted to
// Error values at the API boundary (docs/adr/0121-chat-template-internal-exceptions.md).
#include "chat_template/chat_template.h"

#include <simdjson.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <limits>
#include <unordered_set>

#include "chat_template/ast.h"

namespace kvroute::chat_template {

const std::unordered_map<std::string_view, TestId>& test_table();

struct ChatTemplate::Program {
  Options options;
  std::unique_ptr<Node> root;
};

namespace {

struct RenderError {
  std::string message;
  bool raised = false;  // raise_exception(): message is the template's own text
};

[[noreturn]] void fail_at(const Node& n, std::string msg) {
  throw RenderError{std::move(msg) + " (line " + std::to_string(n.line) + ")", false};
}

enum class Flow : std::uint8_t { kNormal, kBreak, kContinue };

Value method_value(Value receiver, std::string name) {
  Value v;
  v.kind = Value::Kind::kMethod;
  v.str = std::move(name);
  v.self = std::make_shared<Value>(std::move(receiver));
  return v;
}

Value global_value(std::string name) {
  Value v;
  v.kind = Value::Kind::kMethod;
  v.str = std::move(name);
  return v;
}

const std::unordered_set<std::string_view>& str_methods() {
  static const std::unordered_set<std::string_view> kSet = {
      "strip", "lstrip", "rstrip", "split", "rsplit", "startswith", "endswith", "upper", "lower",
      "title", "capitalize", "replace", "find", "count", "join", "splitlines", "isdigit", "isalpha",
      "isalnum", "isspace", "islower", "isupper", "format", "index", "rfind", "zfill", "center",
      "ljust", "rjust", "casefold", "swapcase", "partition", "rpartition", "encode", "expandtabs",
      "isdecimal", "isnumeric", "istitle", "isidentifier", "isprintable", "isascii", "removeprefix",
      "removesuffix", "translate", "maketrans", "format_map", "rindex"};
  return kSet;
}
const std::unordered_set<std::string_view>& dict_methods() {
  static const std::unordered_set<std::string_view> kSet = {
      "items", "keys", "values", "get", "copy", "pop", "popitem", "update", "clear", "setdefault", "fromkeys"};
  return kSet;
}
const std::unordered_set<std::string_view>& list_methods() {
  static const std::unordered_set<std::string_view> kSet = {
      "append", "extend", "insert", "remove", "pop", "clear", "index", "count", "sort", "reverse", "copy"};
  return kSet;
}

std::string ascii_upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}
std::string ascii_lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
std::string py_title(const std::string& s) {
  std::string out = s;
  bool prev_cased = false;
  for (char& c : out) {
    auto u = static_cast<unsigned char>(c);
    bool alpha = std::isalpha(u) != 0;
    if (alpha) {
      c = static_cast<char>(prev_cased ? std::tolower(u) : std::toupper(u));
      prev_cased = true;
    } else {
      prev_cased = u >= 0x80 && prev_cased;
    }
  }
  return out;
}
std::string py_capitalize(const std::string& s) {
  std::string out = ascii_lower(s);
  if (!out.empty()) out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
  return out;
}

std::vector<std::string> py_split_ws(std::string_view s, std::int64_t maxsplit) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  auto at_space = [&](std::size_t p, std::size_t& next) {
    next = p;
    return is_py_space(utf8_next(s, next));
  };
  std::size_t next = 0;
  while (pos < s.size()) {
    while (pos < s.size() && at_space(pos, next)) pos = next;
    if (pos >= s.size()) break;
    if (maxsplit >= 0 && static_cast<std::int64_t>(out.size()) >= maxsplit) {
      std::string rest = py_strip(s.substr(pos), nullptr, false, true);
      out.push_back(rest);
      break;
    }
    std::size_t start = pos;
    while (pos < s.size() && !at_space(pos, next)) pos = next;
    out.emplace_back(s.substr(start, pos - start));
  }
  return out;
}

std::vector<std::string> py_split(std::string_view s, std::string_view sep, std::int64_t maxsplit) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (true) {
    if (maxsplit >= 0 && static_cast<std::int64_t>(out.size()) >= maxsplit) break;
    std::size_t hit = s.find(sep, pos);
    if (hit == std::string_view::npos) break;
    out.emplace_back(s.substr(pos, hit - pos));
    pos = hit + sep.size();
  }
  out.emplace_back(s.substr(pos));
  return out;
}

std::vector<std::string> py_rsplit(std::string_view s, std::string_view sep, std::int64_t maxsplit) {
  std::vector<std::string> out;
  std::size_t end = s.size();
  while (true) {
    if (maxsplit >= 0 && static_cast<std::int64_t>(out.size()) >= maxsplit) break;
    if (end < sep.size()) break;
    std::size_t hit = s.rfind(sep, end - sep.size());
    if (hit == std::string_view::npos) break;
    out.emplace_back(s.substr(hit + sep.size(), end - hit - sep.size()));
    end = hit;
  }
  out.emplace_back(s.substr(0, end));
  std::reverse(out.begin(), out.end());
  return out;
}

std::vector<std::string> py_splitlines(std::string_view s, bool keepends = false) {
  std::vector<std::string> out;
  std::size_t start = 0;
  std::size_t pos = 0;
  while (pos < s.size()) {
    std::size_t here = pos;
    std::uint32_t cp = utf8_next(s, pos);
    bool brk = cp == '\n' || cp == '\r' || cp == 0x0B || cp == 0x0C || cp == 0x1C || cp == 0x1D ||
               cp == 0x1E || cp == 0x85 || cp == 0x2028 || cp == 0x2029;
    if (!brk) continue;
    if (cp == '\r' && pos < s.size() && s[pos] == '\n') ++pos;
    out.emplace_back(s.substr(start, (keepends ? pos : here) - start));
    start = pos;
  }
  if (start < s.size()) out.emplace_back(s.substr(start));
  return out;
}

std::string py_replace(const std::string& s, const std::string& old, const std::string& repl, std::int64_t count) {
  std::string out;
  if (old.empty()) {
    // Python inserts repl between every character (and at both ends).
    auto chars = utf8_chars(s);
    std::int64_t n = 0;
    for (std::size_t k = 0; k <= chars.size(); ++k) {
      if (count < 0 || n < count) {
        out += repl;
        ++n;
      }
      if (k < chars.size()) out.append(chars[k]);
    }
    return out;
  }
  std::size_t pos = 0;
  std::int64_t n = 0;
  while (count < 0 || n < count) {
    std::size_t hit = s.find(old, pos);
    if (hit == std::string::npos) break;
    out.append(s, pos, hit - pos);
    out += repl;
    pos = hit + old.size();
    ++n;
  }
  out.append(s, pos, std::string::npos);
  return out;
}

// Python slice index normalisation (PySlice_AdjustIndices).
std::vector<std::size_t> slice_indices(std::int64_t len, const Value* start, const Value* stop, const Value* step,
                                       const Node& at) {
  auto as_int = [&](const Value* v, std::int64_t dflt) -> std::int64_t {
    if (v == nullptr || v->is_none()) return dflt;
    if (v->kind == Value::Kind::kInt) return v->i;
    if (v->kind == Value::Kind::kBool) return v->b ? 1 : 0;
    fail_at(at, "slice indices must be integers or None");
  };
  std::int64_t st = as_int(step, 1);
  if (st == 0) fail_at(at, "slice step cannot be zero");
  std::int64_t lo, hi;
  if (st > 0) {
    lo = as_int(start, 0);
    hi = as_int(stop, len);
    if (lo < 0) lo = std::max<std::int64_t>(0, lo + len);
    if (lo > len) lo = len;
    if (hi < 0) hi = std::max<std::int64_t>(0, hi + len);
    if (hi > len) hi = len;
  } else {
    lo = as_int(start, len - 1);
    hi = as_int(stop, -len - 1);
    if (lo < 0) lo = std::max<std::int64_t>(-1, lo + len);
    if (lo >= len) lo = len - 1;
    if (hi < 0) hi = std::max<std::int64_t>(-1, hi + len);
    if (hi >= len) hi = len - 1;
  }
  std::vector<std::size_t> idx;
  if (st > 0) {
    for (std::int64_t k = lo; k < hi; k += st) idx.push_back(static_cast<std::size_t>(k));
  } else {
    for (std::int64_t k = lo; k > hi; k += st) idx.push_back(static_cast<std::size_t>(k));
  }
  return idx;
}

std::string escape_ascii_json(const std::string& s) {
  std::string out;
  for (std::size_t pos = 0; pos < s.size();) {
    std::size_t start = pos;
    std::uint32_t cp = utf8_next(s, pos);
    if (cp < 0x80) {
      out.append(s, start, pos - start);
      continue;
    }
    char buf[16];
    if (cp >= 0x10000) {
      std::uint32_t v = cp - 0x10000;
      std::snprintf(buf, sizeof buf, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
    } else {
      std::snprintf(buf, sizeof buf, "\\u%04x", cp);
    }
    out += buf;
  }
  return out;
}

Value sorted_keys_copy(const Value& v) {
  if (v.is_array()) {
    std::vector<Value> items;
    for (const auto& x : v.arr->items) items.push_back(sorted_keys_copy(x));
    return Value::array(std::move(items), v.arr->is_tuple);
  }
  if (v.is_object()) {
    Value out = Value::object();
    for (const auto& [k, x] : v.obj->items) out.obj->items.emplace_back(k, sorted_keys_copy(x));
    std::stable_sort(out.obj->items.begin(), out.obj->items.end(),
                     [](const auto& l, const auto& r) { return l.first < r.first; });
    return out;
  }
  return v;
}

std::string strftime_utc(const std::string& fmt, long long epoch) {
  std::time_t t = static_cast<std::time_t>(epoch);
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::string out(fmt.size() * 4 + 64, '\0');
  std::size_t n = std::strftime(out.data(), out.size(), fmt.c_str(), &tm);
  out.resize(n);
  return out;
}

class Renderer {
 public:
  Renderer(const Options& options, Value context) : opts_(options) {
    scopes_.emplace_back();
    for (auto& [k, v] : context.obj->items) scopes_[0].emplace_back(k, std::move(v));
    scopes_.emplace_back();  // template-level assignments
  }

  std::string run(const Node& root) {
    exec_body(root);
    return std::move(out_);
  }

 private:
  using Scope = std::vector<std::pair<std::string, Value>>;

  struct Depth {
    Depth(Renderer& r, const Node& n) : r(r) {
      if (++r.depth_ > r.opts_.max_recursion_depth) fail_at(n, "recursion limit exceeded");
    }
    ~Depth() { --r.depth_; }
    Renderer& r;
  };

  void emit(std::string_view s, const Node& n) {
    if (out_.size() + s.size() > opts_.max_output_bytes) {
      fail_at(n, "output exceeds the limit of " + std::to_string(opts_.max_output_bytes) + " bytes");
    }
    out_.append(s);
  }

  void count_iteration(const Node& n) {
    if (++iterations_ > opts_.max_loop_iterations) fail_at(n, "loop iteration limit exceeded");
  }

  // Innermost scope first; inside a macro (base_ > 0) only the macro's own scopes, then the
  // template-level and context scopes are visible.
  const Value* lookup(std::string_view name) const {
    for (std::size_t k = scopes_.size(); k-- > base_;) {
      for (const auto& [n, v] : scopes_[k]) {
        if (n == name) return &v;
      }
    }
    for (std::size_t k = std::min<std::size_t>(base_, 2); k-- > 0;) {
      for (const auto& [n, v] : scopes_[k]) {
        if (n == name) return &v;
      }
    }
    return nullptr;
  }

  void assign(const std::string& name, Value v) {
    Scope& s = scopes_.back();
    for (auto& [n, old] : s) {
      if (n == name) {
        old = std::move(v);
        return;
      }
    }
    s.emplace_back(name, std::move(v));
  }

  void assign_targets(const std::vector<std::string>& names, Value v, const Node& at) {
    if (names.size() == 1) {
      assign(names[0], std::move(v));
      return;
    }
    std::vector<Value> items = iterate(v, at);
    if (items.size() != names.size()) {
      fail_at(at, "cannot unpack " + std::to_string(items.size()) + " values into " + std::to_string(names.size()));
    }
    for (std::size_t k = 0; k < names.size(); ++k) assign(names[k], std::move(items[k]));
  }

  // ---- statements ----

  Flow exec_body(const Node& body) {
    for (const auto& st : body.list) {
      Flow f = exec(*st);
      if (f != Flow::kNormal) return f;
    }
    return Flow::kNormal;
  }

  Flow exec(const Node& n) {
    Depth guard(*this, n);
    switch (n.kind) {
      case NodeKind::kText:
        emit(n.literal.str, n);
        return Flow::kNormal;
      case NodeKind::kOutput: {
        Value v = eval(*n.a);
        if (v.is_string()) {
          emit(v.str, n);
        } else {
          emit(to_str(v), n);
        }
        return Flow::kNormal;
      }
      case NodeKind::kIf:
        for (std::size_t k = 0; k + 1 < n.list.size(); k += 2) {
          if (truthy(eval(*n.list[k]))) return exec_body(*n.list[k + 1]);
        }
        if (n.d) return exec_body(*n.d);
        return Flow::kNormal;
      case NodeKind::kFor:
        exec_for(n);
        return Flow::kNormal;
      case NodeKind::kSet:
        assign_targets(n.names, eval(*n.a), n);
        return Flow::kNormal;
      case NodeKind::kNsSet: {
        const Value* ns = lookup(n.name);
        if (ns == nullptr || ns->kind != Value::Kind::kNamespace) {
          fail_at(n, "cannot assign attribute on non-namespace object");
        }
        std::shared_ptr<Object> obj = ns->obj;
        obj->set(n.attr, eval(*n.a));
        return Flow::kNormal;
      }
      case NodeKind::kSetBlock: {
        std::string saved;
        saved.swap(out_);
        std::size_t saved_size = saved.size();
        (void)saved_size;
        exec_body(*n.c);
        std::string captured;
        captured.swap(out_);
        out_.swap(saved);
        assign(n.names[0], Value::string(std::move(captured)));
        return Flow::kNormal;
      }
      case NodeKind::kMacro: {
        Value m;
        m.kind = Value::Kind::kMacro;
        m.macro = &n;
        assign(n.name, std::move(m));
        return Flow::kNormal;
      }
      case NodeKind::kBreak:
        return Flow::kBreak;
      case NodeKind::kContinue:
        return Flow::kContinue;
      case NodeKind::kBody:
        return exec_body(n);
      default:
        fail_at(n, "internal: expression in statement position");
    }
  }

  void exec_for(const Node& n) {
    Value iterable = eval(*n.a);
    std::vector<Value> items = iterate(iterable, n);
    if (n.b) {
      std::vector<Value> kept;
      for (auto& item : items) {
        count_iteration(n);
        scopes_.emplace_back();
        assign_targets(n.names, item, n);
        bool keep = truthy(eval(*n.b));
        scopes_.pop_back();
        if (keep) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      if (n.d) exec_body(*n.d);
      return;
    }
    const auto len = static_cast<std::int64_t>(items.size());
    for (std::int64_t k = 0; k < len; ++k) {
      count_iteration(n);
      scopes_.emplace_back();
      Value loop = Value::object();
      auto& L = loop.obj->items;
      L.reserve(11);
      L.emplace_back("index", Value::integer(k + 1));
      L.emplace_back("index0", Value::integer(k));
      L.emplace_back("revindex", Value::integer(len - k));
      L.emplace_back("revindex0", Value::integer(len - k - 1));
      L.emplace_back("first", Value::boolean(k == 0));
      L.emplace_back("last", Value::boolean(k == len - 1));
      L.emplace_back("length", Value::integer(len));
      L.emplace_back("previtem", k > 0 ? items[static_cast<std::size_t>(k - 1)] : Value::undefined("previtem"));
      L.emplace_back("nextitem", k + 1 < len ? items[static_cast<std::size_t>(k + 1)] : Value::undefined("nextitem"));
      L.emplace_back("depth", Value::integer(1));
      L.emplace_back("depth0", Value::integer(0));
      scopes_.back().emplace_back("loop", std::move(loop));
      assign_targets(n.names, items[static_cast<std::size_t>(k)], n);
      Flow f = exec_body(*n.c);
      scopes_.pop_back();
      if (f == Flow::kBreak) break;
    }
  }

  // ---- expressions ----

  std::vector<Value> iterate(const Value& v, const Node& at) {
    switch (v.kind) {
      case Value::Kind::kUndefined:
        return {};
      case Value::Kind::kArray:
        return v.arr->items;
      case Value::Kind::kObject: {
        std::vector<Value> keys;
        keys.reserve(v.obj->items.size());
        for (const auto& [k, x] : v.obj->items) keys.push_back(Value::string(k));
        return keys;
      }
      case Value::Kind::kString: {
        std::vector<Value> chars;
        for (auto c : utf8_chars(v.str)) chars.push_back(Value::string(std::string(c)));
        return chars;
      }
      default:
        fail_at(at, std::string("'") + type_name(v) + "' object is not iterable");
    }
  }

  [[noreturn]] void undefined_error(const Value& v, const Node& at) {
    if (v.str.empty()) fail_at(at, "value is undefined");
    fail_at(at, "'" + v.str + "' is undefined");
  }

  Value get_attr(const Value& obj, const std::string& name, const Node& at) {
    switch (obj.kind) {
      case Value::Kind::kUndefined:
        undefined_error(obj, at);
      case Value::Kind::kObject: {
        if (dict_methods().contains(name)) return method_value(obj, name);
        if (const Value* v = obj.obj->find(name)) return *v;
        return Value::undefined(name);
      }
      case Value::Kind::kNamespace: {
        if (const Value* v = obj.obj->find(name)) return *v;
        return Value::undefined(name);
      }
      case Value::Kind::kString:
        if (str_methods().contains(name)) return method_value(obj, name);
        return Value::undefined(name);
      case Value::Kind::kArray:
        if (list_methods().contains(name)) return method_value(obj, name);
        return Value::undefined(name);
      default:
        return Value::undefined(name);
    }
  }

  Value get_item(const Value& obj, const Value& key, const Node& at) {
    if (obj.is_undefined()) undefined_error(obj, at);
    if (key.kind == Value::Kind::kInt || key.kind == Value::Kind::kBool) {
      std::int64_t idx = key.kind == Value::Kind::kBool ? (key.b ? 1 : 0) : key.i;
      if (obj.is_array()) {
        auto len = static_cast<std::int64_t>(obj.arr->items.size());
        if (idx < 0) idx += len;
        if (idx >= 0 && idx < len) return obj.arr->items[static_cast<std::size_t>(idx)];
        return Value::undefined();
      }
      if (obj.is_string()) {
        auto chars = utf8_chars(obj.str);
        auto len = static_cast<std::int64_t>(chars.size());
        if (idx < 0) idx += len;
        if (idx >= 0 && idx < len) return Value::string(std::string(chars[static_cast<std::size_t>(idx)]));
        return Value::undefined();
      }
      return Value::undefined();
    }
    if (key.is_string()) {
      if (obj.is_object()) {
        if (const Value* v = obj.obj->find(key.str)) return *v;
      }
      return get_attr(obj, key.str, at);
    }
    return Value::undefined();
  }

  Value slice(const Value& obj, const Node& s, const Node& at) {
    if (obj.is_undefined()) undefined_error(obj, at);
    Value start = s.a ? eval(*s.a) : Value::none();
    Value stop = s.b ? eval(*s.b) : Value::none();
    Value step = s.c ? eval(*s.c) : Value::none();
    if (obj.is_array()) {
      auto idx = slice_indices(static_cast<std::int64_t>(obj.arr->items.size()), &start, &stop, &step, at);
      std::vector<Value> items;
      items.reserve(idx.size());
      for (auto k : idx) items.push_back(obj.arr->items[k]);
      return Value::array(std::move(items), obj.arr->is_tuple);
    }
    if (obj.is_string()) {
      auto chars = utf8_chars(obj.str);
      auto idx = slice_indices(static_cast<std::int64_t>(chars.size()), &start, &stop, &step, at);
      std::string out;
      for (auto k : idx) out.append(chars[k]);
      return Value::string(std::move(out));
    }
    return Value::undefined();
  }

  static bool as_int(const Value& v, std::int64_t& out) {
    if (v.kind == Value::Kind::kInt) {
      out = v.i;
      return true;
    }
    if (v.kind == Value::Kind::kBool) {
      out = v.b ? 1 : 0;
      return true;
    }
    return false;
  }

  static bool as_double(const Value& v, double& out) {
    std::int64_t i = 0;
    if (as_int(v, i)) {
      out = static_cast<double>(i);
      return true;
    }
    if (v.kind == Value::Kind::kFloat) {
      out = v.f;
      return true;
    }
    return false;
  }

  [[noreturn]] void type_error(const char* op, const Value& a, const Value& b, const Node& at) {
    if (a.is_undefined()) undefined_error(a, at);
    if (b.is_undefined()) undefined_error(b, at);
    fail_at(at, std::string("unsupported operand type(s) for ") + op + ": '" + type_name(a) + "' and '" + type_name(b) + "'");
  }

  Value binary(BinOp op, const Value& a, const Value& b, const Node& at) {
    std::int64_t ia = 0, ib = 0;
    double da = 0, db = 0;
    bool ints = as_int(a, ia) && as_int(b, ib);
    bool nums = as_double(a, da) && as_double(b, db);
    switch (op) {
      case BinOp::kConcat:
        return Value::string(to_str(a) + to_str(b));
      case BinOp::kAdd:
        if (ints) {
          std::int64_t r;
          if (__builtin_add_overflow(ia, ib, &r)) fail_at(at, "integer overflow");
          return Value::integer(r);
        }
        if (nums) return Value::floating(da + db);
        if (a.is_string() && b.is_string()) return Value::string(a.str + b.str);
        if (a.is_array() && b.is_array() && a.arr->is_tuple == b.arr->is_tuple) {
          std::vector<Value> items = a.arr->items;
          items.insert(items.end(), b.arr->items.begin(), b.arr->items.end());
          return Value::array(std::move(items), a.arr->is_tuple);
        }
        type_error("+", a, b, at);
      case BinOp::kSub:
        if (ints) {
          std::int64_t r;
          if (__builtin_sub_overflow(ia, ib, &r)) fail_at(at, "integer overflow");
          return Value::integer(r);
        }
        if (nums) return Value::floating(da - db);
        type_error("-", a, b, at);
      case BinOp::kMul: {
        if (ints) {
          std::int64_t r;
          if (__builtin_mul_overflow(ia, ib, &r)) fail_at(at, "integer overflow");
          return Value::integer(r);
        }
        if (nums) return Value::floating(da * db);
        const Value* seq = nullptr;
        std::int64_t times = 0;
        if ((a.is_string() || a.is_array()) && as_int(b, times)) seq = &a;
        if ((b.is_string() || b.is_array()) && as_int(a, times)) seq = &b;
        if (seq == nullptr) type_error("*", a, b, at);
        if (times < 0) times = 0;
        std::size_t unit = seq->is_string() ? seq->str.size() : seq->arr->items.size() * 16;
        if (unit != 0 && static_cast<std::size_t>(times) > opts_.max_output_bytes / unit) {
          fail_at(at, "sequence repetition exceeds the output limit");
        }
        if (seq->is_string()) {
          std::string out;
          for (std::int64_t k = 0; k < times; ++k) out += seq->str;
          return Value::string(std::move(out));
        }
        std::vector<Value> items;
        for (std::int64_t k = 0; k < times; ++k) items.insert(items.end(), seq->arr->items.begin(), seq->arr->items.end());
        return Value::array(std::move(items), seq->arr->is_tuple);
      }
      case BinOp::kDiv:
        if (!nums) type_error("/", a, b, at);
        if (db == 0) fail_at(at, "division by zero");
        return Value::floating(da / db);
      case BinOp::kFloorDiv:
        if (!nums) type_error("//", a, b, at);
        if (db == 0) fail_at(at, "integer division or modulo by zero");
        if (ints) {
          if (ia == std::numeric_limits<std::int64_t>::min() && ib == -1) fail_at(at, "integer overflow");
          std::int64_t q = ia / ib;
          if ((ia % ib != 0) && ((ia < 0) != (ib < 0))) --q;
          return Value::integer(q);
        }
        return Value::floating(std::floor(da / db));
      case BinOp::kMod:
        if (!nums) {
          if (a.is_string()) fail_at(at, "unsupported construct 'string % formatting'");
          type_error("%", a, b, at);
        }
        if (db == 0) fail_at(at, "integer division or modulo by zero");
        if (ints) {
          if (ib == -1) return Value::integer(0);
          std::int64_t r = ia % ib;
          if (r != 0 && ((r < 0) != (ib < 0))) r += ib;
          return Value::integer(r);
        } else {
          double r = std::fmod(da, db);
          if (r != 0 && ((r < 0) != (db < 0))) r += db;
          return Value::floating(r);
        }
      case BinOp::kPow:
        if (!nums) type_error("**", a, b, at);
        if (ints && ib >= 0) {
          std::int64_t r = 1;
          for (std::int64_t k = 0; k < ib; ++k) {
            if (__builtin_mul_overflow(r, ia, &r)) fail_at(at, "integer overflow");
            if (r == 0 || r == 1) break;
          }
          return Value::integer(r);
        }
        return Value::floating(std::pow(da, db));
    }
    fail_at(at, "internal: unknown operator");
  }

  int compare_order(const Value& a, const Value& b, const char* op, const Node& at) {
    double da = 0, db = 0;
    std::int64_t ia = 0, ib = 0;
    if (as_int(a, ia) && as_int(b, ib)) return ia < ib ? -1 : ia > ib ? 1 : 0;
    if (as_double(a, da) && as_double(b, db)) return da < db ? -1 : da > db ? 1 : 0;
    if (a.is_string() && b.is_string()) {
      int c = a.str.compare(b.str);
      return c < 0 ? -1 : c > 0 ? 1 : 0;
    }
    if (a.is_array() && b.is_array()) {
      std::size_t n = std::min(a.arr->items.size(), b.arr->items.size());
      for (std::size_t k = 0; k < n; ++k) {
        if (!equals(a.arr->items[k], b.arr->items[k])) return compare_order(a.arr->items[k], b.arr->items[k], op, at);
      }
      return a.arr->items.size() < b.arr->items.size() ? -1 : a.arr->items.size() > b.arr->items.size() ? 1 : 0;
    }
    if (a.is_undefined()) undefined_error(a, at);
    if (b.is_undefined()) undefined_error(b, at);
    fail_at(at, std::string("'") + op + "' not supported between instances of '" + type_name(a) + "' and '" + type_name(b) + "'");
  }

  bool contains(const Value& container, const Value& item, const Node& at) {
    switch (container.kind) {
      case Value::Kind::kUndefined:
        return false;
      case Value::Kind::kString:
        if (!item.is_string()) {
          if (item.is_undefined()) undefined_error(item, at);
          fail_at(at, std::string("'in <string>' requires string as left operand, not ") + type_name(item));
        }
        return container.str.find(item.str) != std::string::npos;
      case Value::Kind::kArray:
        for (const auto& x : container.arr->items) {
          if (equals(x, item)) return true;
        }
        return false;
      case Value::Kind::kObject:
        if (item.is_array() && !item.arr->is_tuple) fail_at(at, "unhashable type: 'list'");
        if (item.is_object()) fail_at(at, "unhashable type: 'dict'");
        if (!item.is_string()) return false;
        return container.obj->find(item.str) != nullptr;
      default:
        fail_at(at, std::string("argument of type '") + type_name(container) + "' is not iterable");
    }
  }

  bool compare(CmpOp op, const Value& a, const Value& b, const Node& at) {
    switch (op) {
      case CmpOp::kEq: return equals(a, b);
      case CmpOp::kNe: return !equals(a, b);
      case CmpOp::kLt: return compare_order(a, b, "<", at) < 0;
      case CmpOp::kLe: return compare_order(a, b, "<=", at) <= 0;
      case CmpOp::kGt: return compare_order(a, b, ">", at) > 0;
      case CmpOp::kGe: return compare_order(a, b, ">=", at) >= 0;
      case CmpOp::kIn: return contains(b, a, at);
      case CmpOp::kNotIn: return !contains(b, a, at);
    }
    return false;
  }

  struct Args {
    std::vector<Value> pos;
    std::vector<std::pair<std::string, Value>> kw;
    const Value* get(std::size_t k, std::string_view name) const {
      if (k < pos.size()) return &pos[k];
      for (const auto& [n, v] : kw) {
        if (n == name) return &v;
      }
      return nullptr;
    }
  };

  Args eval_args(const Node& n, std::size_t skip = 0) {
    Args args;
    for (std::size_t k = skip; k < n.args.size(); ++k) {
      if (n.arg_names[k].empty()) {
        args.pos.push_back(eval(*n.args[k]));
      } else {
        args.kw.emplace_back(n.arg_names[k], eval(*n.args[k]));
      }
    }
    return args;
  }

  const std::string& need_str(const Value* v, const char* what, const Node& at) {
    if (v == nullptr || !v->is_string()) {
      if (v != nullptr && v->is_undefined()) undefined_error(*v, at);
      fail_at(at, std::string(what) + " must be a string");
    }
    return v->str;
  }

  std::int64_t need_int(const Value* v, const char* what, const Node& at) {
    std::int64_t x = 0;
    if (v == nullptr || !as_int(*v, x)) fail_at(at, std::string(what) + " must be an integer");
    return x;
  }

  Value call_method(const Value& m, const Args& args, const Node& at) {
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
          if (name == "rsplit" && maxsplit >= 0) fail_at(at, "unsupported construct 'rsplit(None, maxsplit)'");
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
          return Value::integer(static_cast<std::int64_t>(utf8_length(std::string_view(s).substr(0, hit))));
        }
        if (sub.empty()) return Value::integer(static_cast<std::int64_t>(utf8_length(s)) + 1);
        std::int64_t n = 0;
        for (std::size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
        return Value::integer(n);
      }
      if (name == "join") {
        const Value* seq = args.get(0, "iterable");
        if (seq == nullptr) fail_at(at, "join() takes exactly one argument");
        std::string out;
        bool first = true;
        for (const auto& x : iterate(*seq, at)) {
          if (!x.is_string()) fail_at(at, std::string("sequence item: expected str instance, ") + type_name(x) + " found");
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
        for (const auto& [k, v] : self.obj->items) items.push_back(Value::array({Value::string(k), v}, true));
        return Value::array(std::move(items));
      }
      if (name == "keys" || name == "values") {
        std::vector<Value> items;
        for (const auto& [k, v] : self.obj->items) items.push_back(name == "keys" ? Value::string(k) : v);
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

  Value call_global(const std::string& name, const Args& args, const Node& at) {
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
        std::uint64_t span = step > 0 ? static_cast<std::uint64_t>(stop) - static_cast<std::uint64_t>(start)
                                      : static_cast<std::uint64_t>(start) - static_cast<std::uint64_t>(stop);
        std::uint64_t mag = step > 0 ? static_cast<std::uint64_t>(step) : static_cast<std::uint64_t>(-(step + 1)) + 1;
        count = (span - 1) / mag + 1;
      }
      if (count > opts_.max_loop_iterations) fail_at(at, "range exceeds the loop iteration limit");
      std::vector<Value> items;
      items.reserve(static_cast<std::size_t>(count));
      std::int64_t k = start;
      for (std::uint64_t j = 0; j < count; ++j, k += (j < count ? step : 0)) items.push_back(Value::integer(k));
      return Value::array(std::move(items));
    }
    if (name == "strftime_now") {
      const std::string& fmt = need_str(args.get(0, "format"), "strftime_now format", at);
      long long now = opts_.clock ? opts_.clock()
                                  : std::chrono::duration_cast<std::chrono::seconds>(
                                        std::chrono::system_clock::now().time_since_epoch()).count();
      return Value::string(strftime_utc(fmt, now));
    }
    fail_at(at, "unsupported function '" + name + "'");
  }

  Value call_macro(const Node& m, const Args& args, const Node& at) {
    if (args.pos.size() > m.names.size()) fail_at(at, "macro '" + m.name + "' takes not more than " + std::to_string(m.names.size()) + " argument(s)");
    std::size_t saved_base = base_;
    std::size_t frame = scopes_.size();
    scopes_.emplace_back();
    base_ = frame;
    for (const auto& [k, v] : args.kw) {
      if (std::find(m.names.begin(), m.names.end(), k) == m.names.end()) {
        base_ = saved_base;
        scopes_.resize(frame);
        fail_at(at, "macro '" + m.name + "' takes no keyword argument '" + k + "'");
      }
    }
    for (std::size_t k = 0; k < m.names.size(); ++k) {
      const Value* v = args.get(k, m.names[k]);
      if (v != nullptr) {
        assign(m.names[k], *v);
      } else if (m.args[k]) {
        assign(m.names[k], eval(*m.args[k]));
      } else {
        assign(m.names[k], Value::undefined(m.names[k]));
      }
    }
    std::string saved;
    saved.swap(out_);
    exec_body(*m.c);
    std::string captured;
    captured.swap(out_);
    out_.swap(saved);
    scopes_.resize(frame);
    base_ = saved_base;
    return Value::string(std::move(captured));
  }

  Value eval(const Node& n) {
    Depth guard(*this, n);
    switch (n.kind) {
      case NodeKind::kLiteral:
        return n.literal;
      case NodeKind::kName: {
        if (const Value* v = lookup(n.name)) return *v;
        static const std::unordered_set<std::string_view> kGlobals = {"range", "namespace", "raise_exception",
                                                                     "strftime_now", "dict"};
        if (kGlobals.contains(n.name)) return global_value(n.name);
        return Value::undefined(n.name);
      }
      case NodeKind::kGetAttr:
        return get_attr(eval(*n.a), n.name, n);
      case NodeKind::kGetItem: {
        Value obj = eval(*n.a);
        if (n.b->kind == NodeKind::kSlice) return slice(obj, *n.b, n);
        return get_item(obj, eval(*n.b), n);
      }
      case NodeKind::kCall: {
        Value callee = eval(*n.a);
        Args args = eval_args(n);
        if (callee.kind == Value::Kind::kMethod) return call_method(callee, args, n);
        if (callee.kind == Value::Kind::kMacro) return call_macro(*callee.macro, args, n);
        if (callee.is_undefined()) undefined_error(callee, n);
        fail_at(n, std::string("'") + type_name(callee) + "' object is not callable");
      }
      case NodeKind::kFilter:
        return apply_filter(n);
      case NodeKind::kTest: {
        Value subject = eval(*n.a);
        Args args = eval_args(n);
        bool r = run_test(static_cast<TestId>(n.op), subject, args, n);
        return Value::boolean(n.negated ? !r : r);
      }
      case NodeKind::kNot:
        return Value::boolean(!truthy(eval(*n.a)));
      case NodeKind::kNeg:
      case NodeKind::kPos: {
        Value v = eval(*n.a);
        if (n.kind == NodeKind::kPos && v.is_number()) return v.kind == Value::Kind::kBool ? Value::integer(v.b) : v;
        if (v.kind == Value::Kind::kFloat) return Value::floating(-v.f);
        std::int64_t i = 0;
        if (as_int(v, i)) {
          if (i == std::numeric_limits<std::int64_t>::min()) fail_at(n, "integer overflow");
          return Value::integer(-i);
        }
        if (v.is_undefined()) undefined_error(v, n);
        fail_at(n, std::string("bad operand type for unary -: '") + type_name(v) + "'");
      }
      case NodeKind::kBinary: {
        Value a = eval(*n.a);
        Value b = eval(*n.b);
        return binary(static_cast<BinOp>(n.op), a, b, n);
      }
      case NodeKind::kAnd: {
        Value a = eval(*n.a);
        if (!truthy(a)) return a;
        return eval(*n.b);
      }
      case NodeKind::kOr: {
        Value a = eval(*n.a);
        if (truthy(a)) return a;
        return eval(*n.b);
      }
      case NodeKind::kCompare: {
        Value left = eval(*n.a);
        for (std::size_t k = 0; k < n.ops.size(); ++k) {
          Value right = eval(*n.list[k]);
          if (!compare(n.ops[k], left, right, n)) return Value::boolean(false);
          left = std::move(right);
        }
        return Value::boolean(true);
      }
      case NodeKind::kCondExpr:
        if (truthy(eval(*n.a))) return eval(*n.b);
        if (n.c) return eval(*n.c);
        return Value::undefined();
      case NodeKind::kList:
      case NodeKind::kTuple: {
        std::vector<Value> items;
        items.reserve(n.list.size());
        for (const auto& x : n.list) items.push_back(eval(*x));
        return Value::array(std::move(items), n.kind == NodeKind::kTuple);
      }
      case NodeKind::kDict: {
        Value d = Value::object();
        for (std::size_t k = 0; k + 1 < n.list.size(); k += 2) {
          Value key = eval(*n.list[k]);
          if (!key.is_string()) fail_at(n, "unsupported construct 'non-string dict key'");
          d.obj->set(key.str, eval(*n.list[k + 1]));
        }
        return d;
      }
      default:
        fail_at(n, "internal: statement in expression position");
    }
  }

  // ---- tests ----

  bool run_test(TestId id, const Value& v, const Args& args, const Node& at) {
    const Value* arg = args.get(0, "other");
    auto need_arg = [&]() -> const Value& {
      if (arg == nullptr) fail_at(at, "test '" + at.name + "' needs an argument");
      return *arg;
    };
    switch (id) {
      case TestId::kDefined: return !v.is_undefined();
      case TestId::kUndefined: return v.is_undefined();
      case TestId::kNone: return v.is_none();
      case TestId::kString: return v.is_string();
      case TestId::kMapping: return v.is_object();
      case TestId::kIterable:
        return v.is_undefined() || v.is_string() || v.is_array() || v.is_object();
      case TestId::kSequence:
        return v.is_undefined() || v.is_string() || v.is_array() || v.is_object();
      case TestId::kNumber: return v.is_number();
      case TestId::kInteger: return v.kind == Value::Kind::kInt;
      case TestId::kFloat: return v.kind == Value::Kind::kFloat;
      case TestId::kBoolean: return v.kind == Value::Kind::kBool;
      case TestId::kTrue: return v.kind == Value::Kind::kBool && v.b;
      case TestId::kFalse: return v.kind == Value::Kind::kBool && !v.b;
      case TestId::kEq: return equals(v, need_arg());
      case TestId::kNe: return !equals(v, need_arg());
      case TestId::kLt: return compare_order(v, need_arg(), "<", at) < 0;
      case TestId::kLe: return compare_order(v, need_arg(), "<=", at) <= 0;
      case TestId::kGt: return compare_order(v, need_arg(), ">", at) > 0;
      case TestId::kGe: return compare_order(v, need_arg(), ">=", at) >= 0;
      case TestId::kIn: return contains(need_arg(), v, at);
      case TestId::kOdd:
      case TestId::kEven: {
        std::int64_t i = 0;
        if (!as_int(v, i)) fail_at(at, "odd/even test needs an integer");
        bool odd = (i % 2) != 0;
        return id == TestId::kOdd ? odd : !odd;
      }
      case TestId::kDivisibleBy: {
        std::int64_t i = 0, d = 0;
        if (!as_int(v, i) || !as_int(need_arg(), d)) fail_at(at, "divisibleby needs integers");
        if (d == 0) fail_at(at, "integer division or modulo by zero");
        return d == -1 || i % d == 0;
      }
      case TestId::kCallable: return v.kind == Value::Kind::kMethod || v.kind == Value::Kind::kMacro;
      case TestId::kLower:
      case TestId::kUpper: {
        std::string s = to_str(v);
        bool cased = false;
        for (char ch : s) {
          auto c = static_cast<unsigned char>(ch);
          if (std::isalpha(c)) cased = true;
          if (id == TestId::kLower && std::isupper(c)) return false;
          if (id == TestId::kUpper && std::islower(c)) return false;
        }
        return cased;
      }
      case TestId::kSameAs: {
        const Value& o = need_arg();
        if (v.kind != o.kind) return false;
        switch (v.kind) {
          case Value::Kind::kNone:
          case Value::Kind::kUndefined:
            return v.kind == Value::Kind::kNone;
          case Value::Kind::kBool: return v.b == o.b;
          case Value::Kind::kArray: return v.arr == o.arr;
          case Value::Kind::kObject:
          case Value::Kind::kNamespace: return v.obj == o.obj;
          default: return equals(v, o);
        }
      }
    }
    return false;
  }

  bool run_named_test(const Value& name, const Value& subject, const Args& rest, const Node& at) {
    if (!name.is_string()) fail_at(at, "test name must be a string");
    auto it = test_table().find(name.str);
    if (it == test_table().end()) fail_at(at, "unsupported test '" + name.str + "'");
    return run_test(it->second, subject, rest, at);
  }

  Value attr_path(const Value& item, const std::string& path, const Node& at) {
    Value cur = item;
    std::size_t start = 0;
    while (true) {
      std::size_t dot = path.find('.', start);
      std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
      if (numeric) {
        cur = get_item(cur, Value::integer(std::strtoll(part.c_str(), nullptr, 10)), at);
      } else {
        cur = get_item(cur, Value::string(part), at);
      }
      if (dot == std::string::npos) return cur;
      start = dot + 1;
    }
  }

  // ---- filters ----

  Value apply_filter(const Node& n) {
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
        // HF transformers: tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)
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
          if (!seps->is_array() || seps->arr->items.size() != 2) fail_at(at, "tojson separators must be a pair");
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
          case Value::Kind::kUndefined: return Value::integer(0);
          case Value::Kind::kString: return Value::integer(static_cast<std::int64_t>(utf8_length(v.str)));
          case Value::Kind::kArray: return Value::integer(static_cast<std::int64_t>(v.arr->items.size()));
          case Value::Kind::kObject: return Value::integer(static_cast<std::int64_t>(v.obj->items.size()));
          default: fail_at(at, std::string("object of type '") + type_name(v) + "' has no len()");
        }
      case FilterId::kUpper: return Value::string(ascii_upper(to_str(v)));
      case FilterId::kLower: return Value::string(ascii_lower(to_str(v)));
      case FilterId::kTitle: return Value::string(py_title(to_str(v)));
      case FilterId::kCapitalize: return Value::string(py_capitalize(to_str(v)));
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
          Value subject = by_attr ? attr_path(x, to_str(args.pos.empty() ? Value() : args.pos[0]), at) : x;
          bool r = args.pos.size() > test_pos ? run_named_test(args.pos[test_pos], subject, rest, at) : truthy(subject);
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
          if (!s.empty() && end == s.c_str() + s.size() && std::isfinite(f) && std::fabs(f) < 9.2e18) {
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
        return Value::string(py_replace(to_str(v), to_str(args.pos.size() > 0 ? args.pos[0] : Value()),
                                        to_str(args.pos.size() > 1 ? args.pos[1] : Value()), count));
      }
      case FilterId::kItems: {
        if (v.is_undefined()) return Value::array();
        if (!v.is_object()) fail_at(at, "items filter needs a mapping");
        std::vector<Value> items;
        for (const auto& [k, x] : v.obj->items) items.push_back(Value::array({Value::string(k), x}, true));
        return Value::array(std::move(items));
      }
      case FilterId::kIndent: {
        const Value* w = args.get(0, "width");
        const Value* first = args.get(1, "first");
        const Value* blank = args.get(2, "blank");
        std::string ind = "    ";
        if (w != nullptr) ind = w->is_string() ? w->str : std::string(static_cast<std::size_t>(std::clamp<std::int64_t>(need_int(w, "width", at), 0, 1024)), ' ');
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
        if (!as_int(v, i) || i == std::numeric_limits<std::int64_t>::min()) fail_at(at, "bad operand type for abs()");
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

  const Options& opts_;
  std::vector<Scope> scopes_;
  std::size_t base_ = 0;
  std::string out_;
  std::size_t depth_ = 0;
  std::size_t iterations_ = 0;
};

Value from_json(simdjson::dom::element e) {
  switch (e.type()) {
    case simdjson::dom::element_type::ARRAY: {
      std::vector<Value> items;
      for (simdjson::dom::element x : simdjson::dom::array(e)) items.push_back(from_json(x));
      return Value::array(std::move(items));
    }
    case simdjson::dom::element_type::OBJECT: {
      Value v = Value::object();
      for (simdjson::dom::key_value_pair kv : simdjson::dom::object(e)) {
        v.obj->set(std::string(kv.key), from_json(kv.value));
      }
      return v;
    }
    case simdjson::dom::element_type::INT64:
      return Value::integer(int64_t(e));
    case simdjson::dom::element_type::UINT64:
      return Value::floating(static_cast<double>(uint64_t(e)));
    case simdjson::dom::element_type::DOUBLE:
      return Value::floating(double(e));
    case simdjson::dom::element_type::STRING:
      return Value::string(std::string(std::string_view(e)));
    case simdjson::dom::element_type::BOOL:
      return Value::boolean(bool(e));
    case simdjson::dom::element_type::NULL_VALUE:
    default:
      return Value::none();
  }
}

}  // namespace

Result<ChatTemplate> ChatTemplate::compile(std::string_view source) { return compile(source, Options{}); }

Result<ChatTemplate> ChatTemplate::compile(std::string_view source, Options options) {
  ParseLimits limits;
  limits.max_depth = options.max_recursion_depth;
  limits.max_bytes = options.max_template_bytes;
  KVROUTE_TRY(auto root, parse_template(source, limits));
  auto program = std::make_shared<Program>();
  program->options = std::move(options);
  program->root = std::move(root);
  return ChatTemplate(std::move(program));
}

Result<std::string> ChatTemplate::render(std::string_view context_json) const {
  if (!program_) return fail(Error::internal("chat_template: render on an empty template"));
  Value context;
  {
    simdjson::dom::parser parser;
    simdjson::padded_string padded(context_json);
    simdjson::dom::element doc;
    if (auto err = parser.parse(padded).get(doc); err) {
      return fail(Error::invalid(std::string("chat_template: context is not valid JSON: ") + simdjson::error_message(err)));
    }
    if (doc.type() != simdjson::dom::element_type::OBJECT) {
      return fail(Error::invalid("chat_template: context must be a JSON object"));
    }
    context = from_json(doc);
  }
  try {
    Renderer renderer(program_->options, std::move(context));
    return renderer.run(*program_->root);
  } catch (const RenderError& e) {
    if (e.raised) return fail(Error::invalid(e.message));
    return fail(Error::invalid("chat_template: " + e.message));
  } catch (const std::bad_alloc&) {
    return fail(Error::invalid("chat_template: out of memory while rendering"));
  }
}

}  // namespace kvroute::chat_template
