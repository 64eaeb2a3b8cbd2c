// File: chat_template/internal/renderer.h
//
// The interpreter behind ChatTemplate::render(): a Renderer evaluates a compiled Node tree against
// a context. Its parts live in files of their own: statements, expressions and tests in
// renderer.cc, filters in filters.cc, methods of str/dict/list values and global functions in
// methods.cc, the Python string helpers they share in py_strings.cc. Runtime failures are thrown as
// RenderError and become Error values at the API boundary
// (docs/adr/0121-chat-template-internal-exceptions.md).
//
// Thread-safety: a Renderer is made per render() call and used by one thread; the helpers are pure.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "chat_template/chat_template.h"
#include "chat_template/internal/ast.h"

namespace kvroute::chat_template {

const std::unordered_map<std::string_view, TestId>& test_table();

namespace internal {

struct RenderError {
  std::string message;
  bool raised = false;  // raise_exception(): message is the template's own text
};

[[noreturn]] inline void fail_at(const Node& n, std::string msg) {
  throw RenderError{std::move(msg) + " (line " + std::to_string(n.line) + ")", false};
}

enum class Flow : std::uint8_t { kNormal, kBreak, kContinue };

Value method_value(Value receiver, std::string name);
Value global_value(std::string name);
const std::unordered_set<std::string_view>& str_methods();
const std::unordered_set<std::string_view>& dict_methods();
const std::unordered_set<std::string_view>& list_methods();
std::string ascii_upper(std::string s);
std::string ascii_lower(std::string s);
std::string py_title(const std::string& s);
std::string py_capitalize(const std::string& s);
std::vector<std::string> py_split_ws(std::string_view s, std::int64_t maxsplit);
std::vector<std::string> py_split(std::string_view s, std::string_view sep, std::int64_t maxsplit);
std::vector<std::string> py_rsplit(std::string_view s, std::string_view sep, std::int64_t maxsplit);
std::vector<std::string> py_splitlines(std::string_view s, bool keepends = false);
std::string py_replace(const std::string& s, const std::string& old, const std::string& repl,
                       std::int64_t count);
// Python slice index normalisation (PySlice_AdjustIndices).
std::vector<std::size_t> slice_indices(std::int64_t len, const Value* start, const Value* stop,
                                       const Value* step, const Node& at);
std::string escape_ascii_json(const std::string& s);
Value sorted_keys_copy(const Value& v);
std::string strftime_utc(const std::string& fmt, long long epoch);

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

  void emit(std::string_view s, const Node& n);

  void count_iteration(const Node& n);

  // Innermost scope first; inside a macro (base_ > 0) only the macro's own scopes, then the
  // template-level and context scopes are visible.
  // Innermost scope first; inside a macro (base_ > 0) only the macro's own scopes, then the
  // template-level and context scopes are visible.
  const Value* lookup(std::string_view name) const;

  void assign(const std::string& name, Value v);

  void assign_targets(const std::vector<std::string>& names, Value v, const Node& at);

  // ---- statements ----

  Flow exec_body(const Node& body);

  Flow exec(const Node& n);

  void exec_for(const Node& n);

  // ---- expressions ----

  std::vector<Value> iterate(const Value& v, const Node& at);

  [[noreturn]] void undefined_error(const Value& v, const Node& at);

  Value get_attr(const Value& obj, const std::string& name, const Node& at);

  Value get_item(const Value& obj, const Value& key, const Node& at);

  Value slice(const Value& obj, const Node& s, const Node& at);

  static bool as_int(const Value& v, std::int64_t& out);

  static bool as_double(const Value& v, double& out);

  [[noreturn]] void type_error(const char* op, const Value& a, const Value& b, const Node& at);

  Value binary(BinOp op, const Value& a, const Value& b, const Node& at);

  int compare_order(const Value& a, const Value& b, const char* op, const Node& at);

  bool contains(const Value& container, const Value& item, const Node& at);

  bool compare(CmpOp op, const Value& a, const Value& b, const Node& at);

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

  Args eval_args(const Node& n, std::size_t skip = 0);

  const std::string& need_str(const Value* v, const char* what, const Node& at);

  std::int64_t need_int(const Value* v, const char* what, const Node& at);

  Value call_method(const Value& m, const Args& args, const Node& at);

  Value call_global(const std::string& name, const Args& args, const Node& at);

  Value call_macro(const Node& m, const Args& args, const Node& at);

  Value eval(const Node& n);

  // ---- tests ----

  bool run_test(TestId id, const Value& v, const Args& args, const Node& at);

  bool run_named_test(const Value& name, const Value& subject, const Args& rest, const Node& at);

  Value attr_path(const Value& item, const std::string& path, const Node& at);

  // ---- filters ----

  Value apply_filter(const Node& n);

  const Options& opts_;
  std::vector<Scope> scopes_;
  std::size_t base_ = 0;
  std::string out_;
  std::size_t depth_ = 0;
  std::size_t iterations_ = 0;
};

}  // namespace internal
}  // namespace kvroute::chat_template
