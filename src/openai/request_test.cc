#include "openai/request.h"

#include <gtest/gtest.h>
#include <simdjson.h>

#include <string>

#include "common/json.h"

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

// Fields in any order, unknown ones skipped, nulls as absent, and the last of duplicate keys
// counts (as for vLLM, whose Python json keeps the last): routing keys on what the backend uses.
TEST(ParseRequest, FieldsInAnyOrderLastDuplicateWins) {
  auto r = parse_request(
      Endpoint::kCompletions,
      R"({"temperature":0.5,"max_completion_tokens":7,"user":null,"prompt":"p","extra":{"model":"x"},"model":"a","model":"b","stream":false,"stream":true})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->model, "b");
  EXPECT_TRUE(r->stream);
  EXPECT_EQ(r->user, "");
  EXPECT_EQ(r->max_tokens, 7);
  EXPECT_EQ(r->prompt, "p");
  auto c = parse_request(Endpoint::kChatCompletions,
                         R"({"messages":[{"role":"user","content":"hi"}],"prompt":"ignored"})");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->model, "");
  EXPECT_EQ(c->routing_text, "user\nhi\n");
  // Every field the parser reads: the last one is the one used and the one checked.
  auto all = parse_request(
      Endpoint::kCompletions,
      R"({"prompt":1,"prompt":"later","user":"u1","user":"u2","max_tokens":-1,"max_tokens":3,"stream_options":{"include_usage":false,"include_usage":true},"stream_options":3,"stream_options":{"include_usage":"x","include_usage":true},"stream":"no","stream":false})");
  ASSERT_TRUE(all) << all.error().message;
  EXPECT_EQ(all->prompt, "later");
  EXPECT_EQ(all->routing_text, "later");
  EXPECT_EQ(all->user, "u2");
  EXPECT_EQ(all->max_tokens, 3);
  EXPECT_TRUE(all->include_usage);
  EXPECT_FALSE(all->stream);
  auto ids = parse_request(Endpoint::kCompletions, R"({"prompt":"text","prompt":[4,5]})");
  ASSERT_TRUE(ids) << ids.error().message;
  EXPECT_EQ(ids->prompt, "");
  EXPECT_EQ(ids->prompt_ids, (std::vector<std::uint32_t>{4, 5}));
  auto dup = parse_request(Endpoint::kCompletions, R"({"prompt":"first","prompt":1})");
  ASSERT_FALSE(dup);  // the last "prompt" is the one checked
  EXPECT_EQ(dup.error().param, "prompt");
  EXPECT_FALSE(parse_request(Endpoint::kCompletions, R"({"prompt":"x","model":"m","model":5})"));
  // Inside messages too: the messages array, each message's role and content, a part's text.
  auto chat = parse_request(
      Endpoint::kChatCompletions,
      R"({"messages":[{"role":"user","content":"old"}],"model":"a","messages":[{"role":"system","role":"user","content":"x","content":[{"type":"text","text":"a","text":"b"}]}],"model":"m"})");
  ASSERT_TRUE(chat) << chat.error().message;
  EXPECT_EQ(chat->model, "m");
  ASSERT_EQ(chat->messages.size(), 1u);
  EXPECT_EQ(chat->messages[0].role, "user");
  EXPECT_EQ(chat->messages[0].content, "b");
  EXPECT_EQ(chat->routing_text, "user\nb\n");
  EXPECT_EQ(chat->messages_json.find("old"), std::string::npos);  // the last array, for templates
  auto role = parse_request(Endpoint::kChatCompletions,
                            R"({"messages":[{"role":"user","content":"x","role":7}]})");
  ASSERT_FALSE(role);
  EXPECT_EQ(role.error().param, "messages");
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

// common/json's append_json_escaped_valid_utf8 (tested here, where simdjson is linked): whatever
// bytes go in, the JSON that comes out parses (simdjson validates UTF-8), and it decodes to the
// input with each ill-formed sequence replaced by U+FFFD, one per maximal subpart.
TEST(JsonEscape, ValidUtf8WhateverTheInput) {
  struct Case {
    std::string in, decoded;
  } cases[] = {
      {"\xff\xfe", "\uFFFD\uFFFD"},
      {"\xc0\xaf", "\uFFFD\uFFFD"},                      // overlong '/'
      {"a\xe2\x82", "a\uFFFD"},                          // truncated at the end
      {"\xe2\x82z", "\uFFFDz"},                          // truncated before ASCII
      {"\xed\xa0\x80", "\uFFFD\uFFFD\uFFFD"},            // a lone surrogate
      {"\xf4\x90\x80\x80", "\uFFFD\uFFFD\uFFFD\uFFFD"},  // past U+10FFFF
      {"\xe0\x80\x80", "\uFFFD\uFFFD\uFFFD"},            // overlong
      {"\xf0\x9f\x98", "\uFFFD"},                        // truncated 4-byte
      {"\x80x\xbf", "\uFFFDx\uFFFD"},                    // stray continuation bytes
      {"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\xed\x9f\xbf",
       "\u00e9\u20ac\U0001F600\U0010FFFF\uD7FF"},  // well-formed, kept
      {"q\"\\\n\r\t\x01\x1f\x7f", "q\"\\\n\r\t\x01\x1f\x7f"},
      {std::string("nul\0here", 8), std::string("nul\0here", 8)},
  };
  simdjson::dom::parser parser;
  for (const auto& c : cases) {
    std::string json = R"({"message":")";
    append_json_escaped_valid_utf8(json, c.in);
    json += "\"}";
    simdjson::dom::element doc;
    ASSERT_EQ(parser.parse(json).get(doc), simdjson::SUCCESS) << json;
    std::string_view message;
    ASSERT_EQ(doc["message"].get(message), simdjson::SUCCESS) << json;
    EXPECT_EQ(message, c.decoded) << json;
    EXPECT_TRUE(simdjson::validate_utf8(json.data(), json.size())) << json;
  }
  // Long ASCII runs and multi-byte text between the faults come through whole.
  const std::string ascii(1000, 'a');
  std::string out;
  append_json_escaped_valid_utf8(out, ascii + "\xff" + ascii + "\xc3\xa9");
  EXPECT_EQ(out, ascii + "\\ufffd" + ascii + "\xc3\xa9");
}

}  // namespace
}  // namespace kvroute::openai
