// libFuzzer target: encode arbitrary bytes with a small GPT-2 style and a Qwen2 style tokenizer
// (both pre-tokenizer families, added tokens with strip rules) and check the invariants: no crash,
// invalid UTF-8 is an error, valid input round-trips through decode, add_special_tokens only adds
// the template ids, and NFC gives valid UTF-8 that NFC leaves alone.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "tokenizer/internal/util.h"
#include "tokenizer/tokenizer.h"

namespace {
using kvroute::tokenizer::Tokenizer;

const Tokenizer* load(const char* dir) {
  auto t = Tokenizer::load(std::string(KVROUTE_FUZZ_SOURCE_DIR) + dir);
  if (!t) std::abort();
  return new Tokenizer(std::move(*t));
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const Tokenizer* gpt2 = load("/src/tokenizer/testdata/gpt2_tiny");
  static const Tokenizer* qwen2 = load("/src/tokenizer/testdata/qwen2_tiny");
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  namespace internal = kvroute::tokenizer::internal;
  if (internal::find_invalid_utf8(text) == std::string_view::npos) {
    std::string once_buf;
    std::string twice_buf;
    const std::string_view once = internal::nfc_normalize(text, once_buf);
    if (internal::find_invalid_utf8(once) != std::string_view::npos) std::abort();
    if (internal::nfc_normalize(once, twice_buf) != once) std::abort();
  }
  for (const Tokenizer* tok : {gpt2, qwen2}) {
    auto ids = tok->encode(text, false);
    if (!ids) continue;
    if (tok == gpt2 && tok->decode(*ids) != text) std::abort();  // no normalizer: exact round trip
    auto with = tok->encode(text, true);
    if (!with ||
        with->size() != ids->size() + tok->post_prefix().size() + tok->post_suffix().size())
      std::abort();
  }
  return 0;
}
