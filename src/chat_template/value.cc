#include "chat_template/internal/value.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace kvroute::chat_template {

const Value* Object::find(std::string_view key) const {
  for (const auto& [k, v] : items) {
    if (k == key) return &v;
  }
  return nullptr;
}

Value* Object::find(std::string_view key) {
  for (auto& [k, v] : items) {
    if (k == key) return &v;
  }
  return nullptr;
}

void Object::set(std::string key, Value v) {
  if (Value* existing = find(key)) {
    *existing = std::move(v);
    return;
  }
  items.emplace_back(std::move(key), std::move(v));
}

bool truthy(const Value& v) {
  switch (v.kind) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      return false;
    case Value::Kind::kBool:
      return v.b;
    case Value::Kind::kInt:
      return v.i != 0;
    case Value::Kind::kFloat:
      return v.f != 0;
    case Value::Kind::kString:
      return !v.str.empty();
    case Value::Kind::kArray:
      return !v.arr->items.empty();
    case Value::Kind::kObject:
      return !v.obj->items.empty();
    default:
      return true;
  }
}

namespace {

bool numeric(const Value& v, double& d, bool& is_int, std::int64_t& i) {
  switch (v.kind) {
    case Value::Kind::kBool:
      is_int = true;
      i = v.b ? 1 : 0;
      d = static_cast<double>(i);
      return true;
    case Value::Kind::kInt:
      is_int = true;
      i = v.i;
      d = static_cast<double>(i);
      return true;
    case Value::Kind::kFloat:
      is_int = false;
      d = v.f;
      return true;
    default:
      return false;
  }
}

}  // namespace

bool equals(const Value& a, const Value& b) {
  double da = 0, db = 0;
  bool ia = false, ib = false;
  std::int64_t xa = 0, xb = 0;
  if (numeric(a, da, ia, xa) && numeric(b, db, ib, xb)) {
    if (ia && ib) return xa == xb;
    return da == db;
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      return true;
    case Value::Kind::kString:
      return a.str == b.str;
    case Value::Kind::kArray: {
      if (a.arr == b.arr) return true;
      if (a.arr->items.size() != b.arr->items.size()) return false;
      if (a.arr->is_tuple != b.arr->is_tuple) return false;
      for (std::size_t k = 0; k < a.arr->items.size(); ++k) {
        if (!equals(a.arr->items[k], b.arr->items[k])) return false;
      }
      return true;
    }
    case Value::Kind::kObject: {
      if (a.obj == b.obj) return true;
      if (a.obj->items.size() != b.obj->items.size()) return false;
      for (const auto& [k, v] : a.obj->items) {
        const Value* other = b.obj->find(k);
        if (other == nullptr || !equals(v, *other)) return false;
      }
      return true;
    }
    case Value::Kind::kNamespace:
      return a.obj == b.obj;
    case Value::Kind::kMethod:
      return a.str == b.str && a.self == b.self;
    case Value::Kind::kMacro:
      return a.macro == b.macro;
    default:
      return false;
  }
}

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  bool neg = false;
  std::size_t p = 0;
  if (sci[0] == '-') {
    neg = true;
    p = 1;
  }
  std::size_t e_pos = sci.find('e');
  std::string digits;
  for (std::size_t k = p; k < e_pos; ++k) {
    if (sci[k] != '.') digits += sci[k];
  }
  int exp = std::atoi(sci.c_str() + e_pos + 1);
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  std::string out = neg ? "-" : "";
  int decpt = exp + 1;
  if (d == 0) decpt = 1;
  if (decpt > -4 && decpt <= 16) {
    if (decpt <= 0) {
      out += "0.";
      out.append(static_cast<std::size_t>(-decpt), '0');
      out += digits;
    } else if (static_cast<std::size_t>(decpt) >= digits.size()) {
      out += digits;
      out.append(static_cast<std::size_t>(decpt) - digits.size(), '0');
      out += ".0";
    } else {
      out += digits.substr(0, static_cast<std::size_t>(decpt));
      out += '.';
      out += digits.substr(static_cast<std::size_t>(decpt));
    }
    return out;
  }
  out += digits[0];
  if (digits.size() > 1) {
    out += '.';
    out += digits.substr(1);
  }
  char ebuf[16];
  std::snprintf(ebuf, sizeof ebuf, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
  out += ebuf;
  return out;
}

std::uint32_t utf8_next(std::string_view s, std::size_t& pos) {
  auto c = static_cast<unsigned char>(s[pos]);
  int len = 1;
  std::uint32_t cp = c;
  if (c >= 0xF0 && c < 0xF8) {
    len = 4;
    cp = c & 0x07;
  } else if (c >= 0xE0) {
    len = c < 0xF0 ? 3 : 1;
    cp = c & 0x0F;
  } else if (c >= 0xC0) {
    len = 2;
    cp = c & 0x1F;
  }
  if (len == 1 || pos + static_cast<std::size_t>(len) > s.size()) {
    ++pos;
    return c;
  }
  for (int k = 1; k < len; ++k) {
    auto cc = static_cast<unsigned char>(s[pos + static_cast<std::size_t>(k)]);
    if ((cc & 0xC0) != 0x80) {
      ++pos;
      return c;
    }
    cp = (cp << 6) | (cc & 0x3F);
  }
  pos += static_cast<std::size_t>(len);
  return cp;
}

std::size_t utf8_length(std::string_view s) {
  std::size_t n = 0;
  for (std::size_t pos = 0; pos < s.size(); ++n) utf8_next(s, pos);
  return n;
}

std::vector<std::string_view> utf8_chars(std::string_view s) {
  std::vector<std::string_view> out;
  std::size_t pos = 0;
  while (pos < s.size()) {
    std::size_t start = pos;
    utf8_next(s, pos);
    out.push_back(s.substr(start, pos - start));
  }
  return out;
}

bool is_py_space(std::uint32_t cp) {
  if (cp >= 0x09 && cp <= 0x0D) return true;
  if (cp >= 0x1C && cp <= 0x20) return true;
  switch (cp) {
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

std::string py_strip(std::string_view s, const std::string* chars, bool left, bool right) {
  std::vector<std::uint32_t> set;
  if (chars != nullptr) {
    for (std::size_t p = 0; p < chars->size();) set.push_back(utf8_next(*chars, p));
  }
  auto strip_cp = [&](std::uint32_t cp) {
    if (chars == nullptr) return is_py_space(cp);
    for (std::uint32_t c : set) {
      if (c == cp) return true;
    }
    return false;
  };
  std::size_t begin = 0;
  std::size_t end = s.size();
  if (left) {
    while (begin < end) {
      std::size_t p = begin;
      std::uint32_t cp = utf8_next(s, p);
      if (!strip_cp(cp)) break;
      begin = p;
    }
  }
  if (right) {
    while (end > begin) {
      std::size_t start = end - 1;
      while (start > begin && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
      std::size_t p = start;
      std::uint32_t cp = utf8_next(s, p);
      if (p != end) {  // invalid sequence: treat the last byte alone
        start = end - 1;
        cp = static_cast<unsigned char>(s[start]);
      }
      if (!strip_cp(cp)) break;
      end = start;
    }
  }
  return std::string(s.substr(begin, end - begin));
}

namespace {

bool py_printable(std::uint32_t cp) {
  // Approximation of str.isprintable(): controls, C1 controls, NBSP-class separators and the
  // line/paragraph separators are escaped by repr(); the rest of Unicode is printed as is.
  if (cp < 0x20 || cp == 0x7F) return false;
  if (cp >= 0x80 && cp <= 0xA0) return false;
  if (cp == 0xAD) return false;
  if (cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200F) || (cp >= 0x2028 && cp <= 0x202F))
    return false;
  if (cp >= 0x205F && cp <= 0x206F) return false;
  if (cp == 0x3000 || cp == 0xFEFF) return false;
  if (cp >= 0xD800 && cp <= 0xDFFF) return false;
  if (cp >= 0xE000 && cp <= 0xF8FF) return false;
  return true;
}

void append_string_repr(std::string& out, std::string_view s) {
  char quote = '\'';
  if (s.find('\'') != std::string_view::npos && s.find('"') == std::string_view::npos) quote = '"';
  out += quote;
  for (std::size_t pos = 0; pos < s.size();) {
    std::size_t start = pos;
    std::uint32_t cp = utf8_next(s, pos);
    char buf[16];
    if (cp == static_cast<std::uint32_t>(quote) || cp == '\\') {
      out += '\\';
      out += static_cast<char>(cp);
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (py_printable(cp)) {
      out.append(s.substr(start, pos - start));
    } else if (cp <= 0xFF) {
      std::snprintf(buf, sizeof buf, "\\x%02x", cp);
      out += buf;
    } else if (cp <= 0xFFFF) {
      std::snprintf(buf, sizeof buf, "\\u%04x", cp);
      out += buf;
    } else {
      std::snprintf(buf, sizeof buf, "\\U%08x", cp);
      out += buf;
    }
  }
  out += quote;
}

void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

}  // namespace

void append_repr(std::string& out, const Value& v) {
  switch (v.kind) {
    case Value::Kind::kString:
      append_string_repr(out, v.str);
      return;
    case Value::Kind::kArray: {
      bool tuple = v.arr->is_tuple;
      out += tuple ? '(' : '[';
      bool first = true;
      for (const Value& item : v.arr->items) {
        if (!first) out += ", ";
        first = false;
        append_repr(out, item);
      }
      if (tuple && v.arr->items.size() == 1) out += ',';
      out += tuple ? ')' : ']';
      return;
    }
    case Value::Kind::kObject: {
      out += '{';
      bool first = true;
      for (const auto& [k, item] : v.obj->items) {
        if (!first) out += ", ";
        first = false;
        append_string_repr(out, k);
        out += ": ";
        append_repr(out, item);
      }
      out += '}';
      return;
    }
    case Value::Kind::kUndefined:
      out += "Undefined";
      return;
    default:
      out += to_str(v);
  }
}

std::string to_str(const Value& v) {
  switch (v.kind) {
    case Value::Kind::kUndefined:
      return "";
    case Value::Kind::kNone:
      return "None";
    case Value::Kind::kBool:
      return v.b ? "True" : "False";
    case Value::Kind::kInt:
      return std::to_string(v.i);
    case Value::Kind::kFloat:
      return float_repr(v.f);
    case Value::Kind::kString:
      return v.str;
    case Value::Kind::kArray:
    case Value::Kind::kObject: {
      std::string out;
      append_repr(out, v);
      return out;
    }
    case Value::Kind::kNamespace:
      return "<Namespace>";
    case Value::Kind::kMethod:
      return "<built-in method " + v.str + ">";
    case Value::Kind::kMacro:
      return "<Macro>";
  }
  return "";
}

bool to_json(std::string& out, const Value& v, int indent, std::string_view item_sep,
             std::string_view key_sep, std::string& error, int depth) {
  if (depth > 512) {
    error = "tojson: nesting too deep";
    return false;
  }
  auto newline = [&](int level) {
    out += '\n';
    out.append(static_cast<std::size_t>(indent) * static_cast<std::size_t>(level), ' ');
  };
  switch (v.kind) {
    case Value::Kind::kNone:
      out += "null";
      return true;
    case Value::Kind::kBool:
      out += v.b ? "true" : "false";
      return true;
    case Value::Kind::kInt:
      out += std::to_string(v.i);
      return true;
    case Value::Kind::kFloat:
      if (std::isnan(v.f)) {
        out += "NaN";
      } else if (std::isinf(v.f)) {
        out += v.f > 0 ? "Infinity" : "-Infinity";
      } else {
        out += float_repr(v.f);
      }
      return true;
    case Value::Kind::kString:
      append_json_string(out, v.str);
      return true;
    case Value::Kind::kArray: {
      if (v.arr->items.empty()) {
        out += "[]";
        return true;
      }
      out += '[';
      bool first = true;
      for (const Value& item : v.arr->items) {
        if (!first) out += item_sep;
        first = false;
        if (indent >= 0) newline(depth + 1);
        if (!to_json(out, item, indent, item_sep, key_sep, error, depth + 1)) return false;
      }
      if (indent >= 0) newline(depth);
      out += ']';
      return true;
    }
    case Value::Kind::kObject: {
      if (v.obj->items.empty()) {
        out += "{}";
        return true;
      }
      out += '{';
      bool first = true;
      for (const auto& [k, item] : v.obj->items) {
        if (!first) out += item_sep;
        first = false;
        if (indent >= 0) newline(depth + 1);
        append_json_string(out, k);
        out += key_sep;
        if (!to_json(out, item, indent, item_sep, key_sep, error, depth + 1)) return false;
      }
      if (indent >= 0) newline(depth);
      out += '}';
      return true;
    }
    default:
      error = std::string("Object of type ") + type_name(v) + " is not JSON serializable";
      return false;
  }
}

const char* type_name(const Value& v) {
  switch (v.kind) {
    case Value::Kind::kUndefined:
      return "Undefined";
    case Value::Kind::kNone:
      return "NoneType";
    case Value::Kind::kBool:
      return "bool";
    case Value::Kind::kInt:
      return "int";
    case Value::Kind::kFloat:
      return "float";
    case Value::Kind::kString:
      return "str";
    case Value::Kind::kArray:
      return v.arr->is_tuple ? "tuple" : "list";
    case Value::Kind::kObject:
      return "dict";
    case Value::Kind::kNamespace:
      return "Namespace";
    case Value::Kind::kMethod:
      return "builtin_function_or_method";
    case Value::Kind::kMacro:
      return "Macro";
  }
  return "object";
}

}  // namespace kvroute::chat_template
