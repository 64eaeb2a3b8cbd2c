// libFuzzer target for the HTTP/1.1 parsers (build with -DKVROUTE_FUZZ=ON and clang). The first
// byte picks a split point: the input is fed as a request head, a response head, and a chunked
// body, and the parsers must agree with themselves (a head parsed whole or with the `searched`
// hint gives the same answer; a chunked body decoded in two reads gives what one read gives; the
// two header-field parsers agree).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "http/internal/parser.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t cut = data[0] % size;
  const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  using namespace kvroute::http;

  Request a, b;
  BodyFraming fa, fb;
  const auto whole = parse_request_head(in, 4096, a, fa);
  const auto first = parse_request_head(in.substr(0, cut), 4096, b, fb);
  const auto hinted =
      first.status == ParseStatus::kIncomplete ? parse_request_head(in, 4096, b, fb, cut) : whole;
  if (hinted.status != whole.status || hinted.consumed != whole.consumed) std::abort();
  if (whole.status == ParseStatus::kDone && (whole.consumed == 0 || whole.consumed > in.size()))
    std::abort();

  ResponseHead r;
  BodyFraming fr;
  const auto resp = parse_response_head(in, 4096, r, fr);
  if (resp.status == ParseStatus::kDone &&
      (resp.consumed > in.size() || r.status < 100 || r.status > 999))
    std::abort();

  // Header fields: the single pass and the line-by-line parse agree on a block whose lines end
  // with CRLF (as a head's are).
  std::string block(in);
  if (!block.ends_with("\r\n")) block += "\r\n";
  if (!internal::header_parsers_agree(block)) std::abort();

  // Chunked: two reads split at `cut` must agree with one read of everything.
  ChunkedDecoder whole_decoder, split_decoder;
  std::string whole_body, split_body, buf(in.substr(0, cut));
  const auto w = whole_decoder.feed(in, whole_body, 1 << 16);
  if (w.consumed > in.size()) std::abort();
  auto c = split_decoder.feed(buf, split_body, 1 << 16);
  if (c.consumed > buf.size()) std::abort();
  if (c.status == ParseStatus::kIncomplete) {
    buf.erase(0, c.consumed);
    buf += in.substr(cut);
    c = split_decoder.feed(buf, split_body, 1 << 16);
    if (c.consumed > buf.size()) std::abort();
  }
  if (c.status != w.status) std::abort();
  if (w.status == ParseStatus::kDone && split_body != whole_body) std::abort();
  if (whole_body.size() > in.size()) std::abort();
  return 0;
}
