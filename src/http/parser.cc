#include "http/internal/parser.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>

namespace kvroute::http {
namespace {

constexpr std::array<bool, 256> make_token_table() {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[static_cast<std::size_t>(c)] = true;
  for (int c = 'a'; c <= 'z'; ++c) t[static_cast<std::size_t>(c)] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[static_cast<std::size_t>(c)] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) t[static_cast<unsigned char>(c)] = true;
  return t;
}
constexpr auto kToken = make_token_table();

// Request targets: visible characters and obs-text; no spaces or control characters.
bool is_target(std::string_view s) {
  if (s.empty()) return false;
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c == 0x7f) return false;
  }
  return true;
}

bool parse_decimal(std::string_view s, std::uint64_t& out) {
  if (s.empty() || s.size() > 18) return false;
  std::uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  out = v;
  return true;
}

ParseResult bad(std::string_view why) { return {ParseStatus::kBad, 0, why}; }

constexpr std::size_t kMaxChunkLine = 4096;
constexpr std::uint64_t kFramingSlack = 64 * 1024;
constexpr std::size_t kMaxLeadingBlankLines = 8;

// Finds the end of a head within `max_header_bytes`: kDone with `consumed` just past its blank
// line, kIncomplete, kHeadersTooLarge (`too_large` says whose), or kBad at a bare LF. `start`
// skips leading blank lines; `searched` bytes were already searched by an earlier call.
ParseResult locate_head(std::string_view data, std::size_t start, std::size_t searched,
                        std::size_t max_header_bytes, std::string_view too_large) {
  const auto end = data.find("\r\n\r\n", std::max(start, searched >= 3 ? searched - 3 : 0));
  const std::size_t size = end == std::string_view::npos ? data.size() : end + 4;
  if (size > max_header_bytes) return {ParseStatus::kHeadersTooLarge, 0, too_large};
  if (end != std::string_view::npos) return {ParseStatus::kDone, end + 4, {}};
  // No end yet. A bare LF can be in no head the callers accept (a found head that holds one is
  // refused by its line checks), and a sender that ends its lines with LF alone never sends
  // CRLFCRLF: refuse it now instead of waiting for the timeout. Only the new bytes are searched;
  // each LF's CR, if any, is the byte before it.
  for (auto lf = data.find('\n', std::max(start, searched)); lf != std::string_view::npos;
       lf = data.find('\n', lf + 1)) {
    if (lf == 0 || data[lf - 1] != '\r') return bad("bare LF line ending");
  }
  return {ParseStatus::kIncomplete, 0, {}};
}

// Header fields: `fields` is every line after the start line, each ending with CRLF; `minor` is
// the message's HTTP/1.x minor version.
struct FieldSummary {
  bool have_length = false, chunked = false, expect_continue = false;
  bool persistent = false;  // the connection stays open after this message
  std::uint64_t length = 0;
};

struct FieldState {
  bool have_te = false, close = false, keep_alive = false;
};

// What one field means for framing and persistence. Only four names matter; their lengths tell
// them apart before any comparison.
ParseResult apply_field(std::string_view name, std::string_view value, FieldSummary& sum,
                        FieldState& st) {
  switch (name.size()) {
    case 14:
      if (iequals_lower(name, "content-length")) {
        std::uint64_t n = 0;
        if (!parse_decimal(value, n)) return bad("malformed Content-Length");
        if (sum.have_length && n != sum.length) return bad("conflicting Content-Length headers");
        sum.have_length = true;
        sum.length = n;
      }
      break;
    case 17:
      if (iequals_lower(name, "transfer-encoding")) {
        if (st.have_te) return bad("repeated Transfer-Encoding header");
        st.have_te = true;
        if (value.empty()) return bad("empty Transfer-Encoding");
        if (!iequals_lower(value, "chunked"))
          return {ParseStatus::kNotImplemented, 0, "unsupported transfer encoding"};
        sum.chunked = true;
      }
      break;
    case 10:
      if (iequals_lower(name, "connection")) {
        if (iequals_lower(value, "keep-alive")) {  // the usual value, without the list walk
          st.keep_alive = true;
        } else {
          st.close = st.close || header_list_has(value, "close");
          st.keep_alive = st.keep_alive || header_list_has(value, "keep-alive");
        }
      }
      break;
    case 6:
      if (iequals_lower(name, "expect")) sum.expect_continue = iequals_lower(value, "100-continue");
      break;
    default:
      break;
  }
  return {ParseStatus::kDone, 0, {}};
}

ParseResult finish_fields(int minor, FieldSummary& sum, const FieldState& st) {
  if (sum.have_length && sum.chunked) return bad("both Content-Length and Transfer-Encoding");
  // RFC 9112 section 6.1: Transfer-Encoding in an HTTP/1.0 message is faulty (a desync risk).
  if (minor == 0 && sum.chunked) return bad("Transfer-Encoding in an HTTP/1.0 message");
  sum.persistent = minor == 0 ? st.keep_alive && !st.close : !st.close;
  return {ParseStatus::kDone, 0, {}};
}

// Bytes allowed inside a field value: visible characters, obs-text, space and tab.
constexpr std::array<bool, 256> make_value_table() {
  std::array<bool, 256> t{};
  for (int c = 0x20; c < 0x100; ++c) t[static_cast<std::size_t>(c)] = c != 0x7f;
  t['\t'] = true;
  return t;
}
constexpr auto kValue = make_value_table();

// Where a field value that starts at `i` stops: the first byte kValue refuses (CR, normally).
// Eight bytes at a time: a byte below 0x20 or equal to 0x7f flags its word (SWAR; the lowest flag
// of each test is exact, later ones may be false), then a tab is stepped over.
static_assert(std::endian::native == std::endian::little, "value_end reads words little-endian");
std::size_t value_end(const char* p, std::size_t i, std::size_t n) {
  constexpr std::uint64_t kOnes = 0x0101010101010101ull, kHigh = 0x8080808080808080ull;
  while (i < n) {
    if (i + 8 <= n) {
      const std::uint64_t x = internal::load8(p + i);
      const std::uint64_t del = x ^ (0x7f * kOnes);
      const std::uint64_t flags = (((x - 0x20 * kOnes) & ~x) | ((del - kOnes) & ~del)) & kHigh;
      if (flags == 0) {
        i += 8;
        continue;
      }
      i += static_cast<std::size_t>(std::countr_zero(flags)) / 8;
      if (p[i] != '\t') return i;
    } else if (!kValue[static_cast<unsigned char>(p[i])]) {
      return i;
    }
    ++i;
  }
  return i;
}

// The line-by-line parse, which names what is wrong. Runs only when parse_fields' single pass
// met something it does not expect.
ParseResult parse_fields_checked(std::string_view fields, int minor, Headers& headers,
                                 FieldSummary& sum) {
  headers.adopt(fields);
  sum = FieldSummary{};
  const char* const base = fields.data();
  FieldState st;
  while (!fields.empty()) {
    const auto eol = fields.find("\r\n");
    const std::string_view line = fields.substr(0, eol);
    fields.remove_prefix(eol + 2);
    if (line.empty()) return bad("empty header line");
    // A bare CR or LF fails the name's token check or the value's control-character check.
    if (line.front() == ' ' || line.front() == '\t') return bad("obsolete header line folding");
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) return bad("header line without a colon");
    const std::string_view name = line.substr(0, colon);
    if (!is_token(name)) return bad("malformed header name");
    const std::string_view value = trim_ows(line.substr(colon + 1));
    if (!is_field_value(value)) return bad("control character in a header value");
    if (auto r = apply_field(name, value, sum, st); r.status != ParseStatus::kDone) return r;
    headers.add_parsed(static_cast<std::size_t>(name.data() - base), name.size(),
                       static_cast<std::size_t>(value.data() - base), value.size());
  }
  return finish_fields(minor, sum, st);
}

// Header fields: one pass over the bytes, a table lookup each (token characters up to the colon,
// value characters up to CRLF); anything unexpected hands the block to parse_fields_checked.
ParseResult parse_fields(std::string_view fields, int minor, Headers& headers, FieldSummary& sum) {
  // Every line ends with CRLF: the name scan below stops at the final LF without a bounds check.
  if (!fields.empty() && fields.back() != '\n')
    return parse_fields_checked(fields, minor, headers, sum);
  headers.adopt(fields);  // the block's bytes are copied once; fields are offsets into them
  const char* const p = fields.data();
  const std::size_t n = fields.size();
  FieldState st;
  std::size_t i = 0;
  while (i < n) {
    const std::size_t name_begin = i;
    while (kToken[static_cast<unsigned char>(p[i])]) ++i;  // LF is not a token character
    if (i == name_begin || i >= n || p[i] != ':')
      return parse_fields_checked(fields, minor, headers, sum);
    const std::size_t name_end = i++;
    while (i < n && (p[i] == ' ' || p[i] == '\t')) ++i;
    const std::size_t value_begin = i;
    i = value_end(p, i, n);
    if (i + 1 >= n || p[i] != '\r' || p[i + 1] != '\n')
      return parse_fields_checked(fields, minor, headers, sum);
    std::size_t value_end = i;
    while (value_end > value_begin && (p[value_end - 1] == ' ' || p[value_end - 1] == '\t'))
      --value_end;
    i += 2;
    const std::string_view name(p + name_begin, name_end - name_begin);
    const std::string_view value(p + value_begin, value_end - value_begin);
    if (auto r = apply_field(name, value, sum, st); r.status != ParseStatus::kDone) return r;
    headers.add_parsed(name_begin, name.size(), value_begin, value.size());
  }
  return finish_fields(minor, sum, st);
}

// "HTTP/1.1" -> 1, "HTTP/1.0" -> 0, else -1.
int minor_version(std::string_view v) {
  if (v == "HTTP/1.1") return 1;
  if (v == "HTTP/1.0") return 0;
  return -1;
}

}  // namespace

bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!kToken[static_cast<unsigned char>(c)]) return false;
  }
  return true;
}

// Field values: visible characters, obs-text, space and tab; no other control characters.
bool is_field_value(std::string_view s) {
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
  }
  return true;
}

namespace internal {
bool header_parsers_agree(std::string_view fields) {
  for (int minor : {0, 1}) {
    Headers fast, checked;
    FieldSummary a, b;
    const ParseResult ra = parse_fields(fields, minor, fast, a);
    const ParseResult rb = parse_fields_checked(fields, minor, checked, b);
    if (ra.status != rb.status || ra.error != rb.error) return false;
    if (ra.status != ParseStatus::kDone) continue;
    if (a.have_length != b.have_length || a.length != b.length || a.chunked != b.chunked ||
        a.expect_continue != b.expect_continue || a.persistent != b.persistent ||
        fast.size() != checked.size())
      return false;
    for (std::size_t i = 0; i < fast.size(); ++i) {
      if (fast[i] != checked[i]) return false;
    }
  }
  return true;
}
}  // namespace internal

ParseResult parse_request_head(std::string_view data, std::size_t max_header_bytes, Request& out,
                               BodyFraming& framing, std::size_t searched) {
  // Leading empty lines before a request are ignored (RFC 9112 section 2.2).
  std::size_t start = 0;
  for (std::size_t i = 0; i < kMaxLeadingBlankLines && data.substr(start, 2) == "\r\n"; ++i)
    start += 2;
  const ParseResult found =
      locate_head(data, start, searched, max_header_bytes, "request headers exceed the limit");
  if (found.status != ParseStatus::kDone) return found;
  const std::size_t end = found.consumed;
  std::string_view head = data.substr(start, end - 2 - start);  // every line ends with CRLF

  // Request line: method SP target SP version.
  const auto eol = head.find("\r\n");
  const std::string_view line = head.substr(0, eol);
  head.remove_prefix(eol + 2);
  const auto sp1 = line.find(' ');
  if (sp1 == std::string_view::npos) return bad("malformed request line");
  const auto sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) return bad("malformed request line");
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  if (!is_token(method)) return bad("malformed request method");
  if (!is_target(target)) return bad("malformed request target");
  const int minor = minor_version(line.substr(sp2 + 1));
  if (minor < 0) return bad("unsupported HTTP version");
  out.method.assign(method);
  out.target.assign(target);
  FieldSummary sum;
  if (auto r = parse_fields(head, minor, out.headers, sum); r.status != ParseStatus::kDone)
    return r;
  framing = BodyFraming{};
  framing.chunked = sum.chunked;
  framing.length = sum.chunked ? 0 : sum.length;
  framing.expect_continue = sum.expect_continue && minor == 1;  // HTTP/1.0 clients do not wait
  out.keep_alive = sum.persistent;
  return {ParseStatus::kDone, end, {}};
}

ParseResult parse_response_head(std::string_view data, std::size_t max_header_bytes,
                                ResponseHead& out, BodyFraming& framing, std::size_t searched) {
  const ParseResult found =
      locate_head(data, 0, searched, max_header_bytes, "response headers exceed the limit");
  if (found.status != ParseStatus::kDone) return found;
  const std::size_t end = found.consumed;
  std::string_view head = data.substr(0, end - 2);

  // Status line: version SP 3DIGIT SP reason (the reason may be empty, and its space absent).
  const auto eol = head.find("\r\n");
  const std::string_view line = head.substr(0, eol);
  head.remove_prefix(eol + 2);
  const int minor = minor_version(line.substr(0, 8));
  if (minor < 0) return bad("not an HTTP/1.x response");
  const std::string_view code = line.substr(8);
  if (code.size() < 4 || code[0] != ' ' || (code.size() > 4 && code[4] != ' '))
    return bad("malformed status line");
  int status = 0;
  for (std::size_t i = 1; i < 4; ++i) {
    if (code[i] < '0' || code[i] > '9') return bad("malformed status code");
    status = status * 10 + (code[i] - '0');
  }
  if (status < 100) return bad("malformed status code");
  if (!is_field_value(code.substr(4))) return bad("control character in the reason phrase");
  out.status = status;
  FieldSummary sum;
  if (auto r = parse_fields(head, minor, out.headers, sum); r.status != ParseStatus::kDone)
    return r;
  framing = BodyFraming{};
  // After 101 the connection speaks another protocol: never reused.
  out.keep_alive = status != 101 && sum.persistent;
  if (status < 200 || status == 204 || status == 304) {
    // No body, whatever the headers say.
  } else if (sum.chunked) {
    framing.chunked = true;
  } else if (sum.have_length) {
    framing.length = sum.length;
  } else {
    framing.until_close = true;
    out.keep_alive = false;
  }
  return {ParseStatus::kDone, end, {}};
}

ParseResult ChunkedDecoder::feed(std::string_view in, std::string& body, std::size_t limit) {
  std::size_t used = 0;
  for (;;) {
    std::string_view rest = in.substr(used);
    switch (state_) {
      case State::kDone:
        return {ParseStatus::kDone, used, {}};
      case State::kSize:
      case State::kTrailer: {
        const auto eol = rest.find("\r\n");
        if (eol == std::string_view::npos) {
          // A line of kMaxChunkLine bytes may be waiting for the LF after its CR.
          if (rest.size() > kMaxChunkLine + 1) return bad("chunk line too long");
          return {ParseStatus::kIncomplete, used, {}};
        }
        if (eol > kMaxChunkLine) return bad("chunk line too long");
        const std::string_view line = rest.substr(0, eol);
        used += eol + 2;
        // Size lines, extensions and trailers may not outgrow the data they frame (a stream of
        // 1-byte chunks with 4 KiB extensions, or endless trailers, would otherwise be unbounded).
        framing_bytes_ += eol + 2;
        if (framing_bytes_ > kFramingSlack + data_bytes_)
          return bad("chunk framing larger than its data");
        if (state_ == State::kTrailer) {
          if (line.empty()) {
            state_ = State::kDone;
          } else if (!is_field_value(line)) {
            return bad("control character in a chunk trailer");
          }
          continue;
        }
        std::uint64_t size = 0;
        std::size_t i = 0;
        for (; i < line.size(); ++i) {
          const char c = line[i];
          int d = -1;
          if (c >= '0' && c <= '9')
            d = c - '0';
          else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
          else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
          if (d < 0) break;
          if (i >= 15) return bad("chunk size too large");
          size = size * 16 + static_cast<std::uint64_t>(d);
        }
        if (i == 0) return bad("malformed chunk size");
        // Chunk extensions (";name=value") are allowed and ignored.
        const std::string_view ext = trim_ows(line.substr(i));
        if (!ext.empty() && (ext.front() != ';' || !is_field_value(ext)))
          return bad("malformed chunk size");
        if (size == 0) {
          state_ = State::kTrailer;
          continue;
        }
        if (size > limit || body.size() > limit - size)
          return {ParseStatus::kBodyTooLarge, used, "request body exceeds the limit"};
        remaining_ = size;
        state_ = State::kData;
        continue;
      }
      case State::kData: {
        if (rest.empty()) return {ParseStatus::kIncomplete, used, {}};
        const std::size_t n =
            rest.size() < remaining_ ? rest.size() : static_cast<std::size_t>(remaining_);
        body.append(rest.data(), n);
        used += n;
        data_bytes_ += n;
        remaining_ -= n;
        if (remaining_ == 0) state_ = State::kDataEnd;
        continue;
      }
      case State::kDataEnd: {
        if (rest.size() < 2) return {ParseStatus::kIncomplete, used, {}};
        if (rest.substr(0, 2) != "\r\n") return bad("chunk data not followed by CRLF");
        used += 2;
        state_ = State::kSize;
        continue;
      }
    }
  }
}

}  // namespace kvroute::http
