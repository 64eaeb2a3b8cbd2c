// File: http/internal/in_buffer.h
//
// Bytes received on a connection and not yet parsed (a head, a body, whatever was pipelined
// behind them): read into prepare(), parse view(), consume() what was used. A view stays valid
// until the next prepare().
//
// Thread-safety: not synchronized: one per connection, used by that connection's coroutine on its
// worker thread.
#pragma once

#include <algorithm>
#include <boost/asio/buffer.hpp>
#include <cstddef>
#include <cstring>
#include <memory>
#include <string_view>

namespace kvroute::http {

class InBuffer {
 public:
  std::string_view view() const { return {data_.get() + begin_, end_ - begin_}; }
  std::size_t size() const { return end_ - begin_; }
  void consume(std::size_t n) {
    begin_ += n;
    if (begin_ == end_) begin_ = end_ = 0;
  }
  // Room for at least n more bytes (moves the unparsed bytes to the front, or grows).
  boost::asio::mutable_buffer prepare(std::size_t n) {
    if (cap_ - end_ < n) {
      if (begin_ > 0) {
        std::memmove(data_.get(), data_.get() + begin_, end_ - begin_);
        end_ -= begin_;
        begin_ = 0;
      }
      if (cap_ - end_ < n) {
        const std::size_t cap = std::max(cap_ * 2, end_ + n);
        auto bigger = std::make_unique_for_overwrite<char[]>(cap);
        if (end_ > 0) std::memcpy(bigger.get(), data_.get(), end_);
        data_ = std::move(bigger);
        cap_ = cap;
      }
    }
    return boost::asio::buffer(data_.get() + end_, cap_ - end_);
  }
  void commit(std::size_t n) { end_ += n; }

 private:
  std::unique_ptr<char[]> data_;
  std::size_t cap_ = 0, begin_ = 0, end_ = 0;
};

}  // namespace kvroute::http
