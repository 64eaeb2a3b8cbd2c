// File: common/internal/expected_fallback.h
//
// A minimal stand-in for std::expected, used only where the standard library does not provide it:
// clang 14 (our libFuzzer compiler) cannot compile libstdc++ 12's <expected>, whose guard needs
// C++20 concepts at level 202002. GCC builds never include this file (common/result.h picks
// std::expected). It covers the part of std::expected the code base uses: construction from a value
// or an Unexpected, has_value/bool,
// *, ->, value(), error(), value_or(); Expected<void, E> for Status.
//
// Thread-safety: value types with no shared state, as std::expected; not synchronized.
#pragma once

#include <cstdlib>
#include <optional>
#include <type_traits>
#include <utility>
#include <variant>

namespace kvroute::internal {

template <typename E>
class Unexpected {
 public:
  explicit Unexpected(E e) : error_(std::move(e)) {}
  E& error() & { return error_; }
  const E& error() const& { return error_; }
  E&& error() && { return std::move(error_); }

 private:
  E error_;
};

template <typename E>
Unexpected(E) -> Unexpected<E>;

template <typename T, typename E>
class Expected {
 public:
  using value_type = T;
  using error_type = E;

  Expected() requires std::is_default_constructible_v<T> : v_(std::in_place_index<0>) {}
  template <typename U = T>
  requires(std::is_constructible_v<T, U&&> && !std::is_same_v<std::remove_cvref_t<U>, Expected> &&
           !std::is_same_v<std::remove_cvref_t<U>, std::in_place_t>) Expected(U&& value)
      : v_(std::in_place_index<0>, std::forward<U>(value)) {}  // NOLINT: implicit like std
  template <typename G>
  Expected(const Unexpected<G>& u) : v_(std::in_place_index<1>, u.error()) {}  // NOLINT
  template <typename G>
  Expected(Unexpected<G>&& u) : v_(std::in_place_index<1>, std::move(u).error()) {}  // NOLINT

  bool has_value() const { return v_.index() == 0; }
  explicit operator bool() const { return has_value(); }

  T& operator*() & { return std::get<0>(v_); }
  const T& operator*() const& { return std::get<0>(v_); }
  T&& operator*() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &std::get<0>(v_); }
  const T* operator->() const { return &std::get<0>(v_); }

  T& value() & { return checked(), std::get<0>(v_); }
  const T& value() const& { return checked(), std::get<0>(v_); }
  T&& value() && { return checked(), std::get<0>(std::move(v_)); }

  E& error() & { return std::get<1>(v_); }
  const E& error() const& { return std::get<1>(v_); }
  E&& error() && { return std::get<1>(std::move(v_)); }

  template <typename U>
  T value_or(U&& fallback) const& {
    return has_value() ? std::get<0>(v_) : static_cast<T>(std::forward<U>(fallback));
  }
  template <typename U>
  T value_or(U&& fallback) && {
    return has_value() ? std::get<0>(std::move(v_)) : static_cast<T>(std::forward<U>(fallback));
  }

 private:
  void checked() const {
    if (!has_value()) std::abort();  // std::expected would throw bad_expected_access
  }
  std::variant<T, E> v_;
};

template <typename E>
class Expected<void, E> {
 public:
  using value_type = void;
  using error_type = E;

  Expected() = default;
  template <typename G>
  Expected(const Unexpected<G>& u) : error_(u.error()) {}  // NOLINT
  template <typename G>
  Expected(Unexpected<G>&& u) : error_(std::move(u).error()) {}  // NOLINT

  bool has_value() const { return !error_.has_value(); }
  explicit operator bool() const { return has_value(); }
  void operator*() const {}
  void value() const {
    if (!has_value()) std::abort();
  }
  E& error() & { return *error_; }
  const E& error() const& { return *error_; }
  E&& error() && { return std::move(*error_); }

 private:
  std::optional<E> error_;
};

}  // namespace kvroute::internal
