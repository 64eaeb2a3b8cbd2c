#include "http/sse.h"

#include <gtest/gtest.h>

#include <vector>

namespace kvroute::http {
namespace {

TEST(SseSplitter, SplitsAcrossArbitraryChunkBoundaries) {
  const std::string stream =
      "data: {\"a\":1}\n\n: comment\n\ndata: x\r\ndata: y\r\n\r\nevent: e\ndata: [DONE]\n\n";
  for (std::size_t step = 1; step <= stream.size(); ++step) {
    SseSplitter s;
    std::vector<std::string> got;
    for (std::size_t i = 0; i < stream.size(); i += step) {
      s.feed(std::string_view(stream).substr(i, step),
             [&](std::string_view d) { got.emplace_back(d); });
    }
    ASSERT_EQ(got.size(), 3u) << "step " << step;
    EXPECT_EQ(got[0], "{\"a\":1}");
    EXPECT_EQ(got[1], "x\ny");
    EXPECT_EQ(got[2], "[DONE]");
    EXPECT_TRUE(s.at_boundary());
  }
}

TEST(SseSplitter, ReportsIncompleteEvent) {
  SseSplitter s;
  s.feed("data: partial", [](std::string_view) { FAIL(); });
  EXPECT_FALSE(s.at_boundary());
  EXPECT_EQ(sse_event("z"), "data: z\n\n");
}

// The proxy's relay: whole events go out as soon as their blank line arrives, whatever the line
// endings (CRLF CRLF is sse-starlette's default; it was held to the end of the stream before).
TEST(SseSplitter, RelaysWholeEventsAsTheyCompleteWithAnyLineEnding) {
  for (const std::string_view eol : {"\n", "\r\n", "\r"}) {
    std::string stream;
    for (int i = 0; i < 4; ++i) {
      stream += "data: {\"i\":" + std::to_string(i) + "}";
      stream += eol;
      stream += eol;
    }
    for (std::size_t step = 1; step <= stream.size(); ++step) {
      SseSplitter s;
      std::string out;
      std::size_t events_out = 0;
      for (std::size_t i = 0; i < stream.size(); i += step) {
        const std::string_view piece = std::string_view(stream).substr(i, step);
        const std::string_view got = s.relay(piece);
        out.append(got);
        // What went out is exactly the whole events received so far (a lone CR at the end may
        // still be the first half of a CRLF line end, so that line waits for one more byte).
        const std::string_view fed = std::string_view(stream).substr(0, i + piece.size());
        const std::size_t whole = sse_whole_events_end(fed);
        EXPECT_EQ(out.size(), whole) << "eol " << eol.size() << " step " << step << " at " << i;
        events_out = out.size();
      }
      EXPECT_EQ(out, stream);
      EXPECT_TRUE(s.at_boundary());
      EXPECT_EQ(events_out, stream.size());
    }
  }
}

TEST(SseSplitter, RelayEndsOnBoundaryAndHoldsTheIncompleteTail) {
  SseSplitter s;
  EXPECT_EQ(s.relay("data: a\r\n\r\ndata: b"), "data: a\r\n\r\n");
  EXPECT_FALSE(s.at_boundary());
  EXPECT_EQ(s.relay("c\r\n"), "");
  EXPECT_EQ(s.relay("\r\ndata: d\n\n"), "data: bc\r\n\r\ndata: d\n\n");
  EXPECT_TRUE(s.at_boundary());
  EXPECT_EQ(s.relay("data: tail"), "");
  EXPECT_EQ(s.take_pending(), "data: tail");
  EXPECT_TRUE(s.at_boundary());
  // A tail that never ends is flushed once it reaches the bound.
  EXPECT_EQ(s.relay(std::string(10, 'x'), 8), std::string(10, 'x'));
  EXPECT_EQ(sse_whole_events_end("data: a\r\r"), 9u);
  EXPECT_EQ(sse_whole_events_end("data: a\r\n\r"), 10u);  // a blank line ends at its first byte
  EXPECT_EQ(sse_whole_events_end("data: a\r"), 0u);       // this CR may start a CRLF
  // The LF of a CRLF that ended the last relay goes out with the next bytes, not held.
  SseSplitter t;
  EXPECT_EQ(t.relay("data: a\r\n\r"), "data: a\r\n\r");
  EXPECT_EQ(t.relay("\n"), "\n");
  EXPECT_TRUE(t.at_boundary());
}

}  // namespace
}  // namespace kvroute::http
