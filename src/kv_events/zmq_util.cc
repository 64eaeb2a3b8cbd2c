// File: kv_events/zmq_util.cc
#include "kv_events/internal/zmq_util.h"

#include <sys/eventfd.h>
#include <unistd.h>
#include <zmq.h>

#include <cerrno>

namespace kvroute::kv_events::detail {

void SocketCloser::operator()(void* s) const {
  if (s != nullptr) zmq_close(s);
}

std::string zmq_error(std::string_view what) {
  return std::string(what) + ": " + zmq_strerror(zmq_errno());
}

bool send_frames(void* socket, std::initializer_list<std::string_view> frames) {
  std::size_t i = 0;
  for (auto f : frames) {
    const int flags = ZMQ_DONTWAIT | (++i < frames.size() ? ZMQ_SNDMORE : 0);
    int rc;
    do {
      rc = zmq_send(socket, f.data(), f.size(), flags);
    } while (rc < 0 && zmq_errno() == EINTR);
    // Parts after the first are queued atomically with it; only the first can be refused.
    if (rc < 0) return false;
  }
  return true;
}

bool recv_frames(void* socket, std::vector<std::string>& frames, std::size_t max_frames,
                 bool* truncated) {
  frames.clear();
  if (truncated != nullptr) *truncated = false;
  zmq_msg_t msg;
  zmq_msg_init(&msg);
  bool got = false;
  for (;;) {
    int rc;
    do {
      rc = zmq_msg_recv(&msg, socket, ZMQ_DONTWAIT);
    } while (rc < 0 && zmq_errno() == EINTR);
    if (rc < 0) break;  // EAGAIN before the first part: nothing waiting
    got = true;
    if (frames.size() < max_frames) {
      frames.emplace_back(static_cast<const char*>(zmq_msg_data(&msg)), zmq_msg_size(&msg));
    } else if (truncated != nullptr) {
      *truncated = true;
    }
    if (!zmq_msg_more(&msg)) break;
  }
  zmq_msg_close(&msg);
  return got;
}

std::string be64(std::uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<std::size_t>(i)] = static_cast<char>(v >> (56 - 8 * i));
  return s;
}

std::uint64_t read_be64(std::string_view b) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v = (v << 8) | static_cast<unsigned char>(b[static_cast<std::size_t>(i)]);
  return v;
}

Wakeup::Wakeup() : fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
Wakeup::~Wakeup() {
  if (fd_ >= 0) close(fd_);
}
void Wakeup::signal() {
  const std::uint64_t one = 1;
  [[maybe_unused]] auto n = write(fd_, &one, sizeof one);  // EAGAIN only at 2^64-2: ignore
}
void Wakeup::drain() {
  std::uint64_t v;
  [[maybe_unused]] auto n = read(fd_, &v, sizeof v);
}

}  // namespace kvroute::kv_events::detail
