#include "http/internal/socket_io.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <tuple>

#include "http/internal/deadline.h"

namespace kvroute::http {
namespace {

using namespace std::chrono_literals;

// A connected loopback TCP pair: `reader` (TCP_INQ on) and `writer`, both blocking.
struct Pair {
  int reader = -1, writer = -1;
  Pair() {
    const int lst = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    EXPECT_EQ(::bind(lst, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(lst, 1), 0);
    EXPECT_EQ(::getsockname(lst, reinterpret_cast<sockaddr*>(&a), &len), 0);
    writer = ::socket(AF_INET, SOCK_STREAM, 0);
    EXPECT_EQ(::connect(writer, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    reader = ::accept(lst, nullptr, nullptr);
    ::close(lst);
    EXPECT_TRUE(enable_inq(reader));
  }
  ~Pair() {
    if (reader >= 0) ::close(reader);
    if (writer >= 0) ::close(writer);
  }
  void send(std::string_view s) const {
    ASSERT_EQ(::send(writer, s.data(), s.size(), 0), static_cast<ssize_t>(s.size()));
  }
  // Waits until the reader has something (bytes, a FIN or a reset) to read.
  void await_readable() const {
    pollfd p{reader, POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 5000), 1);
  }
  // Closes the writer with a reset (SO_LINGER 0) instead of a FIN.
  void reset_writer() {
    linger l{1, 0};
    ::setsockopt(writer, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    ::close(writer);
    writer = -1;
  }
};

TEST(DrainAware, ReadNowTellsWhetherTheQueueIsEmpty) {
  Pair p;
  char buf[64];
  bool drained = false;
  boost::system::error_code ec;
  std::size_t n = 0;
  EXPECT_FALSE(read_now(p.reader, boost::asio::buffer(buf), drained, ec, n));  // nothing yet
  p.send("0123456789");
  p.await_readable();
  ASSERT_TRUE(read_now(p.reader, boost::asio::buffer(buf, 4), drained, ec, n));
  EXPECT_FALSE(ec);
  EXPECT_EQ(std::string(buf, n), "0123");
  EXPECT_FALSE(drained);  // six bytes left
  ASSERT_TRUE(read_now(p.reader, boost::asio::buffer(buf), drained, ec, n));
  EXPECT_EQ(std::string(buf, n), "456789");
  EXPECT_TRUE(drained);
}

TEST(DrainAware, AFinBehindTheLastBytesIsNotEmpty) {
  Pair p;
  p.send("last words");
  ::shutdown(p.writer, SHUT_WR);
  p.await_readable();
  ::usleep(20 * 1000);  // let the FIN land behind the bytes
  char buf[64];
  bool drained = true;
  boost::system::error_code ec;
  std::size_t n = 0;
  ASSERT_TRUE(read_now(p.reader, boost::asio::buffer(buf), drained, ec, n));
  EXPECT_EQ(std::string(buf, n), "last words");
  EXPECT_FALSE(drained);  // the kernel counts a pending FIN as one byte
  ASSERT_TRUE(read_now(p.reader, boost::asio::buffer(buf), drained, ec, n));
  EXPECT_EQ(ec, boost::asio::error::eof);
}

#ifdef KVROUTE_DRAIN_AWARE
// The receive operation Asio runs for a DrainAwareBuffer reports an emptied queue to the reactor,
// which then waits for the next edge instead of reading at once.
TEST(DrainAware, TheReceiveOperationReportsExhaustion) {
  using Op = boost::asio::detail::reactive_socket_recv_op_base<DrainAwareBuffer>;
  Pair p;
  ::fcntl(p.reader, F_SETFL, ::fcntl(p.reader, F_GETFL) | O_NONBLOCK);  // as Asio sets it
  p.send("abcdef");
  p.await_readable();
  char buf[64];
  bool drained = false;
  const boost::system::error_code success;
  Op part(success, p.reader, boost::asio::detail::socket_ops::stream_oriented,
          drain_aware(boost::asio::buffer(buf, 2), &drained), 0, nullptr);
  EXPECT_EQ(part.perform(), boost::asio::detail::reactor_op::done);
  EXPECT_FALSE(drained);
  Op rest(success, p.reader, boost::asio::detail::socket_ops::stream_oriented,
          drain_aware(boost::asio::buffer(buf), &drained), 0, nullptr);
  EXPECT_EQ(rest.perform(), boost::asio::detail::reactor_op::done_and_exhausted);
  EXPECT_TRUE(drained);
  Op empty(success, p.reader, boost::asio::detail::socket_ops::stream_oriented,
           drain_aware(boost::asio::buffer(buf), &drained), 0, nullptr);
  EXPECT_EQ(empty.perform(),
            boost::asio::detail::reactor_op::not_done);  // EAGAIN: wait for the edge
}
#endif

// Through the reactor: bytes that arrive after a read that emptied the queue still complete the
// next read, and a reset queued behind the last bytes is found by the read in the middle of a
// message at once, not at a timeout.
TEST(DrainAware, LaterBytesAndAQueuedResetAreNotMissed) {
  Pair p;
  net::io_context ioc;
  Socket s(ioc.get_executor(), net::ip::tcp::v4(), ::dup(p.reader));
  std::thread later;
  auto fut = net::co_spawn(
      ioc,
      [&]() -> Task<std::string> {
        std::string log;
        char buf[64];
        bool drained = false;
        p.send("one");
        auto [ec1, n1] =
            co_await s.async_read_some(drain_aware(net::buffer(buf), &drained), use_task_tuple);
        log += std::string(buf, n1) + (drained ? "/drained " : "/more ");
        // The next bytes come later; the reactor waits for their edge.
        later = std::thread([&p] {
          std::this_thread::sleep_for(50ms);
          p.send("two");
        });
        auto [ec2, n2] =
            co_await s.async_read_some(drain_aware(net::buffer(buf), &drained), use_task_tuple);
        log += std::string(buf, n2) + " ";
        later.join();  // done with the writer before it is reset (the kernel's ordering is not
                       // TSan's)
        // Bytes and a reset arrive together, before the reads.
        p.send("three");
        p.reset_writer();
        ::usleep(50 * 1000);
        auto [ec3, n3] =
            co_await s.async_read_some(drain_aware(net::buffer(buf), &drained), use_task_tuple);
        log += std::string(buf, n3) + " ";
        auto [ec4, n4] = co_await read_more(s, net::buffer(buf), drained);
        log += ec4 ? "error" : "no error";
        co_return log;
      },
      net::use_future);
  ioc.run_for(5s);
  if (later.joinable()) later.join();
  ASSERT_EQ(fut.wait_for(0s), std::future_status::ready)
      << "a read waited for an edge that never came";
  EXPECT_EQ(fut.get(), "one/drained two three error");
}

// A read that succeeds at once (the socket had bytes after a draining read) still completes through
// the scheduler: work queued meanwhile runs before the reader resumes.
TEST(DrainAware, AReadThatSucceedsAtOnceYieldsToTheWorker) {
  Pair p;
  net::io_context ioc;
  Socket s(ioc.get_executor(), net::ip::tcp::v4(), ::dup(p.reader));
  p.send("bytes waiting");
  p.await_readable();
  auto fut = net::co_spawn(
      ioc,
      [&]() -> Task<std::string> {
        bool drained = true;  // as after a read that emptied the queue
        bool other_ran = false;
        net::post(ioc, [&] { other_ran = true; });
        char buf[64];
        auto [ec, n] = co_await read_more(s, net::buffer(buf), drained);
        co_return std::string(buf, n) + (other_ran ? " after the other work" : " first");
      },
      net::use_future);
  ioc.run_for(5s);
  ASSERT_EQ(fut.wait_for(0s), std::future_status::ready);
  EXPECT_EQ(fut.get(), "bytes waiting after the other work");
}

std::string concat(const GatherBuffers& g) {
  std::string out;
  for (const auto& b : g) out.append(static_cast<const char*>(b.data()), b.size());
  return out;
}

TEST(GatherBuffers, ConsumeKeepsWhatIsLeftInOrder) {
  const std::string head = "HEAD", body = "body", tail = "!";
  GatherBuffers g(std::array<net::const_buffer, 4>{net::buffer(head), net::const_buffer(),
                                                   net::buffer(body), net::buffer(tail)});
  EXPECT_EQ(concat(g), "HEADbody!");
  EXPECT_TRUE(g.consume(2));
  EXPECT_EQ(concat(g), "ADbody!");
  EXPECT_TRUE(g.consume(2));  // the rest of the head, and the empty buffer behind it
  EXPECT_EQ(concat(g), "body!");
  EXPECT_EQ(g.count(), 2u);
  EXPECT_TRUE(g.consume(4));
  EXPECT_EQ(concat(g), "!");
  EXPECT_FALSE(g.consume(1));
  EXPECT_EQ(g.count(), 0u);
  GatherBuffers empty(std::array<net::const_buffer, 2>{net::buffer(head), net::const_buffer()});
  EXPECT_FALSE(empty.consume(4));  // a trailing empty buffer is nothing left to write
}

// A write larger than the socket buffers completes in several partial writes, each resuming where
// the last one stopped, while the reader drains slowly.
TEST(GatherBuffers, WriteAllSurvivesPartialWrites) {
  Pair p;
  net::io_context ioc;
  Socket s(ioc.get_executor(), net::ip::tcp::v4(), ::dup(p.writer));
  const int small = 4096;
  ::setsockopt(s.native_handle(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  std::string head(1000, 'h'), body(3 << 20, 'b');
  for (std::size_t i = 0; i < body.size(); i += 4096)
    body[i] = static_cast<char>('a' + (i / 4096) % 26);
  std::string received;
  std::thread reader([&] {
    char buf[65536];
    for (;;) {
      const ssize_t n = ::recv(p.reader, buf, sizeof buf, 0);
      if (n <= 0) break;
      received.append(buf, static_cast<std::size_t>(n));
      if (received.size() < 64 * 1024) std::this_thread::sleep_for(1ms);  // slow at first
    }
  });
  auto fut = net::co_spawn(
      ioc,
      [&]() -> Task<std::size_t> {
        auto [ec, n] = co_await write_all(s, GatherBuffers(std::array<net::const_buffer, 2>{
                                                 net::buffer(head), net::buffer(body)}));
        EXPECT_FALSE(ec) << ec.message();
        boost::system::error_code ignored;
        s.shutdown(net::socket_base::shutdown_send, ignored);
        co_return n;
      },
      net::use_future);
  ioc.run_for(20s);
  ::shutdown(p.reader, SHUT_RD);
  reader.join();
  ASSERT_EQ(fut.wait_for(0s), std::future_status::ready);
  EXPECT_EQ(fut.get(), head.size() + body.size());
  EXPECT_TRUE(received == head + body) << received.size();
}

// write_now writes what fits at once: all of a small message; with a full send buffer and no
// reader, part of a large one, leaving exactly the rest for write_all; an error once the peer
// reset.
TEST(GatherBuffers, WriteNowWritesWhatFitsAndLeavesTheRest) {
  Pair p;
  const std::string head = "HEAD", body = "body";
  GatherBuffers small(std::array<net::const_buffer, 2>{net::buffer(head), net::buffer(body)});
  boost::system::error_code ec;
  EXPECT_TRUE(write_now(p.writer, small, ec));
  EXPECT_FALSE(ec);
  char buf[16];
  ASSERT_EQ(::recv(p.reader, buf, sizeof buf, 0), 8);
  EXPECT_EQ(std::string_view(buf, 8), "HEADbody");

  const int tiny = 4096;
  ::setsockopt(p.writer, SOL_SOCKET, SO_SNDBUF, &tiny, sizeof tiny);
  const std::string big(8 << 20, 'x');  // more than the send and receive buffers together
  GatherBuffers large(net::buffer(big));
  EXPECT_FALSE(write_now(p.writer, large, ec));  // the socket is blocking: write_now still returns
  EXPECT_FALSE(ec);
  std::size_t left = 0;
  for (const auto& b : large) left += b.size();
  EXPECT_GT(left, 0u);
  EXPECT_LT(left, big.size());
  // Once the buffers are full, a write_now writes nothing and leaves everything.
  bool full = false;
  for (int i = 0; i < 100 && !full; ++i) {
    GatherBuffers again(net::buffer(big));
    EXPECT_FALSE(write_now(p.writer, again, ec));
    EXPECT_FALSE(ec);
    full = again.count() == 1 && again.begin()->size() == big.size();
  }
  EXPECT_TRUE(full);

  linger l{1, 0};
  ::setsockopt(p.reader, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  ::close(p.reader);
  p.reader = -1;
  std::this_thread::sleep_for(20ms);  // the reset reaches the writer
  GatherBuffers after(net::buffer(head));
  EXPECT_TRUE(write_now(p.writer, after, ec));
  EXPECT_TRUE(ec) << "a write after a reset fails";
}

}  // namespace
}  // namespace kvroute::http

namespace kvroute::http {
namespace {

// A sweep's number is the ticks elapsed since the epoch, whatever the timer's lateness: counting
// sweeps made a 30 s timeout fire after 36 s when each 50 ms re-arm fired after 55-60 ms.
TEST(SweepNumber, CountsTicksElapsedNotSweepsRun) {
  using namespace std::chrono_literals;
  const auto epoch = coarse_now() - 1000ms;
  // Three sweeps ran (late) in that second: the next one is still number ~20, not 4.
  const std::uint64_t n = sweep_number(3, epoch, 50ms);
  EXPECT_GE(n, 20u);
  EXPECT_LE(n, 21u);
  // Never behind the last one, even when the clock reads the same tick.
  EXPECT_EQ(sweep_number(100, epoch, 50ms), 101u);
  // A 30 s deadline set at sweep n is reached 30 s of ticks later, plus at most one.
  EXPECT_EQ(deadline_after(n, 30000ms, 50ms), n + 601);
}

}  // namespace
}  // namespace kvroute::http
