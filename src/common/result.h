// File: common/result.h
//
// Result<T>: the value-or-error type of the data plane. Expected failures (bad input, refused
// upstream, timeout, malformed event) travel as values, never as exceptions (docs/adr/0002).
//
//   Result<int> parse(std::string_view s);
//   Status check(int n);
//   KVROUTE_TRY(auto n, parse(s));   // returns the error to the caller on failure, else binds n
//   KVROUTE_TRY(check(n));           // a Status: returns the error to the caller on failure
//
// Thread-safety: value types; not synchronized.
#pragma once

#include <string>
#include <type_traits>
#include <utility>
#include <version>

#if defined(__cpp_lib_expected) && __cpp_lib_expected >= 202202L
#include <expected>
#define KVROUTE_STD_EXPECTED 1
#else
#include "common/internal/expected_fallback.h"  // clang 14 + libstdc++ 12 (fuzz builds)
#endif

namespace kvroute {

// An error with a machine-readable kind and a human-readable message.
struct Error {
  enum class Kind {
    kInvalidArgument,  // bad input from a client or a file
    kNotFound,
    kUnavailable,  // nothing to serve the request
    kTimeout,
    kIo,  // network or file I/O failed
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

// Expected<T, E> / Unexpected<E>: std::expected where the standard library has it, else the
// fallback.
#ifdef KVROUTE_STD_EXPECTED
template <typename T, typename E>
using Expected = std::expected<T, E>;
template <typename E>
using Unexpected = std::unexpected<E>;
#else
template <typename T, typename E>
using Expected = internal::Expected<T, E>;
template <typename E>
using Unexpected = internal::Unexpected<E>;
#endif

// make_unexpected(e): the error alternative of any Expected<T, decltype(e)>.
template <typename E>
Unexpected<std::decay_t<E>> make_unexpected(E&& e) {
  return Unexpected<std::decay_t<E>>(std::forward<E>(e));
}

template <typename T>
using Result = Expected<T, Error>;

using Status = Expected<void, Error>;

inline Unexpected<Error> fail(Error e) { return Unexpected<Error>(std::move(e)); }

}  // namespace kvroute

#define KVROUTE_CONCAT_INNER(a, b) a##b
#define KVROUTE_CONCAT(a, b) KVROUTE_CONCAT_INNER(a, b)
#define KVROUTE_TRY_IMPL(tmp, decl, expr)                              \
  auto tmp = (expr);                                                   \
  if (!tmp) return ::kvroute::make_unexpected(std::move(tmp.error())); \
  decl = std::move(*tmp)
#define KVROUTE_TRY_BIND(decl, expr) \
  KVROUTE_TRY_IMPL(KVROUTE_CONCAT(kvroute_try_, __LINE__), decl, expr)
#define KVROUTE_TRY_STATUS(expr)                                                \
  do {                                                                          \
    if (auto kvroute_try_status = (expr); !kvroute_try_status)                  \
      return ::kvroute::make_unexpected(std::move(kvroute_try_status.error())); \
  } while (false)
#define KVROUTE_TRY_SELECT(a, b, name, ...) name
// KVROUTE_TRY(decl, expr): evaluates expr (a Result); on error returns the error, else binds the
// value to decl. KVROUTE_TRY(expr): expr is a Status (or a Result whose value is not needed); on
// error returns the error. The caller returns any Result<U> or Status.
#define KVROUTE_TRY(...) \
  KVROUTE_TRY_SELECT(__VA_ARGS__, KVROUTE_TRY_BIND, KVROUTE_TRY_STATUS, unused)(__VA_ARGS__)
