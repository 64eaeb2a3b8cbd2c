// File: http/message.h
//
// Plain HTTP request/response values shared by the server, the client and the handlers, so that
// only the server and the client touch sockets.
//
// Thread-safety: value types, not synchronized: a Request, its Headers and a HeadBuffer belong to
// one connection's coroutine on its worker thread (a large body's Request is read on an offload
// thread while that coroutine waits, http/offload.h). The free functions are pure; safe from any
// thread.
#pragma once

#include <algorithm>
#include <boost/container/small_vector.hpp>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/json.h"

namespace kvroute::http {

// Header fields in arrival order, as (name, value) views. The names and values live in one buffer
// owned by the Headers and the fields are offsets into it: a parsed head costs one allocation (its
// bytes, copied once) instead of two strings per field. Views stay valid until the Headers is
// changed, moved from or destroyed (a short block lives inside the object, so a move does not
// carry it over as a vector of strings would); copies and moves hold their own bytes. Do not
// emplace_back() a view of the same Headers: the append may move the bytes it points into.
class Headers {
 public:
  using value_type = std::pair<std::string_view, std::string_view>;

  Headers() = default;
  Headers(std::initializer_list<value_type> fields);

  void emplace_back(std::string_view name, std::string_view value);
  void clear() {
    data_.clear();
    fields_.clear();
  }
  std::size_t size() const { return fields_.size(); }
  bool empty() const { return fields_.empty(); }
  // Drops the fields whose name satisfies `drop` (their bytes stay in the buffer).
  template <class Pred>
  void remove_if(Pred drop) {
    const std::string_view d(data_);
    fields_.erase(
        std::remove_if(fields_.begin(), fields_.end(),
                       [&](const Field& f) { return drop(d.substr(f.name_off, f.name_len)); }),
        fields_.end());
  }
  value_type operator[](std::size_t i) const {
    const Field& f = fields_[i];
    return {std::string_view(data_).substr(f.name_off, f.name_len),
            std::string_view(data_).substr(f.value_off, f.value_len)};
  }

  class const_iterator {
   public:
    using value_type = Headers::value_type;
    using difference_type = std::ptrdiff_t;
    const_iterator() = default;
    const_iterator(const Headers* h, std::size_t i) : h_(h), i_(i) {}
    value_type operator*() const { return (*h_)[i_]; }
    const_iterator& operator++() {
      ++i_;
      return *this;
    }
    const_iterator operator++(int) {
      auto old = *this;
      ++i_;
      return old;
    }
    bool operator==(const const_iterator& o) const { return i_ == o.i_; }

   private:
    const Headers* h_ = nullptr;
    std::size_t i_ = 0;
  };
  const_iterator begin() const { return {this, 0}; }
  const_iterator end() const { return {this, fields_.size()}; }

  // For parsers: `bytes` (a whole field block) becomes the storage, and add_parsed() names fields
  // by their offsets in it.
  void adopt(std::string_view bytes) {
    clear();
    data_.assign(bytes);
  }
  void add_parsed(std::size_t name_off, std::size_t name_len, std::size_t value_off,
                  std::size_t value_len) {
    fields_.push_back({static_cast<std::uint32_t>(name_off), static_cast<std::uint32_t>(name_len),
                       static_cast<std::uint32_t>(value_off),
                       static_cast<std::uint32_t>(value_len)});
  }

 private:
  struct Field {
    std::uint32_t name_off, name_len, value_off, value_len;
  };
  std::string data_;
  boost::container::small_vector<Field, 12> fields_;
};

// A message head under construction: in place up to kInline bytes (nearly every head), in a
// string beyond. A head built in a std::string cost a heap allocation per message.
class HeadBuffer {
 public:
  HeadBuffer() = default;
  HeadBuffer(const HeadBuffer&) = delete;
  HeadBuffer& operator=(const HeadBuffer&) = delete;
  HeadBuffer& operator+=(std::string_view s) {
    append(s.data(), s.size());
    return *this;
  }
  HeadBuffer& operator+=(char c) {
    append(&c, 1);
    return *this;
  }
  void append(const char* p, std::size_t n) {
    if (!spilled_ && size_ + n <= kInline) {
      std::memcpy(inline_ + size_, p, n);
      size_ += n;
      return;
    }
    if (!spilled_) {
      spill_.reserve(2 * (size_ + n));
      spill_.assign(inline_, size_);
      spilled_ = true;
    }
    spill_.append(p, n);
  }
  void append_decimal(std::uint64_t v);
  std::string_view view() const {
    return spilled_ ? std::string_view(spill_) : std::string_view(inline_, size_);
  }

 private:
  static constexpr std::size_t kInline = 512;
  char inline_[kInline];
  std::size_t size_ = 0;
  bool spilled_ = false;
  std::string spill_;
};

// Case-insensitive header lookup; empty when absent.
std::string_view find_header(const Headers& headers, std::string_view name);

namespace internal {
inline std::uint64_t load8(const char* p) {
  std::uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
// Each byte of `x` with ASCII upper-case letters lowered, others unchanged (SWAR: the sums below
// cannot carry between bytes because each byte's high bit is cleared first).
inline std::uint64_t lower8(std::uint64_t x) {
  constexpr std::uint64_t kLow7 = 0x7f7f7f7f7f7f7f7full, kHigh = 0x8080808080808080ull;
  const std::uint64_t h = x & kLow7;
  const std::uint64_t ge_a = h + 0x3f3f3f3f3f3f3f3full;  // high bit set where byte >= 'A'
  const std::uint64_t gt_z = h + 0x2525252525252525ull;  // high bit set where byte > 'Z'
  return x | ((ge_a & ~gt_z & ~x & kHigh) >> 2);
}
inline char lower1(char c) {
  return static_cast<char>(c | (static_cast<unsigned char>(c - 'A') < 26 ? 0x20 : 0));
}

// Case-insensitive equality of n bytes at x and y, eight at a time: whole words, then the last
// eight (or two overlapping four) bytes again, so no byte-by-byte tail. `Lower` applies to y:
// lower8 when y may hold upper case, nothing when y is known lower-case (a literal).
template <typename Lower>
[[gnu::always_inline]] inline bool iequals_n(const char* x, const char* y, std::size_t n,
                                             Lower lower_y) {
  if (n >= 8) {
    for (std::size_t i = 0; i + 8 < n; i += 8) {
      if (lower8(load8(x + i)) != lower_y(load8(y + i))) return false;
    }
    return lower8(load8(x + n - 8)) == lower_y(load8(y + n - 8));
  }
  if (n >= 4) {
    const auto two = [n](const char* p) {
      std::uint32_t lo, hi;
      std::memcpy(&lo, p, 4);
      std::memcpy(&hi, p + n - 4, 4);
      return lo | (std::uint64_t{hi} << 32);
    };
    return lower8(two(x)) == lower_y(two(y));
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (lower1(x[i]) != static_cast<char>(lower_y(static_cast<unsigned char>(y[i])))) return false;
  }
  return true;
}
bool iequals_out_of_line(const char* x, const char* y, std::size_t n);
}  // namespace internal

// `s` without leading and trailing spaces and tabs (optional whitespace, RFC 9110 section 5.6.3).
inline std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Whether the comma-separated header list `value` holds `token` (case-insensitive; items trimmed).
bool header_list_has(std::string_view value, std::string_view token);

// An RFC 9110 token (header names, methods): non-empty, token characters only.
bool is_token(std::string_view s);
// A field value (RFC 9110 section 5.5): no control characters but tab.
bool is_field_value(std::string_view s);

// ASCII case-insensitive equality (header names, tokens). The length test is inline; most
// comparisons stop there.
inline bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && internal::iequals_out_of_line(a.data(), b.data(), a.size());
}

// As iequals, where `lower` is known lower-case (a literal such as "content-length"): only `a` is
// lowered, and the literal's words fold to constants.
[[gnu::always_inline]] inline bool iequals_lower(std::string_view a, std::string_view lower) {
  return a.size() == lower.size() &&
         internal::iequals_n(a.data(), lower.data(), a.size(), [](std::uint64_t v) { return v; });
}

struct Request {
  std::string method;  // "GET", "POST", ...
  std::string target;  // "/v1/completions?x=y"
  Headers headers;
  std::string body;
  bool keep_alive = true;
  std::string_view remote_address;  // the client's IP address (the connection's peer)
  bool secure = false;              // the connection is TLS

  std::string_view header(std::string_view name) const { return find_header(headers, name); }
  std::string_view path() const;  // target without the query string
};

// Reason phrase for a status code ("OK", "Not Found", ...).
std::string_view reason_phrase(int status);

// Escapes a string for inclusion inside JSON double quotes (common/json.h).
using kvroute::append_json_escaped;
using kvroute::append_json_escaped_valid_utf8;

}  // namespace kvroute::http
