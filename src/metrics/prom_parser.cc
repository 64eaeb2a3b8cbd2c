#include "metrics/prom_parser.h"

#include <charconv>
#include <cmath>
#include <cstdlib>

namespace kvroute::metrics {

std::string_view Sample::label(std::string_view key) const {
  for (const auto& [k, v] : labels) {
    if (k == key) return v;
  }
  return {};
}

namespace {

bool name_char(char c, bool first) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
         (!first && c >= '0' && c <= '9');
}

bool parse_value(std::string_view s, double& out) {
  if (s == "+Inf" || s == "Inf") {
    out = INFINITY;
    return true;
  }
  if (s == "-Inf") {
    out = -INFINITY;
    return true;
  }
  if (s == "NaN") {
    out = NAN;
    return true;
  }
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

// Parses one sample line; false if malformed.
bool parse_line(std::string_view line, Sample& s) {
  std::size_t i = 0;
  while (i < line.size() && name_char(line[i], i == 0)) ++i;
  if (i == 0) return false;
  s.name.assign(line.substr(0, i));
  if (i < line.size() && line[i] == '{') {
    ++i;
    for (;;) {
      while (i < line.size() && (line[i] == ' ' || line[i] == ',')) ++i;
      if (i >= line.size()) return false;
      if (line[i] == '}') {
        ++i;
        break;
      }
      std::size_t k = i;
      while (i < line.size() && name_char(line[i], i == k)) ++i;
      if (i == k || i >= line.size() || line[i] != '=') return false;
      std::string key(line.substr(k, i - k));
      ++i;
      if (i >= line.size() || line[i] != '"') return false;
      ++i;
      std::string val;
      bool closed = false;
      while (i < line.size()) {
        char c = line[i++];
        if (c == '\\' && i < line.size()) {
          char e = line[i++];
          val += e == 'n' ? '\n' : e;
        } else if (c == '"') {
          closed = true;
          break;
        } else {
          val += c;
        }
      }
      if (!closed) return false;
      s.labels.emplace_back(std::move(key), std::move(val));
    }
  }
  while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
  std::size_t j = i;
  while (j < line.size() && line[j] != ' ' && line[j] != '\t') ++j;
  if (j == i) return false;
  return parse_value(line.substr(i, j - i), s.value);  // an optional timestamp may follow
}

}  // namespace

ParsedExposition parse_exposition(std::string_view text,
                                  const std::vector<std::string_view>& wanted) {
  ParsedExposition out;
  while (!text.empty()) {
    auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    if (line.empty() || line.front() == '#') continue;
    if (!wanted.empty()) {
      bool keep = false;
      for (auto w : wanted) {
        keep = keep || (line.starts_with(w) && line.size() > w.size() &&
                        (line[w.size()] == '{' || line[w.size()] == ' '));
      }
      if (!keep) continue;
    }
    Sample s;
    if (parse_line(line, s)) {
      out.samples.push_back(std::move(s));
    } else {
      ++out.malformed_lines;
    }
  }
  return out;
}

}  // namespace kvroute::metrics
