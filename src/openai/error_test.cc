#include "openai/error.h"

#include <gtest/gtest.h>

#include <string>

namespace kvroute::openai {
namespace {

// An error body that quotes a client's bytes is valid UTF-8: each ill-formed sequence (invalid
// bytes, an overlong form, a truncated sequence, a surrogate, a code point past U+10FFFF) becomes
// \ufffd, one per maximal subpart; well-formed UTF-8 and the usual escapes are kept.
TEST(ErrorBody, NeverEchoesInvalidUtf8) {
  const std::string message =
      "no route for /a\xff\xfe b\xc0\xaf c\xe2\x82 d\xed\xa0\x80 e\xf4\x90\x80\x80 "
      "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 \"q\"\\\n\x01\x7f \xf0\x9f\x98";
  EXPECT_EQ(error_body(404, message, "x\x80", "c\xc3"),
            "{\"error\":{\"message\":\"no route for /a\\ufffd\\ufffd b\\ufffd\\ufffd c\\ufffd "
            "d\\ufffd\\ufffd\\ufffd e\\ufffd\\ufffd\\ufffd\\ufffd "
            "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 \\\"q\\\"\\\\\\n\\u0001\x7f "
            "\\ufffd\",\"type\":\"x\\ufffd\",\"param\":null,\"code\":\"c\\ufffd\"}}");
  EXPECT_EQ(
      error_body(400, "plain"),
      R"({"error":{"message":"plain","type":"invalid_request_error","param":null,"code":400}})");
}

TEST(ErrorBody, TypeFollowsTheStatus) {
  EXPECT_EQ(error_type(401), "authentication_error");
  EXPECT_EQ(error_type(404), "not_found_error");
  EXPECT_EQ(error_type(429), "rate_limit_error");
  EXPECT_EQ(error_type(503), "service_unavailable_error");
  EXPECT_EQ(error_type(500), "server_error");
}

}  // namespace
}  // namespace kvroute::openai

namespace kvroute::openai {
TEST(ErrorBody, NamesTheParameter) {
  EXPECT_EQ(
      error_body_for_param(400, "bad", "model"),
      R"({"error":{"message":"bad","type":"invalid_request_error","param":"model","code":400}})");
  EXPECT_EQ(error_body_for_param(400, "bad", ""), error_body(400, "bad"));
}
}  // namespace kvroute::openai
