// File: kv_events/internal/zmq_util.h
//
// Internal helpers over libzmq's C API for the publisher and the subscriber: an owning socket
// handle, non-blocking multipart send/receive without exceptions, big-endian seq frames, and an
// eventfd wake-up that any thread may signal and a zmq_poll loop can wait on.
// Thread-safety: a Socket belongs to one thread at a time (libzmq rule); Wakeup::signal is
// thread-safe.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace kvroute::kv_events::detail {

struct SocketCloser {
  void operator()(void* s) const;
};
using Socket = std::unique_ptr<void, SocketCloser>;

// "what: <zmq_strerror(errno)>".
std::string zmq_error(std::string_view what);

// Sends all frames without blocking; false when the socket refused (EAGAIN, error).
bool send_frames(void* socket, std::initializer_list<std::string_view> frames);

// Receives one whole multipart message without blocking into `frames` (cleared first). Returns
// false when nothing was waiting. At most `max_frames` are kept; `*truncated` is set when the
// message had more (the rest is drained).
bool recv_frames(void* socket, std::vector<std::string>& frames, std::size_t max_frames,
                 bool* truncated);

std::string be64(std::uint64_t v);
std::uint64_t read_be64(std::string_view eight_bytes);  // first 8 bytes, caller checks size

// eventfd: signal() from any thread, fd() goes readable, drain() in the polling thread.
class Wakeup {
 public:
  Wakeup();
  ~Wakeup();
  Wakeup(const Wakeup&) = delete;
  Wakeup& operator=(const Wakeup&) = delete;
  [[nodiscard]] bool ok() const { return fd_ >= 0; }
  [[nodiscard]] int fd() const { return fd_; }
  void signal();
  void drain();

 private:
  int fd_ = -1;
};

}  // namespace kvroute::kv_events::detail
