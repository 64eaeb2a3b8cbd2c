// File: common/result.h
//
// Result<T>: the value-or-error type of the data plane. Expected failures (bad input, refused
// upstream, timeout, malformed event) travel as values, never as exceptions (docs/adr/0002).
//
//   Result<int> parse(std::string_view s);
//   KVROUTE_TRY(auto n, parse(s));   // returns the error to the caller on failure
#pragma once

#include <expected>
#include <string>
#include <utility>

namespace kvroute {

// An error with a machine-readable kind and a human-readable message.
struct Error {
  enum class Kind {
    kInvalidArgument,  // bad input from a client or a file
    kNotFound,
    kUnavailable,      // nothing to serve the request
    kTimeout,
    kIo,               // network or file I/O failed
    kInternal,
  };
  Kind kind = Kind::kInternal;
  std::string message;

  static Error invalid(std::string m) { return {Kind::kInvalidArgument, std::move(m)}; }
  static Error not_found(std::string m) { return {Kind::kNotFound, std::move(m)}; }
  static Error unavailable(std::string m) { return {Kind::kUnavailable, std::move(m)}; }
  static Error timeout(std::string m) { return {Kind::kTimeout, std::move(m)}; }
  static Error io(std::string m) { return {Kind::kIo, std::move(m)}; }
  static Error internal(std::string m) { return {Kind::kInternal, std::move(m)}; }
};

template <typename T>
using Result = std::expected<T, Error>;

using Status = std::expected<void, Error>;

inline std::unexpected<Error> fail(Error e) { return std::unexpected<Error>(std::move(e)); }

}  // namespace kvroute

#define KVROUTE_CONCAT_INNER(a, b) a##b
#define KVROUTE_CONCAT(a, b) KVROUTE_CONCAT_INNER(a, b)
#define KVROUTE_TRY_IMPL(tmp, decl, expr)              \
  auto tmp = (expr);                                   \
  if (!tmp) return std::unexpected(std::move(tmp.error())); \
  decl = std::move(*tmp)
// KVROUTE_TRY(decl, expr): evaluates expr (a Result); on error returns it, else binds the value.
#define KVROUTE_TRY(decl, expr) KVROUTE_TRY_IMPL(KVROUTE_CONCAT(kvroute_try_, __LINE__), decl, expr)
