// TcpConnection::start_echo(): a connection that sends back what it
// receives by itself, a bulk peer's bytes inside the kernel (splice()
// through a pipe), seen through a server on loopback: every byte back in
// order, under backpressure, with what on_message left first, and the end
// of the stream after the last byte.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>

#include "sys.h"
#include "tcpkit/tcp_connection.h"
#include "test_util.h"
#include "tls_test_util.h"

using namespace std::chrono_literals;
using namespace tcpkit;
using namespace tcpkit::test;

namespace {

// Byte i of a stream is i % 251 (a prime, so that shifted chunks differ).
std::string pattern(size_t offset, size_t n) {
  std::string out(n, '\0');
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<char>((offset + i) % 251);
  return out;
}

// What the server's echoes reported.
struct Echoed {
  Watched<size_t> total{0};
  Watched<size_t> in_kernel{0};
  EchoCallback callback() {
    return [this](const TcpConnectionPtr&, size_t n, bool kernel) {
      total.update([n](size_t& t) { t += n; });
      if (kernel) in_kernel.update([n](size_t& t) { t += n; });
    };
  }
};

// An echo server on one loop whose connections echo by themselves from
// the start, one client, and its connection on the server; on_message,
// which should never hear of a byte, counts what it hears (`seen`). The
// client is on this host (loopback), so the kernel echoes only when asked
// to always (`splice`).
struct KernelEcho {
  ServerHarness h;
  Tally tally;
  Echoed echoed;
  Watched<size_t> seen{0};
  TcpStream client;
  TcpConnectionPtr conn;

  explicit KernelEcho(ServerOptions options = {}, EchoSplice splice = EchoSplice::always) {
    options.threads = 1;
    h.start(options, [&, splice](TcpServer& s) {
      s.set_on_connection([&, splice, cb = tally.callback()](const TcpConnectionPtr& c) {
        if (c->connected()) {
          auto started = c->start_echo(echoed.callback(), splice);
          EXPECT_TRUE(started) << started.error().message();
          EXPECT_TRUE(c->echoing());
        }
        cb(c);
      });
      s.set_on_message([&](const TcpConnectionPtr&, Buffer& in) {
        const size_t n = in.readable_bytes();
        in.retrieve_all();
        seen.update([n](size_t& t) { t += n; });
      });
    });
    client = connect_client(h.address());
    conn = tally.wait_last();
  }

  // The client closes; the server must be left with nothing.
  void finish() {
    conn.reset();
    client.close();
    tally.forget();
    ASSERT_TRUE(tally.down.wait([](int n) { return n == 1; }));
    h.finish();
  }
};

void expect_echo(TcpStream& s, const std::string& msg) {
  ASSERT_TRUE(s.send_all(msg));
  EXPECT_EQ(recv_n(s, msg.size()), msg);
}

// Sends `total` bytes of the pattern from another thread, in chunks of
// `chunk`, while this one reads them back after `read_after`; true when
// every byte came back in order.
::testing::AssertionResult round_trip(TcpStream& client, size_t total, size_t chunk,
                                      std::chrono::milliseconds read_after) {
  std::thread sender([&] {
    for (size_t sent = 0; sent < total; sent += chunk) {
      auto r = client.send_all(pattern(sent, std::min(chunk, total - sent)));
      if (!r) return;
    }
  });
  std::this_thread::sleep_for(read_after);
  std::string got(total, '\0');
  auto r = client.recv_exact(got.data(), total);
  sender.join();
  if (!r) return ::testing::AssertionFailure() << "reading the echo: " << r.error().message();
  const std::string want = pattern(0, total);
  if (got != want) {
    const auto at = std::mismatch(got.begin(), got.end(), want.begin()).first - got.begin();
    return ::testing::AssertionFailure() << "the echo differs from byte " << at << " of " << total;
  }
  return ::testing::AssertionSuccess();
}

TEST(TcpConnectionEcho, BulkBytesGoBackInsideTheKernelInOrder) {
  constexpr size_t kTotal = 8 * 1024 * 1024;
  KernelEcho e;
  EXPECT_TRUE(round_trip(e.client, kTotal, 64 * 1024, 0ms));
  EXPECT_TRUE(e.echoed.total.wait([](size_t n) { return n == kTotal; })) << e.echoed.total.get();
  // A bulk peer's bytes go back inside the kernel: the first read of each
  // run of bulk reads copies, the ones after it splice, and short reads
  // between (the sender a little behind) switch back to copying. How many
  // runs there are depends on the machine's timing: on one, more than half
  // of the bytes went through the pipe on every backend; on another, 45-50%
  // on io_uring. Without the splice none do.
  EXPECT_GT(e.echoed.in_kernel.get(), kTotal / 8);
  EXPECT_EQ(e.seen.get(), 0U) << "on_message heard of echoed bytes";
  // The end of the stream follows the last byte back.
  ASSERT_TRUE(e.client.shutdown_write());
  EXPECT_EQ(read_to_eof(e.client), "");
  ASSERT_TRUE(e.tally.down.wait([](int n) { return n == 1; }));
  EXPECT_EQ(e.tally.reasons.get().at(0), make_error_code(Errc::peer_closed));
  e.finish();
}

// The socket stops taking the echo: bytes wait in the pipe, the reads
// behind them go the copying way, and the high-water mark `mark` pauses
// reading until the client reads again.
void expect_a_slow_reader_held_under(size_t mark) {
  constexpr size_t kTotal = 16 * 1024 * 1024;
  ServerOptions options;
  options.connection.high_water_mark = mark;
  KernelEcho e(options);
  Watched<size_t> most_queued{0};
  std::atomic<bool> done{false};
  std::thread watcher([&] {
    while (!done.load()) {
      const size_t queued = call_in(e.conn->loop(), [&] { return e.conn->output_bytes(); });
      most_queued.update([queued](size_t& m) { m = std::max(m, queued); });
      std::this_thread::sleep_for(5ms);
    }
  });
  EXPECT_TRUE(round_trip(e.client, kTotal, 200 * 1000, 300ms));
  done.store(true);
  watcher.join();
  EXPECT_TRUE(e.echoed.total.wait([](size_t n) { return n == kTotal; })) << e.echoed.total.get();
  EXPECT_GT(most_queued.get(), 0U) << "the echo never waited for the client";
  // Bounded: the mark plus what one read brings and one pipe holds.
  EXPECT_LE(most_queued.get(), options.connection.high_water_mark +
                                   options.connection.max_read_per_wakeup + 64 * 1024);
  EXPECT_EQ(e.seen.get(), 0U);
  e.finish();
}

TEST(TcpConnectionEcho, ASlowReaderGetsEveryByteInOrderUnderTheHighWaterMark) {
  expect_a_slow_reader_held_under(256 * 1024);
}

// Regression: the mark was checked only where a write crossed it. A pipe
// left holding the mark's worth (a mark of 64 KiB or less) was never
// checked, and every copying read behind it found the output over the mark
// already: reading never paused, and the queue grew without bound (400 MiB
// in a second with `tcpkit serve -m echo --high-water-mark 4096`).
TEST(TcpConnectionEcho, AMarkNoMoreThanThePipeHoldsStillBoundsTheEcho) {
  expect_a_slow_reader_held_under(16 * 1024);
  expect_a_slow_reader_held_under(64 * 1024);
}

TEST(TcpConnectionEcho, WhatOnMessageLeftGoesBackFirst) {
  ServerHarness h;
  Tally tally;
  Echoed echoed;
  Watched<int> messages{0};
  ServerOptions options;
  options.threads = 1;
  h.start(options, [&](TcpServer& s) {
    s.set_on_connection(tally.callback());
    // The first message stays in the buffer (a header not yet whole, say);
    // the second starts the echo, which sends both back, then the rest.
    s.set_on_message([&](const TcpConnectionPtr& c, Buffer&) {
      messages.update([](int& n) { ++n; });
      if (messages.get() < 2) return;
      auto started = c->start_echo(echoed.callback());
      EXPECT_TRUE(started) << started.error().message();
    });
  });
  auto client = connect_client(h.address());
  ASSERT_TRUE(client.send_all("hello "));
  ASSERT_TRUE(messages.wait([](int n) { return n == 1; }));
  ASSERT_TRUE(client.send_all("world "));
  EXPECT_EQ(recv_n(client, 12), "hello world ");
  ASSERT_TRUE(client.send_all("and more"));
  EXPECT_EQ(recv_n(client, 8), "and more");
  EXPECT_EQ(messages.get(), 2);
  EXPECT_TRUE(echoed.total.wait([](size_t n) { return n == 20; })) << echoed.total.get();
  EXPECT_EQ(echoed.in_kernel.get(), 0U) << "small messages went through the pipe";
  client.close();
  tally.forget();
  ASSERT_TRUE(tally.down.wait([](int n) { return n == 1; }));
  h.finish();
}

// The pipe ends this process holds: descriptors whose link reads
// "pipe:[...]". Not every descriptor: a sanitizer's runtime may open a file
// for a moment (it did under ASan, one more during a bulk echo).
size_t open_pipe_ends() {
  size_t n = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    const auto target = std::filesystem::read_symlink(entry.path(), ec);
    if (!ec && target.native().rfind("pipe:", 0) == 0) ++n;
  }
  return n;
}

// The most pipe ends this process held while `during` ran, sampled without
// pause from another thread.
template <typename F>
size_t most_pipe_ends_while(F during) {
  std::atomic<bool> done{false};
  std::atomic<size_t> most{open_pipe_ends()};
  std::thread sampler([&] {
    while (!done) {
      const size_t n = open_pipe_ends();
      if (n > most) most = n;
    }
  });
  during();
  done = true;
  sampler.join();
  return most;
}

TEST(TcpConnectionEcho, AConnectionBackToSmallMessagesGivesItsPipeBack) {
  KernelEcho e;
  const size_t without_pipe = open_pipe_ends();
  // While the peer sends in bulk the echo holds a pipe (two ends). Once the
  // bulk is over the pipe may already be back (the sender's last bytes can
  // come in short reads), so the count is taken during the bulk. It is a
  // lower bound only: a sample that reads the directory while the pipe is
  // given back and made again can count both (seen under ASan); that no
  // pipe stays behind is checked once the bulk is over.
  constexpr size_t kBulk = 8 * 1024 * 1024;
  auto bulk = [&] { EXPECT_TRUE(round_trip(e.client, kBulk, 64 * 1024, 0ms)); };
  EXPECT_GE(most_pipe_ends_while(bulk), without_pipe + 2) << "a bulk peer's echo holds a pipe";
  EXPECT_TRUE(e.echoed.in_kernel.wait([](size_t n) { return n > 0; }));
  for (int i = 0; i < 8; ++i) expect_echo(e.client, "small " + std::to_string(i));
  EXPECT_EQ(open_pipe_ends(), without_pipe) << "the pipe outlived the bulk";
  // A bulk peer again gets one again.
  EXPECT_GE(most_pipe_ends_while(bulk), without_pipe + 2);
  e.finish();
}

// A peer on this host gets the echo by copies unless the kernel is asked
// for always: spliced, its bytes would come back in the pages its own sends
// filled, which its kernel then cannot reuse for the next send.
TEST(TcpConnectionEcho, APeerOnThisHostIsEchoedByCopiesUnlessAskedOtherwise) {
  constexpr size_t kTotal = 4 * 1024 * 1024;
  for (const EchoSplice splice : {EchoSplice::remote, EchoSplice::never}) {
    KernelEcho e({}, splice);
    const size_t without_pipe = open_pipe_ends();
    auto bulk = [&] { EXPECT_TRUE(round_trip(e.client, kTotal, 64 * 1024, 0ms)); };
    EXPECT_EQ(most_pipe_ends_while(bulk), without_pipe) << "the echo made a pipe";
    EXPECT_TRUE(e.echoed.total.wait([](size_t n) { return n == kTotal; })) << e.echoed.total.get();
    EXPECT_EQ(e.echoed.in_kernel.get(), 0U);
    EXPECT_EQ(e.seen.get(), 0U) << "on_message heard of echoed bytes";
    e.finish();
  }
}

// A later start_echo() changes the way: this peer, on loopback, is echoed
// by copies at first, then inside the kernel, then by copies again, and
// the pipe goes back as soon as the echo no longer needs it.
TEST(TcpConnectionEcho, ALaterCallChangesTheWay) {
  constexpr size_t kTotal = 4 * 1024 * 1024;
  KernelEcho e({}, EchoSplice::remote);
  const size_t without_pipe = open_pipe_ends();
  EXPECT_TRUE(round_trip(e.client, kTotal, 64 * 1024, 0ms));
  EXPECT_TRUE(e.echoed.total.wait([](size_t n) { return n == kTotal; }));
  EXPECT_EQ(e.echoed.in_kernel.get(), 0U);
  auto again = call_in(e.conn->loop(),
                       [&] { return e.conn->start_echo(e.echoed.callback(), EchoSplice::always); });
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_TRUE(round_trip(e.client, 2 * kTotal, 64 * 1024, 0ms));
  EXPECT_TRUE(e.echoed.total.wait([](size_t n) { return n == 3 * kTotal; }));
  EXPECT_GT(e.echoed.in_kernel.get(), 0U) << "asked for always, the kernel echoed nothing";
  auto copies = call_in(e.conn->loop(), [&] {
    auto r = e.conn->start_echo(e.echoed.callback(), EchoSplice::never);
    // The pipe is empty once its bytes came back (the client read them all).
    EXPECT_EQ(open_pipe_ends(), without_pipe) << "the pipe outlived the kernel echo";
    return r;
  });
  ASSERT_TRUE(copies) << copies.error().message();
  const size_t spliced = e.echoed.in_kernel.get();
  EXPECT_TRUE(round_trip(e.client, kTotal, 64 * 1024, 0ms));
  EXPECT_TRUE(e.echoed.total.wait([](size_t n) { return n == 4 * kTotal; }));
  EXPECT_EQ(e.echoed.in_kernel.get(), spliced) << "asked for copies, the kernel echoed";
  EXPECT_EQ(open_pipe_ends(), without_pipe);
  e.finish();
}

TEST(TcpConnectionEcho, TlsAndTheEchoRefuseEachOther) {
  // A TLS connection's bytes must be decrypted, so it cannot echo them as
  // they come; and an echoing connection cannot start TLS. Either way the
  // call fails and leaves the connection as it was.
  auto context = std::make_shared<const TlsContext>(server_context());
  Watched<int> checked{0};
  ServerHarness h;
  ServerOptions options;
  options.threads = 1;
  h.start(options, [&](TcpServer& s) {
    s.set_on_connection([&](const TcpConnectionPtr& c) {
      if (!c->connected()) return;
      if (checked.get() == 0) {
        ASSERT_TRUE(c->start_tls(*context));
        auto echo = c->start_echo();
        ASSERT_FALSE(echo);
        EXPECT_EQ(echo.error().code(), std::errc::operation_not_supported);
        EXPECT_FALSE(c->echoing());
      } else {
        ASSERT_TRUE(c->start_echo());
        auto tls = c->start_tls(*context);
        ASSERT_FALSE(tls);
        EXPECT_EQ(tls.error().code(), std::errc::operation_not_supported);
        EXPECT_EQ(c->tls(), nullptr);
      }
      checked.update([](int& n) { ++n; });
    });
  });
  auto with_tls = connect_client(h.address());
  ASSERT_TRUE(checked.wait([](int n) { return n == 1; }));
  auto echoing = connect_client(h.address());
  ASSERT_TRUE(checked.wait([](int n) { return n == 2; }));
  expect_echo(echoing, "still plain, still echoed");
  echoing.close();
  ASSERT_TRUE(eventually([&] { return h.server().open_connections() == 1; })) << "echoing stays";
  with_tls.close();
  h.finish();
}

TEST(TcpConnectionEcho, SplicingIntoASocketWhosePeerIsGoneFailsWithoutSigpipe) {
  // splice() takes no MSG_NOSIGNAL; with SIGPIPE's default action this
  // process would die here.
  ASSERT_EQ(::signal(SIGPIPE, SIG_DFL), SIG_DFL) << "the test needs SIGPIPE's default action";
  UniqueFd pipe_read;
  UniqueFd pipe_write;
  ASSERT_EQ(sys::make_pipe(&pipe_read, &pipe_write), 0);
  ASSERT_EQ(::write(pipe_write.get(), "x", 1), 1);
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, pair), 0);
  UniqueFd ours(pair[0]);
  ::close(pair[1]);
  EXPECT_EQ(sys::splice_to_socket(pipe_read.get(), ours.get(), 1), -EPIPE);
  sigset_t pending;
  ASSERT_EQ(::sigpending(&pending), 0);
  EXPECT_EQ(sigismember(&pending, SIGPIPE), 0) << "a SIGPIPE was left pending";
  // A SIGPIPE the caller holds blocked and pending stays the caller's.
  sigset_t only_sigpipe;
  sigset_t old;
  sigemptyset(&only_sigpipe);
  sigaddset(&only_sigpipe, SIGPIPE);
  ASSERT_EQ(::pthread_sigmask(SIG_BLOCK, &only_sigpipe, &old), 0);
  ASSERT_EQ(::raise(SIGPIPE), 0);
  EXPECT_EQ(sys::splice_to_socket(pipe_read.get(), ours.get(), 1), -EPIPE);
  ASSERT_EQ(::sigpending(&pending), 0);
  EXPECT_EQ(sigismember(&pending, SIGPIPE), 1) << "the caller's pending SIGPIPE was taken";
  const timespec now{};
  EXPECT_EQ(::sigtimedwait(&only_sigpipe, nullptr, &now), SIGPIPE);
  ASSERT_EQ(::pthread_sigmask(SIG_SETMASK, &old, nullptr), 0);
}

// Last in this file: it lowers the descriptor limit, and restores it.
TEST(TcpConnectionEcho, WithNoDescriptorForAPipeTheEchoCopies) {
  TCPKIT_SKIP_WHERE_DESCRIPTORS_CANNOT_RUN_OUT();
  constexpr size_t kTotal = 2 * 1024 * 1024;
  rlimit before{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &before), 0);
  KernelEcho e;
  {
    auto held = exhaust_descriptors(0);
    EXPECT_TRUE(round_trip(e.client, kTotal, 64 * 1024, 0ms));
  }
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &before), 0);
  EXPECT_TRUE(e.echoed.total.wait([](size_t n) { return n == kTotal; })) << e.echoed.total.get();
  EXPECT_EQ(e.echoed.in_kernel.get(), 0U) << "a pipe was made with no descriptor free";
  e.finish();
}

}  // namespace
