// Python str semantics the renderer shares: split, replace, title, slicing, JSON escapes, and the
// method tables (chat_template/internal/renderer.h).
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
      "strip",        "lstrip",    "rstrip",       "split",       "rsplit",     "startswith",
      "endswith",     "upper",     "lower",        "title",       "capitalize", "replace",
      "find",         "count",     "join",         "splitlines",  "isdigit",    "isalpha",
      "isalnum",      "isspace",   "islower",      "isupper",     "format",     "index",
      "rfind",        "zfill",     "center",       "ljust",       "rjust",      "casefold",
      "swapcase",     "partition", "rpartition",   "encode",      "expandtabs", "isdecimal",
      "isnumeric",    "istitle",   "isidentifier", "isprintable", "isascii",    "removeprefix",
      "removesuffix", "translate", "maketrans",    "format_map",  "rindex"};
  return kSet;
}

const std::unordered_set<std::string_view>& dict_methods() {
  static const std::unordered_set<std::string_view> kSet = {
      "items",   "keys",   "values", "get",        "copy",    "pop",
      "popitem", "update", "clear",  "setdefault", "fromkeys"};
  return kSet;
}

const std::unordered_set<std::string_view>& list_methods() {
  static const std::unordered_set<std::string_view> kSet = {"append", "extend",  "insert", "remove",
                                                            "pop",    "clear",   "index",  "count",
                                                            "sort",   "reverse", "copy"};
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

std::vector<std::string> py_rsplit(std::string_view s, std::string_view sep,
                                   std::int64_t maxsplit) {
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

std::vector<std::string> py_splitlines(std::string_view s, bool keepends) {
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

std::string py_replace(const std::string& s, const std::string& old, const std::string& repl,
                       std::int64_t count) {
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
std::vector<std::size_t> slice_indices(std::int64_t len, const Value* start, const Value* stop,
                                       const Value* step, const Node& at) {
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

}  // namespace kvroute::chat_template::internal
