// File: chat_template/internal/value.h
//
// Value: the dynamic value model of the chat-template interpreter (internal). It mirrors the Python
// objects Jinja2 sees when HF transformers renders a template: None, bool, int, float, str, list,
// dict (insertion-ordered), plus Jinja's Undefined, namespace() objects, bound methods and macros.
// Lists and dicts are shared by reference (copying a Value is cheap); values built from the render
// context are never mutated, only namespace objects are.
//
// Thread-safety: a Value is not synchronised; each render builds and owns its own values.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kvroute::chat_template {

struct Value;
struct Node;

struct Array {
  std::vector<Value> items;
  bool is_tuple = false;  // only affects repr: (a, b) instead of [a, b]
};

struct Object {
  std::vector<std::pair<std::string, Value>> items;  // insertion order, unique keys
  const Value* find(std::string_view key) const;
  Value* find(std::string_view key);
  void set(std::string key, Value v);
};

struct Value {
  enum class Kind : std::uint8_t {
    kUndefined,  // Jinja's default Undefined; str holds the missing name (for messages)
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kArray,
    kObject,     // a dict
    kNamespace,  // namespace(): attribute-assignable object (obj)
    kMethod,     // bound method: receiver in *self, method name in str
    kMacro,      // macro: node, defined in a template
  };
  Kind kind = Kind::kUndefined;
  bool b = false;
  std::int64_t i = 0;
  double f = 0;
  std::string str;
  std::shared_ptr<Array> arr;
  std::shared_ptr<Object> obj;
  std::shared_ptr<Value> self;
  const Node* macro = nullptr;

  static Value undefined(std::string name = {}) {
    Value v;
    v.str = std::move(name);
    return v;
  }
  static Value none() {
    Value v;
    v.kind = Kind::kNone;
    return v;
  }
  static Value boolean(bool x) {
    Value v;
    v.kind = Kind::kBool;
    v.b = x;
    return v;
  }
  static Value integer(std::int64_t x) {
    Value v;
    v.kind = Kind::kInt;
    v.i = x;
    return v;
  }
  static Value floating(double x) {
    Value v;
    v.kind = Kind::kFloat;
    v.f = x;
    return v;
  }
  static Value string(std::string s) {
    Value v;
    v.kind = Kind::kString;
    v.str = std::move(s);
    return v;
  }
  static Value array(std::vector<Value> items = {}, bool tuple = false) {
    Value v;
    v.kind = Kind::kArray;
    v.arr = std::make_shared<Array>();
    v.arr->items = std::move(items);
    v.arr->is_tuple = tuple;
    return v;
  }
  static Value object() {
    Value v;
    v.kind = Kind::kObject;
    v.obj = std::make_shared<Object>();
    return v;
  }

  bool is_undefined() const { return kind == Kind::kUndefined; }
  bool is_none() const { return kind == Kind::kNone; }
  bool is_string() const { return kind == Kind::kString; }
  bool is_array() const { return kind == Kind::kArray; }
  bool is_object() const { return kind == Kind::kObject; }
  bool is_number() const {
    return kind == Kind::kInt || kind == Kind::kFloat || kind == Kind::kBool;
  }
};

// Python truthiness.
bool truthy(const Value& v);
// Python ==, across int/float/bool like Python (1 == 1.0 == True); Undefined == Undefined.
bool equals(const Value& a, const Value& b);
// str(v) as Jinja prints it ({{ v }}): Undefined prints "", None "None", lists/dicts as repr.
std::string to_str(const Value& v);
// repr(v) as Python writes it.
void append_repr(std::string& out, const Value& v);
// Python float repr ("1.0", "1e-05", "1e+16").
std::string float_repr(double d);
// json.dumps(v, ensure_ascii=False, indent=indent, separators=...). indent < 0: none.
// Returns false (with a message) for values JSON cannot hold (Undefined, namespace, ...).
bool to_json(std::string& out, const Value& v, int indent, std::string_view item_sep,
             std::string_view key_sep, std::string& error, int depth = 0);
// Python type name for messages ("str", "list", "dict", ...).
const char* type_name(const Value& v);

// UTF-8 helpers with Python str semantics (indices count code points).
std::size_t utf8_length(std::string_view s);
std::vector<std::string_view> utf8_chars(std::string_view s);
bool is_py_space(std::uint32_t cp);
// Decodes the code point at s[pos] (invalid bytes decode as themselves); advances pos.
std::uint32_t utf8_next(std::string_view s, std::size_t& pos);
std::string py_strip(std::string_view s, const std::string* chars, bool left, bool right);

}  // namespace kvroute::chat_template
