#include "openai/request.h"

#include <gtest/gtest.h>

namespace kvroute::openai {
namespace {

TEST(ParseRequest, Completion) {
  auto r = parse_request(
      Endpoint::kCompletions,
      R"({"model":"m","prompt":"hello","stream":true,"stream_options":{"include_usage":true},"user":"u1","max_tokens":5})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->model, "m");
  EXPECT_EQ(r->prompt, "hello");
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
  EXPECT_EQ(r->user, "u1");
  EXPECT_EQ(r->max_tokens, 5);
  EXPECT_EQ(r->routing_text, "hello");
}

// Fields in any order, unknown ones skipped, nulls as absent, and the first of duplicate keys
// counts (as a key lookup would find it).
TEST(ParseRequest, FieldsInAnyOrderFirstDuplicateWins) {
  auto r = parse_request(
      Endpoint::kCompletions,
      R"({"temperature":0.5,"max_completion_tokens":7,"user":null,"prompt":"p","extra":{"model":"x"},"model":"a","model":"b","stream":false,"stream":true})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->model, "a");
  EXPECT_FALSE(r->stream);
  EXPECT_EQ(r->user, "");
  EXPECT_EQ(r->max_tokens, 7);
  EXPECT_EQ(r->prompt, "p");
  auto c = parse_request(Endpoint::kChatCompletions,
                         R"({"messages":[{"role":"user","content":"hi"}],"prompt":"ignored"})");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->model, "");
  EXPECT_EQ(c->routing_text, "user\nhi\n");
  auto dup = parse_request(Endpoint::kCompletions, R"({"prompt":1,"prompt":"later"})");
  EXPECT_FALSE(dup);  // the first "prompt" is the one checked
}

TEST(ParseRequest, TokenPromptAndChat) {
  auto r = parse_request(Endpoint::kCompletions, R"({"model":"m","prompt":[1,2,3]})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->prompt_ids, (std::vector<std::uint32_t>{1, 2, 3}));
  auto c = parse_request(
      Endpoint::kChatCompletions,
      R"({"model":"m","messages":[{"role":"system","content":"S"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]})");
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_EQ(c->messages.size(), 2u);
  EXPECT_EQ(c->messages[1].content, "ab");
  EXPECT_EQ(c->routing_text, "system\nS\nuser\nab\n");
  EXPECT_EQ(c->messages_json.front(), '[');
  EXPECT_FALSE(continues_conversation(*c));
  EXPECT_FALSE(continues_conversation(*r));
  auto turn2 = parse_request(
      Endpoint::kChatCompletions,
      R"({"model":"m","messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"}]})");
  ASSERT_TRUE(turn2) << turn2.error().message;
  EXPECT_TRUE(continues_conversation(*turn2));
}

TEST(ParseRequest, Errors) {
  struct Case {
    Endpoint ep;
    const char* body;
    const char* param;
  } cases[] = {
      {Endpoint::kCompletions, "{not json", ""},
      {Endpoint::kCompletions, "[1]", ""},
      {Endpoint::kCompletions, R"({"model":"m"})", "prompt"},
      {Endpoint::kCompletions, R"({"model":5,"prompt":"x"})", "model"},
      {Endpoint::kCompletions, R"({"prompt":"x","stream":"yes"})", "stream"},
      {Endpoint::kCompletions, R"({"prompt":{}})", "prompt"},
      {Endpoint::kCompletions, R"({"prompt":[-1]})", "prompt"},
      {Endpoint::kCompletions, R"({"prompt":"x","max_tokens":-3})", "max_tokens"},
      {Endpoint::kCompletions, R"({"prompt":"x","stream_options":3})", "stream_options"},
      {Endpoint::kChatCompletions, R"({"model":"m"})", "messages"},
      {Endpoint::kChatCompletions, R"({"messages":[]})", "messages"},
      {Endpoint::kChatCompletions, R"({"messages":[{"content":"x"}]})", "messages"},
      {Endpoint::kChatCompletions, R"({"messages":[{"role":"user","content":5}]})", "messages"},
      {Endpoint::kChatCompletions, R"({"messages":[{"role":"user","content":"x"}],"user":1})",
       "user"},
  };
  for (const auto& c : cases) {
    auto r = parse_request(c.ep, c.body);
    ASSERT_FALSE(r) << c.body;
    EXPECT_EQ(r.error().param, c.param) << c.body;
    EXPECT_FALSE(r.error().message.empty());
  }
}

}  // namespace
}  // namespace kvroute::openai
