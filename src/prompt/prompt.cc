#include "prompt/prompt.h"

#include "chat_template/chat_template.h"
#include "common/hash.h"
#include "common/json.h"
#include "common/log.h"
#include "tokenizer/tokenizer.h"

namespace kvroute::prompt {

std::vector<std::uint32_t> word_tokens(std::string_view text, std::uint32_t vocab_size) {
  std::vector<std::uint32_t> out;
  const std::uint32_t usable = vocab_size > 512 ? vocab_size - 256 : vocab_size;
  std::size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() &&
           (text[i] == ' ' || text[i] == '\n' || text[i] == '\t' || text[i] == '\r'))
      ++i;
    std::size_t j = i;
    while (j < text.size() &&
           !(text[j] == ' ' || text[j] == '\n' || text[j] == '\t' || text[j] == '\r'))
      ++j;
    if (j > i) out.push_back(static_cast<std::uint32_t>(hash64(text.substr(i, j - i)) % usable));
    i = j;
  }
  return out;
}

struct PromptEncoder::Impl {
  std::optional<tokenizer::Tokenizer> tok;
  std::optional<chat_template::ChatTemplate> tmpl;
  std::string bos, eos;
};

PromptEncoder::PromptEncoder() : impl_(std::make_unique<Impl>()) {}
PromptEncoder::~PromptEncoder() = default;
bool PromptEncoder::has_tokenizer() const { return impl_->tok.has_value(); }

Result<std::shared_ptr<const PromptEncoder>> PromptEncoder::load(const std::string& path,
                                                                 std::uint32_t vocab_size) {
  std::shared_ptr<PromptEncoder> enc(new PromptEncoder());
  enc->vocab_size_ = vocab_size;
  if (path.empty()) return std::shared_ptr<const PromptEncoder>(enc);
  auto tok = tokenizer::Tokenizer::load(path);
  if (!tok) return fail(Error::invalid("tokenizer '" + path + "': " + tok.error().message));
  const auto& cfg = tok->config();
  enc->impl_->bos = cfg.bos_token.value_or("");
  enc->impl_->eos = cfg.eos_token.value_or("");
  if (const std::string* src = cfg.default_chat_template()) {
    auto t = chat_template::ChatTemplate::compile(*src);
    if (!t) return fail(Error::invalid("chat template of '" + path + "': " + t.error().message));
    enc->impl_->tmpl.emplace(std::move(*t));
  }
  enc->impl_->tok.emplace(std::move(*tok));
  return std::shared_ptr<const PromptEncoder>(enc);
}

Result<std::vector<std::uint32_t>> PromptEncoder::encode(const openai::ParsedRequest& req) const {
  if (req.endpoint == openai::Endpoint::kCompletions) {
    if (req.prompt.empty() && !req.prompt_ids.empty()) return req.prompt_ids;
    if (!impl_->tok) return word_tokens(req.prompt, vocab_size_);
    return impl_->tok->encode(req.prompt, true);
  }
  if (!impl_->tok || !impl_->tmpl) {
    std::string text;
    for (const auto& m : req.messages) {
      text += "<|" + m.role + "|>\n";
      text += m.content;
      text += '\n';
    }
    text += "<|assistant|>\n";
    if (!impl_->tok) return word_tokens(text, vocab_size_);
    return impl_->tok->encode(text, false);
  }
  std::string ctx = R"({"messages":)";
  ctx += req.messages_json;
  // HF passes tools=None explicitly (templates test `tools is not none`).
  ctx += R"(,"tools":null,"add_generation_prompt":true,"bos_token":")";
  append_json_escaped(ctx, impl_->bos);
  ctx += R"(","eos_token":")";
  append_json_escaped(ctx, impl_->eos);
  ctx += "\"}";
  auto text = impl_->tmpl->render(ctx);
  if (!text) return fail(Error::invalid("chat template: " + text.error().message));
  return impl_->tok->encode(*text, false);
}

std::string PromptEncoder::decode(const std::vector<std::uint32_t>& ids) const {
  if (impl_->tok) return impl_->tok->decode(ids, true);
  std::string out;
  for (auto id : ids) out += decode_one(id);
  return out;
}

std::string PromptEncoder::decode_one(std::uint32_t id) const {
  if (impl_->tok) {
    std::vector<std::uint32_t> one{id};
    return impl_->tok->decode(one, true);
  }
  static constexpr const char* kWords[] = {" the",    " cache", " routes", " a",
                                           " token",  " block", " of",     " prefix",
                                           " engine", " fast",  " and",    " to"};
  return kWords[id % (sizeof kWords / sizeof kWords[0])];
}

PromptBlocks prompt_blocks(const openai::ParsedRequest& req, const PromptEncoder* enc,
                           std::uint32_t block_size, std::uint64_t seed) {
  PromptBlocks out;
  out.tokens_per_block = block_size;
  if (enc) {
    auto ids = enc->encode(req);
    if (ids) {
      out.tokens = std::move(*ids);
      out.blocks = chained_block_hashes(out.tokens, block_size, seed);
      out.prompt_tokens = static_cast<std::uint32_t>(out.tokens.size());
      return out;
    }
    spdlog::debug("tokenization failed, routing on characters: {}", ids.error().message);
  }
  const std::string_view text = req.routing_text;
  const std::size_t chars = static_cast<std::size_t>(block_size) * 4;
  std::uint64_t parent = seed;
  for (std::size_t off = 0; off + chars <= text.size(); off += chars) {
    parent = hash64(text.substr(off, chars), parent);
    out.blocks.push_back(parent);
  }
  out.prompt_tokens = static_cast<std::uint32_t>(text.size() / 4);
  return out;
}

}  // namespace kvroute::prompt
