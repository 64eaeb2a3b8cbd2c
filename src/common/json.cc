#include "common/json.h"

#include <array>
#include <cstddef>

namespace kvroute {
namespace {

// Appends the ASCII byte `c` escaped for a JSON string.
inline void append_escaped_ascii(std::string& out, unsigned char c) {
  static constexpr char kHex[] = "0123456789abcdef";
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
    default:
      if (c < 0x20) {
        out += "\\u00";
        out += kHex[c >> 4];
        out += kHex[c & 15];
      } else {
        out += static_cast<char>(c);
      }
  }
}

// ASCII bytes copied as they are: printable (DEL included) other than '"' and '\'.
constexpr std::array<bool, 256> make_plain_table() {
  std::array<bool, 256> t{};
  for (int c = 0x20; c < 0x80; ++c) t[static_cast<std::size_t>(c)] = c != '"' && c != '\\';
  return t;
}
constexpr auto kPlain = make_plain_table();

// The length of the well-formed UTF-8 sequence at s[i] (a byte >= 0x80), or 0 with `skip` the
// length of its maximal subpart: the lead byte and the continuation bytes that fit it before the
// first that does not (or the end of `s`), which one U+FFFD replaces (Unicode table 3-7).
std::size_t utf8_sequence(std::string_view s, std::size_t i, std::size_t& skip) {
  const auto c = static_cast<unsigned char>(s[i]);
  std::size_t len = 0;
  unsigned char lo = 0x80, hi = 0xbf;  // the range of the second byte
  if (c >= 0xc2 && c <= 0xdf) {
    len = 2;
  } else if (c >= 0xe0 && c <= 0xef) {
    len = 3;
    if (c == 0xe0) lo = 0xa0;  // overlong below U+0800
    if (c == 0xed) hi = 0x9f;  // surrogates
  } else if (c >= 0xf0 && c <= 0xf4) {
    len = 4;
    if (c == 0xf0) lo = 0x90;  // overlong below U+10000
    if (c == 0xf4) hi = 0x8f;  // past U+10FFFF
  } else {
    skip = 1;  // a continuation byte, or C0, C1, F5..FF: never in UTF-8
    return 0;
  }
  for (std::size_t k = 1; k < len; ++k) {
    const std::size_t at = i + k;
    if (at >= s.size() || static_cast<unsigned char>(s[at]) < lo ||
        static_cast<unsigned char>(s[at]) > hi) {
      skip = k;
      return 0;
    }
    lo = 0x80;
    hi = 0xbf;
  }
  return len;
}

}  // namespace

void append_json_escaped(std::string& out, std::string_view s) {
  for (char ch : s) append_escaped_ascii(out, static_cast<unsigned char>(ch));
}

void append_json_escaped_valid_utf8(std::string& out, std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    std::size_t run = i;
    while (run < s.size() && kPlain[static_cast<unsigned char>(s[run])]) ++run;
    out.append(s.data() + i, run - i);
    i = run;
    if (i == s.size()) break;
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      append_escaped_ascii(out, c);
      ++i;
      continue;
    }
    std::size_t skip = 0;
    if (const std::size_t len = utf8_sequence(s, i, skip); len != 0) {
      out.append(s.data() + i, len);
      i += len;
    } else {
      out += "\\ufffd";
      i += skip;
    }
  }
}

}  // namespace kvroute
