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
      s.feed(std::string_view(stream).substr(i, step), [&](std::string_view d) { got.emplace_back(d); });
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

}  // namespace
}  // namespace kvroute::http
