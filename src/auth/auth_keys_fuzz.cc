// libFuzzer target: the API key file (KeyStore::parse) and the Authorization header
// (bearer_token, KeyStore::check), as a careless operator or a hostile client could write them.
// Invariants: no crash; a parsed file holds keys; a bearer token is a piece of its header without
// blanks; a check never passes a header that is not a bearer credential.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "auth/auth.h"

using namespace kvroute::auth;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const std::string_view token = bearer_token(in);
  if (!token.empty()) {
    if (in.find(token) == std::string_view::npos) std::abort();
    if (token.find_first_of(" \t\r") != std::string_view::npos) std::abort();
  }
  auto keys = KeyStore::parse(in, "fuzz");
  if (keys) {
    if (keys->size() == 0) std::abort();
    auto who = keys->check(in);
    if (who && token.empty()) std::abort();
    // The file's first line, presented as a key, must find its tenant when it is a plain key.
    const std::string_view first = in.substr(0, in.find('\n'));
    if (!first.empty() && first.find_first_of(" \t\r#") == std::string_view::npos) {
      std::string header = "Bearer ";
      header += first;
      if (!keys->check(header)) std::abort();
    }
  }
  return 0;
}
