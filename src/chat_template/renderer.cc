// Renderer: statements, expressions, calls of macros and tests (chat_template/internal/renderer.h).
#include "chat_template/internal/renderer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <limits>
#include <string>
#include <unordered_set>
#include <vector>

namespace kvroute::chat_template::internal {

void Renderer::emit(std::string_view s, const Node& n) {
  if (out_.size() + s.size() > opts_.max_output_bytes) {
    fail_at(n, "output exceeds the limit of " + std::to_string(opts_.max_output_bytes) + " bytes");
  }
  out_.append(s);
}

void Renderer::count_iteration(const Node& n) {
  if (++iterations_ > opts_.max_loop_iterations) fail_at(n, "loop iteration limit exceeded");
}

// Innermost scope first; inside a macro (base_ > 0) only the macro's own scopes, then the
// template-level and context scopes are visible.
const Value* Renderer::lookup(std::string_view name) const {
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

void Renderer::assign(const std::string& name, Value v) {
  Scope& s = scopes_.back();
  for (auto& [n, old] : s) {
    if (n == name) {
      old = std::move(v);
      return;
    }
  }
  s.emplace_back(name, std::move(v));
}

void Renderer::assign_targets(const std::vector<std::string>& names, Value v, const Node& at) {
  if (names.size() == 1) {
    assign(names[0], std::move(v));
    return;
  }
  std::vector<Value> items = iterate(v, at);
  if (items.size() != names.size()) {
    fail_at(at, "cannot unpack " + std::to_string(items.size()) + " values into " +
                    std::to_string(names.size()));
  }
  for (std::size_t k = 0; k < names.size(); ++k) assign(names[k], std::move(items[k]));
}

Flow Renderer::exec_body(const Node& body) {
  for (const auto& st : body.list) {
    Flow f = exec(*st);
    if (f != Flow::kNormal) return f;
  }
  return Flow::kNormal;
}

Flow Renderer::exec(const Node& n) {
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

void Renderer::exec_for(const Node& n) {
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
    L.emplace_back("previtem",
                   k > 0 ? items[static_cast<std::size_t>(k - 1)] : Value::undefined("previtem"));
    L.emplace_back("nextitem", k + 1 < len ? items[static_cast<std::size_t>(k + 1)]
                                           : Value::undefined("nextitem"));
    L.emplace_back("depth", Value::integer(1));
    L.emplace_back("depth0", Value::integer(0));
    scopes_.back().emplace_back("loop", std::move(loop));
    assign_targets(n.names, items[static_cast<std::size_t>(k)], n);
    Flow f = exec_body(*n.c);
    scopes_.pop_back();
    if (f == Flow::kBreak) break;
  }
}

std::vector<Value> Renderer::iterate(const Value& v, const Node& at) {
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

[[noreturn]] void Renderer::undefined_error(const Value& v, const Node& at) {
  if (v.str.empty()) fail_at(at, "value is undefined");
  fail_at(at, "'" + v.str + "' is undefined");
}

Value Renderer::get_attr(const Value& obj, const std::string& name, const Node& at) {
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

Value Renderer::get_item(const Value& obj, const Value& key, const Node& at) {
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
      if (idx >= 0 && idx < len)
        return Value::string(std::string(chars[static_cast<std::size_t>(idx)]));
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

Value Renderer::slice(const Value& obj, const Node& s, const Node& at) {
  if (obj.is_undefined()) undefined_error(obj, at);
  Value start = s.a ? eval(*s.a) : Value::none();
  Value stop = s.b ? eval(*s.b) : Value::none();
  Value step = s.c ? eval(*s.c) : Value::none();
  if (obj.is_array()) {
    auto idx =
        slice_indices(static_cast<std::int64_t>(obj.arr->items.size()), &start, &stop, &step, at);
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

bool Renderer::as_int(const Value& v, std::int64_t& out) {
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

bool Renderer::as_double(const Value& v, double& out) {
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

[[noreturn]] void Renderer::type_error(const char* op, const Value& a, const Value& b,
                                       const Node& at) {
  if (a.is_undefined()) undefined_error(a, at);
  if (b.is_undefined()) undefined_error(b, at);
  fail_at(at, std::string("unsupported operand type(s) for ") + op + ": '" + type_name(a) +
                  "' and '" + type_name(b) + "'");
}

Value Renderer::binary(BinOp op, const Value& a, const Value& b, const Node& at) {
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
      for (std::int64_t k = 0; k < times; ++k)
        items.insert(items.end(), seq->arr->items.begin(), seq->arr->items.end());
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
        if (ia == std::numeric_limits<std::int64_t>::min() && ib == -1)
          fail_at(at, "integer overflow");
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

int Renderer::compare_order(const Value& a, const Value& b, const char* op, const Node& at) {
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
      if (!equals(a.arr->items[k], b.arr->items[k]))
        return compare_order(a.arr->items[k], b.arr->items[k], op, at);
    }
    return a.arr->items.size() < b.arr->items.size()   ? -1
           : a.arr->items.size() > b.arr->items.size() ? 1
                                                       : 0;
  }
  if (a.is_undefined()) undefined_error(a, at);
  if (b.is_undefined()) undefined_error(b, at);
  fail_at(at, std::string("'") + op + "' not supported between instances of '" + type_name(a) +
                  "' and '" + type_name(b) + "'");
}

bool Renderer::contains(const Value& container, const Value& item, const Node& at) {
  switch (container.kind) {
    case Value::Kind::kUndefined:
      return false;
    case Value::Kind::kString:
      if (!item.is_string()) {
        if (item.is_undefined()) undefined_error(item, at);
        fail_at(at, std::string("'in <string>' requires string as left operand, not ") +
                        type_name(item));
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

bool Renderer::compare(CmpOp op, const Value& a, const Value& b, const Node& at) {
  switch (op) {
    case CmpOp::kEq:
      return equals(a, b);
    case CmpOp::kNe:
      return !equals(a, b);
    case CmpOp::kLt:
      return compare_order(a, b, "<", at) < 0;
    case CmpOp::kLe:
      return compare_order(a, b, "<=", at) <= 0;
    case CmpOp::kGt:
      return compare_order(a, b, ">", at) > 0;
    case CmpOp::kGe:
      return compare_order(a, b, ">=", at) >= 0;
    case CmpOp::kIn:
      return contains(b, a, at);
    case CmpOp::kNotIn:
      return !contains(b, a, at);
  }
  return false;
}

Renderer::Args Renderer::eval_args(const Node& n, std::size_t skip) {
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

const std::string& Renderer::need_str(const Value* v, const char* what, const Node& at) {
  if (v == nullptr || !v->is_string()) {
    if (v != nullptr && v->is_undefined()) undefined_error(*v, at);
    fail_at(at, std::string(what) + " must be a string");
  }
  return v->str;
}

std::int64_t Renderer::need_int(const Value* v, const char* what, const Node& at) {
  std::int64_t x = 0;
  if (v == nullptr || !as_int(*v, x)) fail_at(at, std::string(what) + " must be an integer");
  return x;
}

Value Renderer::call_macro(const Node& m, const Args& args, const Node& at) {
  if (args.pos.size() > m.names.size())
    fail_at(at, "macro '" + m.name + "' takes not more than " + std::to_string(m.names.size()) +
                    " argument(s)");
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

Value Renderer::eval(const Node& n) {
  Depth guard(*this, n);
  switch (n.kind) {
    case NodeKind::kLiteral:
      return n.literal;
    case NodeKind::kName: {
      if (const Value* v = lookup(n.name)) return *v;
      static const std::unordered_set<std::string_view> kGlobals = {
          "range", "namespace", "raise_exception", "strftime_now", "dict"};
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
      if (n.kind == NodeKind::kPos && v.is_number())
        return v.kind == Value::Kind::kBool ? Value::integer(v.b) : v;
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

bool Renderer::run_test(TestId id, const Value& v, const Args& args, const Node& at) {
  const Value* arg = args.get(0, "other");
  auto need_arg = [&]() -> const Value& {
    if (arg == nullptr) fail_at(at, "test '" + at.name + "' needs an argument");
    return *arg;
  };
  switch (id) {
    case TestId::kDefined:
      return !v.is_undefined();
    case TestId::kUndefined:
      return v.is_undefined();
    case TestId::kNone:
      return v.is_none();
    case TestId::kString:
      return v.is_string();
    case TestId::kMapping:
      return v.is_object();
    case TestId::kIterable:
      return v.is_undefined() || v.is_string() || v.is_array() || v.is_object();
    case TestId::kSequence:
      return v.is_undefined() || v.is_string() || v.is_array() || v.is_object();
    case TestId::kNumber:
      return v.is_number();
    case TestId::kInteger:
      return v.kind == Value::Kind::kInt;
    case TestId::kFloat:
      return v.kind == Value::Kind::kFloat;
    case TestId::kBoolean:
      return v.kind == Value::Kind::kBool;
    case TestId::kTrue:
      return v.kind == Value::Kind::kBool && v.b;
    case TestId::kFalse:
      return v.kind == Value::Kind::kBool && !v.b;
    case TestId::kEq:
      return equals(v, need_arg());
    case TestId::kNe:
      return !equals(v, need_arg());
    case TestId::kLt:
      return compare_order(v, need_arg(), "<", at) < 0;
    case TestId::kLe:
      return compare_order(v, need_arg(), "<=", at) <= 0;
    case TestId::kGt:
      return compare_order(v, need_arg(), ">", at) > 0;
    case TestId::kGe:
      return compare_order(v, need_arg(), ">=", at) >= 0;
    case TestId::kIn:
      return contains(need_arg(), v, at);
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
    case TestId::kCallable:
      return v.kind == Value::Kind::kMethod || v.kind == Value::Kind::kMacro;
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
        case Value::Kind::kBool:
          return v.b == o.b;
        case Value::Kind::kArray:
          return v.arr == o.arr;
        case Value::Kind::kObject:
        case Value::Kind::kNamespace:
          return v.obj == o.obj;
        default:
          return equals(v, o);
      }
    }
  }
  return false;
}

bool Renderer::run_named_test(const Value& name, const Value& subject, const Args& rest,
                              const Node& at) {
  if (!name.is_string()) fail_at(at, "test name must be a string");
  auto it = test_table().find(name.str);
  if (it == test_table().end()) fail_at(at, "unsupported test '" + name.str + "'");
  return run_test(it->second, subject, rest, at);
}

Value Renderer::attr_path(const Value& item, const std::string& path, const Node& at) {
  Value cur = item;
  std::size_t start = 0;
  while (true) {
    std::size_t dot = path.find('.', start);
    std::string part =
        path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) {
      return std::isdigit(static_cast<unsigned char>(c));
    });
    if (numeric) {
      cur = get_item(cur, Value::integer(std::strtoll(part.c_str(), nullptr, 10)), at);
    } else {
      cur = get_item(cur, Value::string(part), at);
    }
    if (dot == std::string::npos) return cur;
    start = dot + 1;
  }
}

}  // namespace kvroute::chat_template::internal
