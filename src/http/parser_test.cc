#include "http/internal/parser.h"

#include <gtest/gtest.h>

#include <cctype>
#include <string>

namespace kvroute::http {
namespace {

struct Parsed {
  ParseResult r;
  Request req;
  BodyFraming framing;
};

Parsed head(std::string_view data, std::size_t limit = 1024) {
  Parsed p;
  p.r = parse_request_head(data, limit, p.req, p.framing);
  return p;
}

TEST(RequestParser, HeadFieldsFramingAndPipelinedBytes) {
  const std::string next = "GET /health HTTP/1.1\r\n\r\n";
  const std::string data =
      "POST /v1/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Type:application/json \r\n"
      "Content-Length: 5\r\nX-Session-Id:  s1\r\n\r\nhello" +
      next;
  auto p = head(data);
  ASSERT_EQ(p.r.status, ParseStatus::kDone) << p.r.error;
  EXPECT_EQ(p.req.method, "POST");
  EXPECT_EQ(p.req.target, "/v1/completions?x=1");
  EXPECT_EQ(p.req.path(), "/v1/completions");
  EXPECT_EQ(p.req.header("content-type"), "application/json");
  EXPECT_EQ(p.req.header("x-session-id"), "s1");
  EXPECT_EQ(p.req.headers.size(), 4u);
  EXPECT_TRUE(p.req.keep_alive);
  EXPECT_FALSE(p.framing.chunked);
  EXPECT_EQ(p.framing.length, 5u);
  EXPECT_EQ(data.substr(p.r.consumed, 5), "hello");
  auto q = head(std::string_view(data).substr(p.r.consumed + 5));
  ASSERT_EQ(q.r.status, ParseStatus::kDone);
  EXPECT_EQ(q.req.method, "GET");
  EXPECT_EQ(q.framing.length, 0u);
}

TEST(RequestParser, IncompleteUntilTheBlankLineAndLinearWhenDripped) {
  const std::string data = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
  for (std::size_t n = 0; n < data.size(); ++n) {
    EXPECT_EQ(head(data.substr(0, n)).r.status, ParseStatus::kIncomplete) << n;
  }
  // Byte by byte with the searched hint: the end is still found across the boundary.
  Request req;
  BodyFraming f;
  std::size_t searched = 0;
  ParseResult r;
  for (std::size_t n = 1; n <= data.size(); ++n) {
    r = parse_request_head(std::string_view(data).substr(0, n), 1024, req, f, searched);
    if (r.status != ParseStatus::kIncomplete) break;
    searched = n;
  }
  EXPECT_EQ(r.status, ParseStatus::kDone);
  EXPECT_EQ(r.consumed, data.size());
  // Leading blank lines are skipped.
  EXPECT_EQ(head("\r\n\r\nGET / HTTP/1.1\r\n\r\n").r.status, ParseStatus::kDone);
}

TEST(RequestParser, KeepAliveByVersionAndConnection) {
  EXPECT_TRUE(head("GET / HTTP/1.1\r\n\r\n").req.keep_alive);
  EXPECT_FALSE(head("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").req.keep_alive);
  EXPECT_FALSE(head("GET / HTTP/1.1\r\nConnection: upgrade, close\r\n\r\n").req.keep_alive);
  EXPECT_FALSE(head("GET / HTTP/1.0\r\n\r\n").req.keep_alive);
  EXPECT_TRUE(head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").req.keep_alive);
}

TEST(RequestParser, LimitsAndUnsupportedCodings) {
  const std::string big = "GET / HTTP/1.1\r\nX: " + std::string(2000, 'a') + "\r\n\r\n";
  EXPECT_EQ(head(big).r.status, ParseStatus::kHeadersTooLarge);
  EXPECT_EQ(head(big.substr(0, 1500)).r.status, ParseStatus::kHeadersTooLarge);  // no end in sight
  EXPECT_EQ(head(big, 4096).r.status, ParseStatus::kDone);
  EXPECT_EQ(head("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").r.status,
            ParseStatus::kNotImplemented);
  auto c = head("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\nExpect: 100-continue\r\n\r\n");
  ASSERT_EQ(c.r.status, ParseStatus::kDone);
  EXPECT_TRUE(c.framing.chunked);
  EXPECT_TRUE(c.framing.expect_continue);
  // An HTTP/1.0 client does not wait for 100 Continue.
  EXPECT_FALSE(head("POST / HTTP/1.0\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n")
                   .framing.expect_continue);
}

TEST(RequestParser, RejectsWhatEnablesSmuggling) {
  for (const char* bad : {
           "GET / HTTP/1.1\nHost: a\r\n\r\n",          // bare LF in the request line
           "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",  // bare LF between fields
           "GET / HTTP/1.1\r\nHost : a\r\n\r\n",       // space before the colon
           "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",     // obsolete folding
           "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
           "GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",  // control character
           "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",  // conflicting
                                                                                 // lengths
           "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
           "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
           "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
           "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
           "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
           "GET /a b HTTP/1.1\r\n\r\n",  // space in the target
           "GET / HTTP/2.0\r\n\r\n",
           "GET /\r\n\r\n",
           "G(T / HTTP/1.1\r\n\r\n",
       }) {
    EXPECT_EQ(head(bad).r.status, ParseStatus::kBad) << bad;
  }
  // Transfer-Encoding in HTTP/1.0 is faulty (RFC 9112 section 6.1), and an empty one is no coding.
  EXPECT_EQ(head("POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n")
                .r.status,
            ParseStatus::kBad);
  EXPECT_EQ(head("POST / HTTP/1.1\r\nTransfer-Encoding: \r\n\r\n").r.status, ParseStatus::kBad);
  // Repeated identical lengths are allowed (RFC 9110 section 8.6).
  auto same = head("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n");
  EXPECT_EQ(same.r.status, ParseStatus::kDone);
  EXPECT_EQ(same.framing.length, 5u);
}

// A line ended by a bare LF is refused at once, not left waiting for a CRLFCRLF that a client
// ending its lines with LF never sends: the whole head, a request line before CRLF fields, and a
// bare LF after the fields. Each prefix up to the bare LF is still incomplete, and the searched
// hint finds it too.
TEST(RequestParser, BareLfIsRefusedAsSoonAsItArrives) {
  for (const std::string data : {
           "GET / HTTP/1.1\nHost: x\n\n",
           "GET / HTTP/1.1\nHost: x\r\n",
           "GET / HTTP/1.1\n\n",
           "GET / HTTP/1.1\r\nHost: x\n\n",
           "\r\nGET / HTTP/1.1\r\nHost: x\r\n\n",
           "\nGET / HTTP/1.1\r\n\r\n",
       }) {
    const std::size_t lf = [&] {
      for (std::size_t i = 0; i < data.size(); ++i) {
        if (data[i] == '\n' && (i == 0 || data[i - 1] != '\r')) return i;
      }
      return data.size();
    }();
    ASSERT_LT(lf, data.size()) << data;
    for (std::size_t n = 0; n <= lf; ++n) {
      EXPECT_EQ(head(data.substr(0, n)).r.status, ParseStatus::kIncomplete) << data << n;
    }
    auto p = head(data);
    EXPECT_EQ(p.r.status, ParseStatus::kBad) << data;
    EXPECT_FALSE(p.r.error.empty()) << data;
    EXPECT_EQ(head(data.substr(0, lf + 1)).r.status, ParseStatus::kBad) << data;
    Request req;
    BodyFraming f;
    EXPECT_EQ(parse_request_head(data, 1024, req, f, lf).status, ParseStatus::kBad) << data;
  }
  // The same for an upstream's response head.
  ResponseHead resp;
  BodyFraming f;
  EXPECT_EQ(parse_response_head("HTTP/1.1 200 OK\nContent-Length: 0\n\n", 1024, resp, f).status,
            ParseStatus::kBad);
  // A CR at the end of what has arrived may still be followed by its LF.
  EXPECT_EQ(head("GET / HTTP/1.1\r").r.status, ParseStatus::kIncomplete);
  EXPECT_EQ(head("GET / HTTP/1.1\r\nHost: x\r\n\r").r.status, ParseStatus::kIncomplete);
}

TEST(RequestParser, ChunkedBodyInAnySplit) {
  const std::string wire = "5;ext=1\r\nhello\r\nA\r\n, chunked!\r\n0\r\nTrailer: x\r\n\r\nNEXT";
  const std::string want = "hello, chunked!";
  // Every split of the wire into two reads decodes the same body and leaves the pipelined bytes.
  for (std::size_t cut = 0; cut <= wire.size(); ++cut) {
    ChunkedDecoder d;
    std::string body, in = wire.substr(0, cut);
    auto r = d.feed(in, body, 1024);
    in.erase(0, r.consumed);
    in += wire.substr(cut);
    if (r.status == ParseStatus::kIncomplete) {
      r = d.feed(in, body, 1024);
      in.erase(0, r.consumed);
    }
    ASSERT_EQ(r.status, ParseStatus::kDone) << cut;
    EXPECT_EQ(body, want) << cut;
    EXPECT_EQ(in, "NEXT") << cut;
  }
}

TEST(RequestParser, ChunkedErrorsAndLimit) {
  auto run = [](std::string_view wire, std::size_t limit = 1024) {
    ChunkedDecoder d;
    std::string body;
    return d.feed(wire, body, limit).status;
  };
  EXPECT_EQ(run("zz\r\n"), ParseStatus::kBad);
  EXPECT_EQ(run("5\r\nhelloXX"), ParseStatus::kBad);  // data not followed by CRLF
  EXPECT_EQ(run("5 junk\r\n"), ParseStatus::kBad);
  EXPECT_EQ(run("1000000000000000\r\n"), ParseStatus::kBad);
  EXPECT_EQ(run(std::string(5000, '1')), ParseStatus::kBad);  // a size line that never ends
  EXPECT_EQ(run("400\r\n", 1023), ParseStatus::kBodyTooLarge);
  EXPECT_EQ(run("3\r\nabc\r\n3\r\nabc\r\n", 5), ParseStatus::kBodyTooLarge);
  EXPECT_EQ(run("3\r\nabc\r\n0\r\n\r\n", 3), ParseStatus::kDone);
  // A size line of exactly 4,096 bytes is fine however the reads split it, even between its CR and
  // LF.
  const std::string line = "1;" + std::string(4094, 'x') + "\r\n";
  for (std::size_t cut : {line.size() - 1, line.size(), line.size() + 1}) {
    const std::string wire = line + "a\r\n0\r\n\r\n";
    ChunkedDecoder d;
    std::string body, in = wire.substr(0, cut);
    auto r = d.feed(in, body, 1024);
    ASSERT_EQ(r.status, ParseStatus::kIncomplete) << cut;
    in = in.substr(r.consumed) + wire.substr(cut);
    EXPECT_EQ(d.feed(in, body, 1024).status, ParseStatus::kDone) << cut;
    EXPECT_EQ(body, "a");
  }
  // Framing may not outgrow the data: 1-byte chunks with 1 KiB extensions, or endless trailers.
  std::string fat;
  for (int i = 0; i < 100; ++i) fat += "1;" + std::string(1024, 'e') + "\r\nz\r\n";
  EXPECT_EQ(run(fat, 1 << 20), ParseStatus::kBad);
  std::string trailers = "1\r\nz\r\n0\r\n";
  for (int i = 0; i < 100; ++i) trailers += "T: " + std::string(1024, 't') + "\r\n";
  EXPECT_EQ(run(trailers, 1 << 20), ParseStatus::kBad);
  std::string thin;  // many small chunks are fine
  for (int i = 0; i < 20000; ++i) thin += "4\r\ndata\r\n";
  EXPECT_EQ(run(thin + "0\r\n\r\n", 1 << 20), ParseStatus::kDone);
}

}  // namespace
}  // namespace kvroute::http

namespace kvroute::http {
namespace {

TEST(ResponseParser, StatusHeadersAndFraming) {
  ResponseHead h;
  BodyFraming f;
  const std::string_view sse =
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: "
      "chunked\r\n\r\ndata";
  auto r = parse_response_head(sse, 1024, h, f);
  ASSERT_EQ(r.status, ParseStatus::kDone) << r.error;
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(find_header(h.headers, "content-type"), "text/event-stream");
  EXPECT_TRUE(f.chunked);
  EXPECT_TRUE(h.keep_alive);
  EXPECT_EQ(r.consumed, sse.find("data"));
  // No reason phrase, with or without its space; a length; HTTP/1.0 closes by default.
  r = parse_response_head("HTTP/1.0 404\r\nContent-Length: 7\r\n\r\n", 1024, h, f);
  ASSERT_EQ(r.status, ParseStatus::kDone) << r.error;
  EXPECT_EQ(h.status, 404);
  EXPECT_EQ(f.length, 7u);
  EXPECT_FALSE(h.keep_alive);
  EXPECT_EQ(parse_response_head("HTTP/1.1 500 \r\n\r\n", 1024, h, f).status, ParseStatus::kDone);
  // Neither length nor chunked: until close, never kept alive. 204/304/1xx: no body at all.
  r = parse_response_head("HTTP/1.1 200 OK\r\n\r\n", 1024, h, f);
  EXPECT_TRUE(f.until_close);
  EXPECT_FALSE(h.keep_alive);
  for (const char* none :
       {"HTTP/1.1 204 No Content\r\n\r\n", "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
        "HTTP/1.1 100 Continue\r\n\r\n"}) {
    ASSERT_EQ(parse_response_head(none, 1024, h, f).status, ParseStatus::kDone) << none;
    EXPECT_FALSE(f.until_close) << none;
    EXPECT_FALSE(f.chunked) << none;
    EXPECT_EQ(f.length, 0u) << none;
    EXPECT_TRUE(h.keep_alive) << none;
  }
  EXPECT_EQ(parse_response_head("HTTP/1.1 200 OK\r\nContent-Le", 1024, h, f).status,
            ParseStatus::kIncomplete);
  ASSERT_EQ(
      parse_response_head("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", 1024, h, f)
          .status,
      ParseStatus::kDone);
  EXPECT_FALSE(h.keep_alive);  // another protocol follows: never pooled
  EXPECT_EQ(parse_response_head("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 1024, h, f)
                .status,
            ParseStatus::kBad);
  EXPECT_EQ(parse_response_head("HTTP/1.1 200 OK\r\nX: " + std::string(2000, 'x') + "\r\n\r\n",
                                1024, h, f)
                .status,
            ParseStatus::kHeadersTooLarge);
  for (const char* bad :
       {"SSH-2.0-OpenSSH\r\n\r\n", "HTTP/1.1 20 OK\r\n\r\n", "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/1.1 abc OK\r\n\r\n", "HTTP/1.1 099 X\r\n\r\n", "HTTP/2 200 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"}) {
    EXPECT_EQ(parse_response_head(bad, 1024, h, f).status, ParseStatus::kBad) << bad;
  }
}

TEST(HeaderFields, SinglePassAgreesWithLineByLine) {
  const char* blocks[] = {
      "Host: a\r\nContent-Length: 5\r\n",
      "Host:a\r\nX-Empty:\r\nX-Spaces:   \t \r\n",
      "content-length:  12  \r\nCONNECTION: keep-alive, Close\r\nExpect: 100-continue\r\n",
      "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
      "Transfer-Encoding: gzip\r\n",
      "Content-Length: 1\r\nContent-Length: 2\r\n",
      "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
      " folded: x\r\n",
      "\tfolded: x\r\n",
      "NoColon\r\n",
      "Bad Name: x\r\n",
      ": empty name\r\n",
      "X-Ctl: a\x01b\r\n",
      "X-Del: a\x7f\r\n",
      "X-Bare-CR: a\rb\r\n",
      "X-Bare-LF: a\nb\r\n",
      "X-Obs: caf\xc3\xa9\r\n",
      "X-Tab:\tvalue\twith\ttabs\t\r\n",
      "A: 1\r\n\r\nB: 2\r\n",
      "\r\n",
      "",
  };
  for (const char* b : blocks) EXPECT_TRUE(internal::header_parsers_agree(b)) << b;
}

// The fast parse reads values eight bytes at a time: every byte class (tab, DEL, other control
// characters, obs-text, a bare CR or LF) at every offset of a value, across word boundaries.
TEST(HeaderFields, BothParsersAgreeOnEveryByteAtEveryOffset) {
  const std::string specials = std::string("\t\x7f\x01\x1f\x80\xff \r\n:", 10) + '\0';
  int accepted = 0, refused = 0;
  for (std::size_t len = 1; len <= 20; ++len) {
    for (std::size_t at = 0; at < len; ++at) {
      for (char c : specials) {
        std::string value(len, 'v');
        value[at] = c;
        const std::string block = "Host: h\r\nX-Field: " + value + "\r\nX-Next: ok\r\n";
        ASSERT_TRUE(internal::header_parsers_agree(block)) << len << " " << at << " " << int(c);
        Request req;
        BodyFraming f;
        const auto r = parse_request_head("GET / HTTP/1.1\r\n" + block + "\r\n", 4096, req, f);
        (r.status == ParseStatus::kDone ? accepted : refused) += 1;
      }
    }
  }
  // Tab, obs-text, space and ':' are allowed inside a value; DEL, controls, bare CR/LF and NUL not.
  EXPECT_GT(accepted, 0);
  EXPECT_GT(refused, 0);
}

// iequals against a byte-by-byte reference: every length 0-24, a case flip or a different byte at
// every position (the word loop, the overlapping last word, the two halves, the byte tail).
TEST(Iequals, MatchesAReferenceAtEveryLengthAndPosition) {
  const auto reference = [](std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
      const auto lo = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; };
      if (lo(a[i]) != lo(b[i])) return false;
    }
    return true;
  };
  const std::string alphabet = "Content-Length_@[`{xZ09\x80\xff";
  for (std::size_t len = 0; len <= 24; ++len) {
    std::string a;
    for (std::size_t i = 0; i < len; ++i) a += alphabet[(i * 7) % alphabet.size()];
    EXPECT_TRUE(iequals(a, a));
    for (std::size_t at = 0; at < len; ++at) {
      for (char c : {'A', 'a', '@', '`', '[', '{', '-', '\x80', '\xc1', '\xe1'}) {
        std::string b = a;
        b[at] = c;
        ASSERT_EQ(iequals(a, b), reference(a, b)) << len << " " << at << " " << int(c);
        std::string flipped = a;
        if (std::isalpha(static_cast<unsigned char>(flipped[at]))) flipped[at] ^= 0x20;
        ASSERT_TRUE(iequals(a, flipped)) << len << " " << at;
        // iequals_lower: the second argument lower-case (a literal's role).
        std::string lower = a;
        for (auto& ch : lower) ch = ch >= 'A' && ch <= 'Z' ? static_cast<char>(ch + 32) : ch;
        ASSERT_TRUE(iequals_lower(flipped, lower)) << len << " " << at;
        ASSERT_EQ(iequals_lower(b, lower), reference(b, lower))
            << len << " " << at << " " << int(c);
      }
    }
    EXPECT_FALSE(iequals(a, a + "x"));
  }
  EXPECT_TRUE(iequals("CONTENT-LENGTH", "content-length"));
  EXPECT_FALSE(iequals("content-lengtH", "content-lengtI"));
}

// A head stays in place up to 512 bytes, then moves to the heap with what it held, in order.
TEST(HeadBuffer, KeepsEveryByteAcrossTheSpill) {
  for (std::size_t piece : {1u, 7u, 100u, 511u, 512u, 513u, 2000u}) {
    HeadBuffer h;
    std::string expected;
    for (int i = 0; expected.size() < 3000; ++i) {
      const std::string part(piece, static_cast<char>('a' + i % 26));
      h += part;
      h += ':';
      h.append_decimal(static_cast<std::uint64_t>(i) * 1000003);
      expected += part + ":" + std::to_string(static_cast<std::uint64_t>(i) * 1000003);
      ASSERT_EQ(h.view(), expected) << piece << " " << i;
    }
  }
}

TEST(HeaderFields, ValuesAreTrimmedViews) {
  Request req;
  BodyFraming f;
  const std::string raw = "GET / HTTP/1.1\r\nX-A:   padded value \t\r\nX-B:\r\nHost: h\r\n\r\n";
  ASSERT_EQ(parse_request_head(raw, 4096, req, f).status, ParseStatus::kDone);
  ASSERT_EQ(req.headers.size(), 3u);
  EXPECT_EQ(req.headers[0].first, "X-A");
  EXPECT_EQ(req.headers[0].second, "padded value");
  EXPECT_EQ(req.headers[1].second, "");
  EXPECT_EQ(find_header(req.headers, "host"), "h");
  Headers copy = req.headers;  // a copy owns its bytes
  req.headers.clear();
  EXPECT_EQ(find_header(copy, "x-a"), "padded value");
}

}  // namespace
}  // namespace kvroute::http
