// The coroutine layer: every awaitable, its timeouts, and what happens to
// waiting tasks when a connection, a server or a loop goes away.
//
// The loop runs in the test's own thread (tasks assert from inside it);
// blocking peers run in threads of their own. A watchdog timer fails and
// stops a test whose loop would otherwise wait forever.
#include "tcpkit/coro.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

#include "test_util.h"
#include "tls_test_util.h"

using namespace std::chrono_literals;
using namespace tcpkit;
using namespace tcpkit::coro;
using namespace tcpkit::test;

namespace {

// A loop in this thread with a server and an Acceptor on it.
class Coro : public ::testing::Test {
 public:
  void SetUp() override {
    auto created = EventLoop::create();
    ASSERT_TRUE(created) << created.error().message();
    loop_ = std::move(*created);
  }

  void start_server(ServerOptions options = {}) {
    server_ = std::make_unique<TcpServer>(loop_.get(), options);
    acceptor_ = std::make_unique<coro::Acceptor>(*server_);
    ASSERT_TRUE(server_->listen(Endpoint::loopback_v4(0)));
    ASSERT_TRUE(server_->start());
    address_ = server_->listen_endpoints().at(0);
  }

  // Runs the loop until quit(), failing the test after kWait.
  void run() {
    auto watchdog = loop_->run_after(kWait, [this] {
      ADD_FAILURE() << "the loop was still running after " << kWait.count() << " ms";
      loop_->quit();
    });
    loop_->run();
    loop_->cancel(watchdog);
  }

  // A peer in a thread of its own, joined by the test's end.
  template <typename F>
  void peer(F f) {
    peers_.emplace_back(std::move(f));
  }

  // Two clients that connect, send nothing and wait for the server's FIN.
  void two_peers_until_closed() {
    peer([a = address_] {
      auto c1 = connect_client(a);
      auto c2 = connect_client(a);
      EXPECT_EQ(read_to_eof(c1), "");
      EXPECT_EQ(read_to_eof(c2), "");
    });
  }

  void TearDown() override {
    for (auto& t : peers_) t.join();
  }

  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<TcpServer> server_;
  std::unique_ptr<coro::Acceptor> acceptor_;
  Endpoint address_;
  std::vector<std::thread> peers_;
};

// The line tests' server: takes one connection and answers each line with
// "re: " and the line, until the client's FIN.
Task<> answer_each_line(coro::Acceptor& acceptor) {
  auto s = co_await acceptor.accept();
  LineCodec lines;
  while (auto line = co_await s->read_line(lines)) {
    if (!*line) break;
    EXPECT_TRUE(co_await s->write_line("re: " + **line));
  }
}

TEST_F(Coro, EchoUntilThePeerClosesReadsZeroBytes) {
  start_server();
  std::string seen;
  spawn(loop_.get(), [](Coro* t, std::string* seen) -> Task<> {
    auto stream = co_await t->acceptor_->accept();
    EXPECT_TRUE(stream) << stream.error().message();
    Buffer buf;
    for (;;) {
      auto n = co_await stream->read_some(buf);
      EXPECT_TRUE(n) << n.error().message();
      if (!n || *n == 0) break;  // the tutorial's "recv returned 0"
      *seen += std::string(buf.view());
      auto w = co_await stream->write_all(buf);
      EXPECT_TRUE(w);
    }
    t->loop_->quit();
  }(this, &seen));
  peer([a = address_] {
    auto c = connect_client(a);
    EXPECT_TRUE(c.send_all("hello, "));
    EXPECT_EQ(recv_n(c, 7), "hello, ");
    EXPECT_TRUE(c.send_all("coroutine"));
    EXPECT_EQ(recv_n(c, 9), "coroutine");
    EXPECT_TRUE(c.shutdown_write());
    EXPECT_EQ(read_to_eof(c), "");  // the stream's FIN, once its task is done
  });
  run();
  EXPECT_EQ(seen, "hello, coroutine");
}

TEST_F(Coro, ReadExactLineAndFrame) {
  start_server();
  spawn(loop_.get(), [](Coro* t) -> Task<> {
    auto stream = co_await t->acceptor_->accept();
    char four[4];
    auto n = co_await stream->read_exact(four);
    EXPECT_TRUE(n && *n == 4);
    EXPECT_EQ(std::string(four, 4), "abcd");
    LineCodec lines(16);
    auto l1 = co_await stream->read_line(lines);
    EXPECT_TRUE(l1 && *l1 && **l1 == "one");
    auto l2 = co_await stream->read_line(lines);
    EXPECT_TRUE(l2 && *l2 && **l2 == "two");  // "\r\n" stripped
    LengthPrefixCodec frames(64);
    auto f = co_await stream->read_frame(frames);
    EXPECT_TRUE(f && *f && **f == "frame!");
    auto last = co_await stream->read_line(lines);
    EXPECT_TRUE(last && *last && **last == "tail");  // no newline before the FIN
    auto end = co_await stream->read_line(lines);
    EXPECT_TRUE(end && !*end);  // end of stream is a value
    char more[8];
    auto short_read = co_await stream->read_exact(more);
    EXPECT_TRUE(short_read && *short_read == 0);
    t->loop_->quit();
  }(this));
  peer([a = address_] {
    auto c = connect_client(a);
    Buffer frame;
    ASSERT_TRUE(LengthPrefixCodec::encode("frame!", frame));
    // Split where no read could expect: across the line, inside the header.
    std::string all = "abcdone\ntwo\r\n" + std::string(frame.view()) + "tail";
    for (size_t i = 0; i < all.size(); i += 3) EXPECT_TRUE(c.send_all(all.substr(i, 3)));
    EXPECT_TRUE(c.shutdown_write());
    EXPECT_EQ(read_to_eof(c), "");
  });
  run();
}

TEST_F(Coro, TooLongLineAndTruncatedFrameAreErrors) {
  start_server();
  spawn(loop_.get(), [](Coro* t) -> Task<> {
    LineCodec lines(4);
    auto a = co_await t->acceptor_->accept();
    auto l = co_await a->read_line(lines);
    EXPECT_FALSE(l);
    if (!l) {
      EXPECT_EQ(l.error().code(), Errc::line_too_long);
    }
    a->close();
    auto b = co_await t->acceptor_->accept();
    auto f = co_await b->read_frame(LengthPrefixCodec(64));
    EXPECT_FALSE(f);
    if (!f) {
      EXPECT_EQ(f.error().code(), Errc::peer_closed);
    }
    t->loop_->quit();
  }(this));
  peer([a = address_] {
    auto c = connect_client(a);
    EXPECT_TRUE(c.send_all("0123456789"));
    EXPECT_EQ(read_to_eof(c), "");
    auto d = connect_client(a);
    Buffer frame;
    ASSERT_TRUE(LengthPrefixCodec::encode("cut short", frame));
    EXPECT_TRUE(d.send_all(frame.view().substr(0, 7)));
    EXPECT_TRUE(d.shutdown_write());
    EXPECT_EQ(read_to_eof(d), "");
  });
  run();
}

TEST_F(Coro, ConnectAndTalkToTheServerOnTheSameLoop) {
  start_server();
  spawn(loop_.get(), answer_each_line(*acceptor_));
  spawn(loop_.get(), [](Coro* t) -> Task<> {
    auto c = co_await connect(t->address_);
    EXPECT_TRUE(c) << c.error().message();
    if (!c) co_return t->loop_->quit();
    EXPECT_TRUE(co_await c->write_line("ping"));
    LineCodec lines;
    auto reply = co_await c->read_line(lines);
    EXPECT_TRUE(reply && *reply && **reply == "re: ping");
    c->shutdown();
    auto end = co_await c->read_line(lines);
    EXPECT_TRUE(end && !*end);
    t->loop_->quit();
  }(this));
  run();
}

// write_line() refuses what LineCodec::encode() refuses: a line holding
// '\n', which would reach the peer as two lines. Nothing is sent: the
// server's first line is the one after it.
TEST_F(Coro, WriteLineRefusesALineHoldingANewlineAndSendsNothing) {
  start_server();
  spawn(loop_.get(), answer_each_line(*acceptor_));
  spawn(loop_.get(), [](Coro* t) -> Task<> {
    auto c = co_await connect(t->address_);
    EXPECT_TRUE(c) << c.error().message();
    if (!c) co_return t->loop_->quit();
    auto refused = co_await c->write_line("two\ninjected");
    EXPECT_FALSE(refused);
    if (!refused) {
      EXPECT_EQ(refused.error().code(), std::errc::invalid_argument);
    }
    EXPECT_TRUE(co_await c->write_line("ping"));
    LineCodec lines;
    auto reply = co_await c->read_line(lines);
    EXPECT_TRUE(reply && *reply && **reply == "re: ping");
    c->shutdown();
    auto end = co_await c->read_line(lines);
    EXPECT_TRUE(end && !*end);
    t->loop_->quit();
  }(this));
  run();
}

TEST_F(Coro, ConnectToAClosedPortIsAnError) {
  spawn(loop_.get(), [](Coro* t) -> Task<> {
    // Bound but not listening: nothing can take the port meanwhile.
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sin;
    ::bind(fd, reinterpret_cast<sockaddr*>(&sin), len);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&sin), &len);
    auto c = co_await connect(Endpoint::loopback_v4(ntohs(sin.sin_port)));
    ::close(fd);
    EXPECT_FALSE(c);
    if (!c) {
      EXPECT_EQ(c.error().code(), std::errc::connection_refused) << c.error().message();
    }
    t->loop_->quit();
  }(this));
  run();
}

TEST_F(Coro, SleepForWaitsAtLeastItsDelay) {
  spawn(loop_.get(), [](Coro* t) -> Task<> {
    auto before = EventLoop::Clock::now();
    co_await sleep_for(30ms);
    EXPECT_GE(EventLoop::Clock::now() - before, 30ms);
    t->loop_->quit();
  }(this));
  run();
  EXPECT_EQ(loop_->timer_count(), 0u);
}

TEST_F(Coro, TimeoutCancelsTheReadAndKeepsTheBytesForTheNext) {
  start_server();
  std::atomic<bool> timed_out{false};
  spawn(loop_.get(), [](Coro* t, std::atomic<bool>* timed_out) -> Task<> {
    auto s = co_await t->acceptor_->accept();
    Buffer buf;
    auto first = co_await timeout(50ms, s->read_some(buf));
    EXPECT_FALSE(first);
    if (!first) {
      EXPECT_EQ(first.error().code(), std::errc::timed_out);
    }
    *timed_out = true;
    auto second = co_await timeout(kWait, s->read_some(buf));
    EXPECT_TRUE(second && *second == 5);
    EXPECT_EQ(buf.view(), "late!");
    // A Task in a timeout: its own child awaitables are cancelled with it.
    auto slow = co_await timeout(20ms, [](Stream* s) -> Task<Result<size_t>> {
      co_await sleep_for(1h);
      Buffer b;
      co_return co_await s->read_some(b);
    }(&*s));
    EXPECT_FALSE(slow);
    t->loop_->quit();
  }(this, &timed_out));
  peer([a = address_, &timed_out] {
    auto c = connect_client(a);
    EXPECT_TRUE(eventually([&] { return timed_out.load(); }));
    EXPECT_TRUE(c.send_all("late!"));
    EXPECT_EQ(read_to_eof(c), "");
  });
  run();
  EXPECT_EQ(loop_->timer_count(), 0u);
}

// Regression: sleep_for() and timeout() took the clock's nanoseconds, so
// std::chrono::hours::max() wrapped below zero on the way in: a sleep for
// ever ended at once, and a limit of for ever expired at once.
TEST_F(Coro, DurationsTooLongForTheClockMeanNever) {
  bool woke = false;
  spawn(loop_.get(), [](Coro* t, bool* woke) -> Task<> {
    auto slept = co_await timeout(20ms, [](bool* woke) -> Task<Result<void>> {
      co_await sleep_for(std::chrono::hours::max());
      *woke = true;
      co_return Result<void>{};
    }(woke));
    EXPECT_FALSE(slept) << "a sleep for ever ended";
    auto finished = co_await timeout(std::chrono::hours::max(), []() -> Task<Result<void>> {
      co_await sleep_for(5ms);
      co_return Result<void>{};
    }());
    EXPECT_TRUE(finished) << "a limit of for ever expired";
    t->loop_->quit();
  }(this, &woke));
  run();
  EXPECT_FALSE(woke);
}

// Regression: a read_exact() cancelled by its timeout had moved the bytes
// that had come into the caller's buffer and dropped them, so the stream
// lost them and its framing. They go back to the front of the stream now;
// a timed-out read_line() takes nothing either.
TEST_F(Coro, TimeoutOnReadExactPutsThePartialBytesBack) {
  start_server();
  Watched<int> step{0};
  spawn(loop_.get(), [](Coro* t, Watched<int>* step) -> Task<> {
    auto s = co_await t->acceptor_->accept();
    char buf[8];
    auto two = co_await s->read_exact(std::span<char>(buf, 2));
    EXPECT_TRUE(two && *two == 2);  // "12"; "34" waits in the stream
    auto cut = co_await timeout(20ms, s->read_exact(std::span<char>(buf, 8)));
    EXPECT_FALSE(cut);
    step->set(1);
    auto six = co_await timeout(kWait, s->read_exact(std::span<char>(buf, 6)));
    EXPECT_TRUE(six && *six == 6);
    EXPECT_EQ(std::string(buf, six ? *six : 0), "345678");
    LineCodec lines;
    auto no_line = co_await timeout(20ms, s->read_line(lines));
    EXPECT_FALSE(no_line);
    step->set(2);
    auto line = co_await timeout(kWait, s->read_line(lines));
    EXPECT_TRUE(line && *line && **line == "abc");
    t->loop_->quit();
  }(this, &step));
  peer([a = address_, &step] {
    auto c = connect_client(a);
    EXPECT_TRUE(c.send_all("1234"));
    EXPECT_TRUE(step.wait([](int n) { return n == 1; }));
    EXPECT_TRUE(c.send_all("5678ab"));
    EXPECT_TRUE(step.wait([](int n) { return n == 2; }));
    EXPECT_TRUE(c.send_all("c\n"));
    EXPECT_TRUE(c.shutdown_write());
    EXPECT_EQ(read_to_eof(c), "");
  });
  run();
  EXPECT_EQ(loop_->timer_count(), 0u);
}

TEST_F(Coro, PeerResetResumesTheReaderWithAnError) {
  start_server();
  spawn(loop_.get(), [](Coro* t) -> Task<> {
    auto s = co_await t->acceptor_->accept();
    Buffer buf;
    auto n = co_await s->read_some(buf);
    EXPECT_FALSE(n);
    if (!n) {
      EXPECT_EQ(n.error().code(), std::errc::connection_reset) << n.error().message();
    }
    EXPECT_TRUE(s->closed());
    auto w = co_await s->write_all("after");
    EXPECT_FALSE(w);
    t->loop_->quit();
  }(this));
  peer([a = address_] {
    auto c = connect_client(a);
    linger l{1, 0};
    ::setsockopt(c.fd(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
  });  // closing with linger 0 sends RST
  run();
}

TEST_F(Coro, ForceCloseResumesReaderAndWriterWithAnError) {
  ServerOptions options;
  options.connection.high_water_mark = 64 * 1024;
  start_server(options);
  int resumed = 0;
  auto stream = std::make_shared<std::optional<Stream>>();
  spawn(loop_.get(), [](Coro* t, std::shared_ptr<std::optional<Stream>> s, int* resumed) -> Task<> {
    auto accepted = co_await t->acceptor_->accept();
    s->emplace(std::move(*accepted));
    // The writer: the peer does not read, so it waits past the mark.
    spawn(t->loop_.get(), [](Stream* s, int* resumed) -> Task<> {
      std::string chunk(256 * 1024, 'x');
      Result<void> w;
      for (int i = 0; i < 1000 && w; ++i)
        w = co_await s->write_all(chunk);  // past the socket buffers
      EXPECT_FALSE(w);
      if (!w) {
        EXPECT_EQ(w.error().code(), std::errc::operation_canceled);
      }
      ++*resumed;
    }(&**s, resumed));
    Buffer buf;
    auto n = co_await (*s)->read_some(buf);
    EXPECT_FALSE(n);
    ++*resumed;
  }(this, stream, &resumed));
  spawn(loop_.get(), [](Coro* t, std::shared_ptr<std::optional<Stream>> s, int* resumed) -> Task<> {
    while (!*s) co_await sleep_for(1ms);
    (*s)->connection()->force_close();
    while (*resumed < 2) co_await sleep_for(1ms);
    t->loop_->quit();
  }(this, stream, &resumed));
  // The peer may still be reading when the test body returns (TearDown
  // joins it), so it refers to nothing on the body's stack.
  peer([a = address_] {
    auto c = connect_client(a);
    read_to_eof(c);
  });
  run();
  EXPECT_EQ(resumed, 2);
  stream->reset();
}

// A write after force_close(), before the queued close has run, fails at
// once: the connection drops the bytes, and the task must not think them
// sent (nor, writing in a loop, spin without ever waiting).
TEST_F(Coro, AWriteAfterForceCloseFailsAtOnce) {
  start_server();
  spawn(loop_.get(), [](Coro* t) -> Task<> {
    auto accepted = co_await t->acceptor_->accept();
    EXPECT_TRUE(accepted);
    if (accepted) {
      Stream s = std::move(*accepted);
      s.connection()->force_close();
      auto w = co_await s.write_all("after the close");
      EXPECT_FALSE(w);
      if (!w) {
        EXPECT_EQ(w.error().code(), std::errc::operation_canceled);
      }
    }
    t->loop_->quit();
  }(this));
  peer([a = address_] {
    auto c = connect_client(a);
    EXPECT_EQ(read_to_eof(c), "");
  });
  run();
}

// Regression: only an assert caught a second reader, so a release build
// let it replace the first, which then waited for ever.
TEST_F(Coro, ASecondTaskReadingOneStreamAbortsInEveryBuild) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        start_server();
        auto stream = std::make_shared<std::optional<Stream>>();
        spawn(loop_.get(), [](Coro* t, std::shared_ptr<std::optional<Stream>> s) -> Task<> {
          auto accepted = co_await t->acceptor_->accept();
          if (!accepted) co_return;
          s->emplace(std::move(*accepted));
          for (int reader = 0; reader < 2; ++reader) {
            spawn(t->loop_.get(), [](Stream* s) -> Task<> {
              Buffer buf;
              (void)co_await s->read_some(buf);
            }(&**s));
          }
        }(this, stream));
        auto client = connect_client(address_);
        run();
      },
      "two tasks reading one coro::Stream at once");
}

TEST_F(Coro, WriteAllWaitsForASlowReaderAndLosesNothing) {
  ServerOptions options;
  options.connection.high_water_mark = 64 * 1024;
  start_server(options);
  constexpr size_t kChunk = 32 * 1024;
  constexpr int kChunks = 1024;  // 32 MiB: far past socket buffers and the mark
  std::atomic<size_t> max_queued{0};
  std::atomic<bool> writer_waited{false};
  std::atomic<bool> backed_up{false};
  std::atomic<bool> reading{false};
  spawn(loop_.get(),
        [](Coro* t, std::atomic<size_t>* max_queued, std::atomic<bool>* waited,
           std::atomic<bool>* backed_up, std::atomic<bool>* reading) -> Task<> {
          auto s = co_await t->acceptor_->accept();
          std::string chunk(kChunk, '\0');
          for (int i = 0; i < kChunks; ++i) {
            for (size_t j = 0; j < kChunk; ++j) chunk[j] = static_cast<char>('a' + (i + j) % 26);
            bool reader_had_begun = *reading;
            auto w = co_await s->write_all(chunk);
            EXPECT_TRUE(w);
            // The peer reads nothing until the socket's buffers are full (bytes
            // stay queued here) and 200 ms more. A write that began before the
            // peer read anything and ended after is one that waited for the
            // reader. (Not a wall-clock bound: under TSan on a loaded machine
            // filling the buffers took longer than any fixed delay.)
            if (!reader_had_begun && *reading) *waited = true;
            *max_queued = std::max(max_queued->load(), s->connection()->output_bytes());
            if (s->connection()->output_bytes() > 0) *backed_up = true;
          }
          // write_all() returns below the mark, not once all is out: the
          // loop keeps running until the rest has left, or the peer would
          // wait for bytes a stopped loop never sends.
          while (s->connection()->output_bytes() > 0) co_await sleep_for(1ms);
          t->loop_->quit();
        }(this, &max_queued, &writer_waited, &backed_up, &reading));
  peer([a = address_, &backed_up, &reading] {
    auto c = connect_client(a);
    // A slow reader: nothing until the writer's bytes back up behind the
    // full socket buffers, and for 200 ms more, in which the writer reaches
    // the mark and waits. Bounded: a writer that never backs up fails below.
    const auto give_up = std::chrono::steady_clock::now() + 30s;
    while (!backed_up && std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(1ms);
    }
    std::this_thread::sleep_for(200ms);
    reading = true;
    std::string got = recv_n(c, kChunk * kChunks);
    for (int i = 0; i < kChunks; ++i) {
      for (size_t j = 0; j < kChunk; j += 4093) {
        ASSERT_EQ(got[i * kChunk + j], static_cast<char>('a' + (i + j) % 26)) << "chunk " << i;
      }
    }
  });
  run();
  // write_all returned only below the mark: the output never held more than
  // the mark plus one chunk.
  EXPECT_LT(max_queued.load(), 64 * 1024u);
  EXPECT_TRUE(writer_waited.load());
}

TEST_F(Coro, ServerStopResumesEveryWaitingTask) {
  start_server();
  int finished = 0;
  bool accept_failed = false;
  spawn(loop_.get(), [](Coro* t, int* finished, bool* accept_failed) -> Task<> {
    for (;;) {
      auto s = co_await t->acceptor_->accept();
      if (!s) {
        *accept_failed = s.error().code() == std::errc::operation_canceled;
        co_return;
      }
      spawn(t->loop_.get(), [](Stream s, int* finished) -> Task<> {
        Buffer buf;
        *finished -= 10;                     // reading (the stop must find both tasks waiting)
        auto n = co_await s.read_some(buf);  // the stop ends this
        EXPECT_TRUE(!n || *n == 0);
        *finished += 11;
      }(std::move(*s), finished));
    }
  }(this, &finished, &accept_failed));
  spawn(loop_.get(), [](Coro* t, int* finished, bool* accept_failed) -> Task<> {
    while (*finished > -20) co_await sleep_for(1ms);
    t->acceptor_->close();
    t->server_->stop(0ms);
    while (*finished < 2 || !*accept_failed) co_await sleep_for(1ms);
    t->loop_->quit();
  }(this, &finished, &accept_failed));
  two_peers_until_closed();
  run();
  EXPECT_EQ(finished, 2);
  EXPECT_TRUE(accept_failed);
}

TEST_F(Coro, DestroyingServerAndLoopWithSuspendedTasksFreesThem) {
  start_server();
  auto alive = std::make_shared<int>(0);
  std::atomic<bool> connected{false};
  // Tasks that will never resume: an accept, a read, a sleep, a connect.
  spawn(loop_.get(), [](Coro* t, std::shared_ptr<int> /*alive*/) -> Task<> {
    auto s = co_await t->acceptor_->accept();
    Buffer buf;
    (void)co_await s->read_some(buf);
    (void)co_await s->read_some(buf);
  }(this, alive));
  spawn(loop_.get(),
        [](std::shared_ptr<int> /*alive*/) -> Task<> { co_await sleep_for(1h); }(alive));
  spawn(loop_.get(),
        [](Coro* t, std::shared_ptr<int> /*alive*/, std::atomic<bool>* connected) -> Task<> {
          auto c = co_await connect(t->address_);
          *connected = true;
          t->loop_->quit();
          Buffer buf;
          (void)co_await c->read_some(buf);
        }(this, alive, &connected));
  run();
  EXPECT_TRUE(connected.load());
  EXPECT_EQ(alive.use_count(), 4);  // three frames hold it
  acceptor_.reset();
  server_.reset();
  loop_.reset();  // destroys the frames: the sanitizers check the rest
  EXPECT_EQ(alive.use_count(), 1);
}

TEST_F(Coro, ResumeOnHopsBetweenLoopsOnlyWhenAsked) {
  LoopThread other;
  std::thread::id here = std::this_thread::get_id();
  std::thread::id there;
  std::thread::id back;
  spawn(loop_.get(),
        [](Coro* t, EventLoop* other, std::thread::id* there, std::thread::id* back) -> Task<> {
          co_await resume_on(other);
          *there = std::this_thread::get_id();
          co_await sleep_for(1ms);  // on the other loop's timers
          co_await resume_on(t->loop_.get());
          *back = std::this_thread::get_id();
          t->loop_->quit();
        }(this, other.loop(), &there, &back));
  run();
  EXPECT_NE(there, here);
  EXPECT_EQ(back, here);
}

// Regression: close() closed the queued streams with Stream::close(), which
// belongs to the connection's loop: with I/O threads it aborted ("EventLoop
// used from thread ..."). The queued connections are closed, and accept()
// reports the close.
TEST_F(Coro, CloseWithConnectionsQueuedOnIoLoopsClosesThem) {
  ServerOptions options;
  options.threads = 2;
  start_server(options);
  spawn(loop_.get(), [](Coro* t) -> Task<> {
    while (t->acceptor_->queued() < 2) co_await sleep_for(1ms);
    t->acceptor_->close();
    EXPECT_EQ(t->acceptor_->queued(), 0u);
    auto s = co_await t->acceptor_->accept();
    EXPECT_FALSE(s);
    if (!s) {
      EXPECT_EQ(s.error().code(), std::errc::operation_canceled);
    }
    t->loop_->quit();
  }(this));
  two_peers_until_closed();
  run();
}

// Calls `on_gone` when the coroutine frame that holds it (as a parameter) is
// freed, which is after the task's body has ended.
struct OnFrameGone {
  explicit OnFrameGone(std::function<void()> f) : on_gone(std::move(f)) {}
  OnFrameGone(OnFrameGone&& other) noexcept : on_gone(std::exchange(other.on_gone, nullptr)) {}
  ~OnFrameGone() {
    if (on_gone) on_gone();
  }
  std::function<void()> on_gone;
};

// Regression: a spawned task that hopped to another loop with resume_on()
// and ended there left its own loop's task list from that other thread,
// racing the spawns and ends of the loop's thread (TSan: a data race in
// TaskList; ASan: the list corrupted). Its own loop frees it now.
TEST_F(Coro, ATaskThatEndsOnAnotherLoopIsFreedByItsOwn) {
  LoopThread other;
  constexpr int kEach = 2000;
  const std::thread::id here = std::this_thread::get_id();
  std::atomic<int> freed_here{0};
  std::atomic<int> freed_elsewhere{0};
  auto on_gone = [&] {
    (std::this_thread::get_id() == here ? freed_here : freed_elsewhere)++;
    if (freed_here + freed_elsewhere == 2 * kEach) loop_->quit();
  };
  for (int i = 0; i < kEach; ++i) {
    // Ends on `other` while this thread goes on spawning and ending tasks.
    spawn(loop_.get(), [](EventLoop* other, OnFrameGone) -> Task<> {
      co_await resume_on(other);
    }(other.loop(), OnFrameGone(on_gone)));
    spawn(loop_.get(), [](OnFrameGone) -> Task<> { co_return; }(OnFrameGone(on_gone)));
  }
  run();
  EXPECT_EQ(freed_here.load(), 2 * kEach);
  EXPECT_EQ(freed_elsewhere.load(), 0);
}

TEST_F(Coro, SpawnFromAnotherThreadRunsOnTheLoop) {
  std::thread::id ran;
  std::thread spawner([&] {
    spawn(loop_.get(), [](Coro* t, std::thread::id* ran) -> Task<> {
      *ran = std::this_thread::get_id();
      t->loop_->quit();
      co_return;
    }(this, &ran));
  });
  spawner.join();
  run();
  EXPECT_EQ(ran, std::this_thread::get_id());
}

TEST_F(Coro, TasksReturnValuesToTheirAwaiter) {
  spawn(loop_.get(), [](Coro* t) -> Task<> {
    auto twice = [](int x) -> Task<int> {
      co_await sleep_for(1ms);
      co_return 2 * x;
    };
    int sum = 0;
    for (int i = 1; i <= 3; ++i) sum += co_await twice(i);
    EXPECT_EQ(sum, 12);
    t->loop_->quit();
  }(this));
  run();
}

// Regression: a TLS peer's FIN without its close_notify (a stream an
// attacker on the path may have cut) was the clean end of the stream: a
// partial last line came back as a line, and read_some() gave 0, where a
// blocking TcpStream reports Errc::tls_truncated. The bytes before the cut
// still come; the end is the error.
TEST_F(Coro, ATlsStreamCutWithoutCloseNotifyIsTruncatedNotEnded) {
  ServerOptions options;
  options.tls = std::make_shared<const TlsContext>(server_context());
  start_server(options);
  std::atomic<bool> peer_done{false};
  spawn(loop_.get(), [](Coro* t, std::atomic<bool>* peer_done) -> Task<> {
    {
      auto s = co_await t->acceptor_->accept();
      EXPECT_TRUE(s);
      if (!s) co_return t->loop_->quit();
      LineCodec lines;
      auto whole = co_await s->read_line(lines);
      EXPECT_TRUE(whole && *whole && **whole == "whole");
      auto cut = co_await s->read_line(lines);
      EXPECT_FALSE(cut) << "the cut line came back as a line";
      if (!cut) {
        EXPECT_EQ(cut.error().code(), make_error_code(Errc::tls_truncated));
      }
    }
    {
      auto s = co_await t->acceptor_->accept();
      EXPECT_TRUE(s);
      if (!s) co_return t->loop_->quit();
      std::string got;
      Result<size_t> n = size_t{0};
      Buffer buf;
      while ((n = co_await s->read_some(buf)) && *n > 0) got += buf.retrieve_all_as_string();
      EXPECT_EQ(got, "abc");
      EXPECT_FALSE(n) << "read_some() gave 0, a clean end";
      if (!n) {
        EXPECT_EQ(n.error().code(), make_error_code(Errc::tls_truncated));
      }
      char four[4];
      auto exact = co_await s->read_exact(four);
      EXPECT_FALSE(exact);
    }
    while (!*peer_done) co_await sleep_for(1ms);  // our close_notify and FIN go out
    t->loop_->quit();
  }(this, &peer_done));
  peer([a = address_, &peer_done] {
    auto ctx = client_context({TestCerts::get().cert("server"), true, "127.0.0.1"});
    std::vector<TcpStream> clients;
    for (const char* what : {"whole\npart", "abc"}) {
      clients.push_back(connect_client(a));
      auto session = handshake_by_hand(clients.back(), ctx);
      ASSERT_TRUE(session) << session.error().message();
      session->write_plaintext(what);
      EXPECT_TRUE(clients.back().send_all(session->take_ciphertext()));
      EXPECT_TRUE(clients.back().shutdown_write());  // a FIN, no close_notify
    }
    for (auto& c : clients) (void)read_to_eof(c);
    peer_done = true;
  });
  run();
}

// A child task that hops to `other` and, if it ever runs there, says so.
Task<Result<int>> hop_to(EventLoop* other, std::atomic<bool>* ran_there) {
  co_await resume_on(other);
  *ran_there = true;
  co_return 1;
}

// Regression: resume_on() queued a bare resume of the task on the other
// loop. A task destroyed while it waited in that queue (a timeout() that
// expired, its loop destroyed) was resumed there all the same: a freed
// frame run on another thread. Destroying it cancels the hop now.
TEST_F(Coro, ATaskDestroyedWhileItsHopIsQueuedIsNotResumed) {
  std::atomic<bool> release_other{false};  // before `other`: it outlives the loop
  LoopThread other;
  std::atomic<bool> ran_there{false};
  // The other loop is busy until the timeout has destroyed the hopping task.
  other.loop()->queue_in_loop([&] {
    while (!release_other) std::this_thread::sleep_for(1ms);
  });
  spawn(loop_.get(),
        [](Coro* t, EventLoop* other, std::atomic<bool>* release_other,
           std::atomic<bool>* ran_there) -> Task<> {
          auto r = co_await timeout(20ms, hop_to(other, ran_there));
          EXPECT_FALSE(r);
          if (!r) {
            EXPECT_EQ(r.error().code(), std::errc::timed_out);
          }
          *release_other = true;
          // The other loop's queue has run once a functor queued behind it has.
          std::atomic<bool> drained{false};
          other->queue_in_loop([&drained] { drained = true; });
          while (!drained) co_await sleep_for(1ms);
          t->loop_->quit();
        }(this, other.loop(), &release_other, &ran_there));
  run();
  EXPECT_FALSE(ran_there.load());
}

// Regression: a task that awaited a million children that finish at once
// overflowed the stack where symmetric transfer is not a tail call (GCC at
// -O0, ASan): each child resumed its awaiter from inside its own frame. A
// child that ends inline returns to its awaiter now. The same for
// timeout() around one, and for awaits that are ready at once.
TEST_F(Coro, AMillionReadyAwaitsDoNotGrowTheStack) {
  constexpr int kTimes = 1'000'000;
  long sum = 0;
  spawn(loop_.get(), [](Coro* t, long* sum) -> Task<> {
    auto one = []() -> Task<int> { co_return 1; };
    for (int i = 0; i < kTimes; ++i) *sum += co_await one();
    auto ok = []() -> Task<Result<int>> { co_return 1; };
    for (int i = 0; i < kTimes; ++i) *sum += *co_await timeout(1h, ok());
    for (int i = 0; i < kTimes; ++i) co_await sleep_for(0ms);
    for (int i = 0; i < kTimes; ++i) co_await resume_on(t->loop_.get());
    t->loop_->quit();
  }(this, &sum));
  run();
  EXPECT_EQ(sum, 2 * kTimes);
}

// Regression: only an assert caught awaiting a Task a second time (or an
// empty one), so a release build resumed a finished (or null) frame.
TEST_F(Coro, AwaitingAFinishedTaskAbortsInEveryBuild) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        spawn(loop_.get(), [](Coro* t) -> Task<> {
          auto child = []() -> Task<int> { co_return 7; }();
          (void)co_await std::move(child);
          (void)co_await std::move(child);
          t->loop_->quit();
        }(this));
        run();
      },
      "co_await on a finished coro::Task");
  EXPECT_DEATH(
      {
        spawn(loop_.get(), [](Coro* t) -> Task<> {
          Task<int> empty;
          (void)co_await std::move(empty);
          t->loop_->quit();
        }(this));
        run();
      },
      "co_await on an empty coro::Task");
  EXPECT_DEATH(spawn(loop_.get(), Task<>()), "spawn\\(\\) of an empty coro::Task");
}

// Regression: only an assert caught a second task accepting, so a release
// build let it replace the first, which then waited for ever.
TEST_F(Coro, ASecondTaskAcceptingAbortsInEveryBuild) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        start_server();
        for (int i = 0; i < 2; ++i) {
          spawn(loop_.get(),
                [](Coro* t) -> Task<> { (void)co_await t->acceptor_->accept(); }(this));
        }
        run();
      },
      "two tasks accepting from one coro::Acceptor at once");
}

// Regression: a server with I/O threads destroyed before its Acceptor,
// while connections waited in the Acceptor's queue, left it streams on
// loops that were gone: closing the Acceptor (or accepting one) reached
// into a freed loop. They go with their loops now.
TEST_F(Coro, ServerDestroyedBeforeItsAcceptorWithConnectionsQueued) {
  ServerOptions options;
  options.threads = 2;
  start_server(options);
  spawn(loop_.get(), [](Coro* t) -> Task<> {
    while (t->acceptor_->queued() < 2) co_await sleep_for(1ms);
    t->loop_->quit();
  }(this));
  two_peers_until_closed();
  run();
  server_.reset();  // and its I/O loops
  EXPECT_EQ(acceptor_->queued(), 0u);
  acceptor_.reset();
}

// Regression: write_all() queued its bytes before it waited for the drain,
// so a writer whose waits a timeout cut short (a heartbeat to a peer that
// stopped reading, say) queued another chunk with every try: the output
// grew without bound. A write_all() that finds the output still over the
// mark waits for the drain first, and a timeout then sends nothing.
TEST_F(Coro, WritesWhoseWaitsTimeOutKeepTheOutputBounded) {
  ServerOptions options;
  options.connection.high_water_mark = 64 * 1024;
  start_server(options);
  constexpr size_t kChunk = 16 * 1024;
  auto done = std::make_shared<std::atomic<bool>>(false);  // the peer may outlive the body
  spawn(loop_.get(), [](Coro* t, std::atomic<bool>* done) -> Task<> {
    auto s = co_await t->acceptor_->accept();
    EXPECT_TRUE(s);
    if (!s) co_return t->loop_->quit();
    const std::string chunk(kChunk, 'x');
    // Fill the socket's buffers: the peer reads nothing, so the output
    // passes the mark and the writes begin to time out (bounded count).
    int timed_out = 0;
    for (int i = 0; i < 20000 && timed_out == 0; ++i) {
      if (!co_await timeout(5ms, s->write_all(chunk))) ++timed_out;
    }
    EXPECT_EQ(timed_out, 1);
    size_t most = s->connection()->output_bytes();
    for (int i = 0; i < 50; ++i) {
      auto w = co_await timeout(5ms, s->write_all(chunk));
      EXPECT_FALSE(w);  // the peer still reads nothing
      most = std::max(most, s->connection()->output_bytes());
    }
    // The mark plus the one chunk queued below it; before, 50 chunks more.
    EXPECT_LE(most, 64 * 1024 + kChunk);
    *done = true;
    s->close();
    t->loop_->quit();
  }(this, done.get()));
  peer([a = address_, done] {
    auto c = connect_client(a);
    const auto give_up = std::chrono::steady_clock::now() + 30s;
    while (!*done && std::chrono::steady_clock::now() < give_up) std::this_thread::sleep_for(1ms);
  });
  run();
}

// A connect to an address that never answers ends with its timeout, and
// the attempt goes with the task: nothing resumes it later.
TEST_F(Coro, ConnectToABlackholeTimesOut) {
  // A listener with a full backlog that never accepts: the kernel drops
  // further SYNs, so a connect waits.
  UniqueFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(listener.valid());
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(listener.get(), 0), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const Endpoint target = Endpoint::loopback_v4(ntohs(addr.sin_port));
  int results = 0;
  spawn(loop_.get(), [](Coro* t, Endpoint target, int* results) -> Task<> {
    for (int i = 0; i < 8; ++i) {
      auto c = co_await timeout(50ms, connect(target));
      if (!c) ++*results;
      ClientOptions options;
      options.connect_timeout = 50ms;
      auto d = co_await connect(target, options);
      if (!d) ++*results;
    }
    t->loop_->quit();
  }(this, target, &results));
  run();
  EXPECT_GE(results, 14);  // the first ones may fill the backlog
}

// A loop destroyed while its tasks wait in every kind of await: a write
// held up by a peer that never reads, a partial read_exact, a line, a
// timeout around a sleep, and a hop queued on a loop that is busy. Every frame goes; the sanitizers
// check the rest.
TEST_F(Coro, DestroyingTheLoopWithTasksSuspendedInEveryAwaitFreesThem) {
  ServerOptions options;
  options.connection.high_water_mark = 64 * 1024;
  start_server(options);
  std::atomic<bool> release_other{false};  // before `other`: it outlives the loop
  LoopThread other;
  other.loop()->queue_in_loop([&] {
    while (!release_other) std::this_thread::sleep_for(1ms);
  });
  auto alive = std::make_shared<int>(0);
  int waiting = 0;
  spawn(loop_.get(), [](Coro* t, std::shared_ptr<int> alive, int* waiting) -> Task<> {
    auto writer = co_await t->acceptor_->accept();
    auto reader = co_await t->acceptor_->accept();
    if (!writer || !reader) co_return;
    spawn(t->loop_.get(), [](Stream s, std::shared_ptr<int>, int* waiting) -> Task<> {
      const std::string chunk(16 * 1024, 'x');
      ++*waiting;
      for (;;) {
        if (!co_await s.write_all(chunk)) break;
      }
    }(std::move(*writer), alive, waiting));
    spawn(t->loop_.get(), [](Stream s, std::shared_ptr<int>, int* waiting) -> Task<> {
      char buf[100];
      ++*waiting;
      (void)co_await s.read_exact(buf);  // 3 of 100 bytes come
    }(std::move(*reader), alive, waiting));
    ++*waiting;
    (void)co_await t->acceptor_->accept();
  }(this, alive, &waiting));
  spawn(loop_.get(), [](std::shared_ptr<int>, int* waiting) -> Task<> {
    ++*waiting;
    (void)co_await timeout(1h, []() -> Task<Result<int>> {
      co_await sleep_for(1h);
      co_return 1;
    }());
  }(alive, &waiting));
  spawn(loop_.get(), [](std::shared_ptr<int>, int* waiting, EventLoop* other) -> Task<> {
    ++*waiting;
    co_await resume_on(other);
    ADD_FAILURE() << "a destroyed task hopped";
  }(alive, &waiting, other.loop()));
  spawn(loop_.get(), [](Coro* t, int* waiting) -> Task<> {
    while (*waiting < 5) co_await sleep_for(1ms);
    co_await sleep_for(50ms);  // the writer fills the socket and waits
    t->loop_->quit();
  }(this, &waiting));
  auto writer_peer = connect_client(address_);
  auto reader_peer = connect_client(address_);
  EXPECT_TRUE(reader_peer.send_all("abc"));
  run();
  EXPECT_EQ(waiting, 5);
  acceptor_.reset();
  server_.reset();
  loop_.reset();
  EXPECT_EQ(alive.use_count(), 1);
  release_other = true;
}

// A child awaited inline that hops to another loop and ends there resumes
// its awaiter there; its frame may be freed on that thread while the loop
// that started it still returns from starting it (TSan, ASan).
TEST_F(Coro, AnAwaitedChildThatEndsOnAnotherLoopResumesItsAwaiterThere) {
  LoopThread other;
  constexpr int kTimes = 2000;
  int there = 0;
  spawn(loop_.get(), [](Coro* t, EventLoop* other, int* there) -> Task<> {
    auto hop = [](EventLoop* to) -> Task<int> {
      co_await resume_on(to);
      co_return 1;
    };
    for (int i = 0; i < kTimes; ++i) {
      int one = co_await hop(other);
      if (other->is_in_loop_thread()) *there += one;
      co_await resume_on(t->loop_.get());
    }
    t->loop_->quit();
  }(this, other.loop(), &there));
  run();
  EXPECT_EQ(there, kTimes);
}

// TLS through the same calls: connect() with ClientOptions::tls, an
// Acceptor on a TLS server, lines both ways, and the client's goodbye
// (close_notify, then FIN) is a clean end of stream, not a cut one.
TEST_F(Coro, TlsStreamsTalkAndEndCleanly) {
  ServerOptions options;
  options.tls = std::make_shared<const TlsContext>(server_context());
  start_server(options);
  bool server_saw_end = false;
  spawn(loop_.get(), [](Coro* t, bool* saw_end) -> Task<> {
    auto s = co_await t->acceptor_->accept();
    EXPECT_TRUE(s);
    if (!s) co_return;
    LineCodec lines;
    for (;;) {
      auto line = co_await s->read_line(lines);
      EXPECT_TRUE(line) << line.error().message();
      if (!line || !*line) break;
      EXPECT_TRUE(co_await s->write_line("re: " + **line));
    }
    *saw_end = true;
  }(this, &server_saw_end));
  spawn(loop_.get(), [](Coro* t, bool* saw_end) -> Task<> {
    ClientOptions client;
    client.tls = std::make_shared<const TlsContext>(
        client_context({TestCerts::get().cert("server"), true, "127.0.0.1"}));
    {
      auto c = co_await timeout(10s, connect(t->address_, client));
      EXPECT_TRUE(c) << c.error().message();
      if (!c) co_return t->loop_->quit();
      LineCodec lines;
      for (const char* text : {"one", "two"}) {
        EXPECT_TRUE(co_await c->write_line(text));
        auto reply = co_await c->read_line(lines);
        EXPECT_TRUE(reply && *reply && **reply == std::string("re: ") + text);
      }
    }  // the stream goes: close_notify, then our FIN
    while (!*saw_end) co_await sleep_for(1ms);
    t->loop_->quit();
  }(this, &server_saw_end));
  run();
  EXPECT_TRUE(server_saw_end);
}

// Tasks spawned from several threads at once all run, on the loop's
// thread, once each (TSan checks the hand-over).
TEST_F(Coro, SpawnsFromManyThreadsAtOnceAllRunOnTheLoop) {
  static constexpr int kThreads = 4;
  static constexpr int kEach = 500;
  int ran = 0;
  int elsewhere = 0;
  const std::thread::id here = std::this_thread::get_id();
  std::vector<std::thread> spawners;
  for (int i = 0; i < kThreads; ++i) {
    spawners.emplace_back([&] {
      for (int j = 0; j < kEach; ++j) {
        spawn(loop_.get(), [](Coro* t, int* ran, int* elsewhere, std::thread::id here) -> Task<> {
          if (std::this_thread::get_id() != here) ++*elsewhere;
          co_await sleep_for(0ms);
          if (++*ran == kThreads * kEach) t->loop_->quit();
        }(this, &ran, &elsewhere, here));
      }
    });
  }
  run();
  for (auto& t : spawners) t.join();
  EXPECT_EQ(ran, kThreads * kEach);
  EXPECT_EQ(elsewhere, 0);
}

// An exception that escapes a task ends the program (the layer's errors
// are values; see coro_task.h), from the loop that ran the task.
TEST_F(Coro, AnExceptionEscapingATaskTerminates) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        spawn(loop_.get(), []() -> Task<> {
          co_await sleep_for(0ms);
          throw std::runtime_error("escaped");
        }());
        run();
      },
      "escaped");
}

// Regression: a second co_await of a Task that a first co_await was still
// running went unchecked: it resumed the child out of its wait and took
// its end, so the first awaiter waited for ever. It aborts now, in every
// build.
TEST_F(Coro, AwaitingATaskThatAnotherAwaitRunsAbortsInEveryBuild) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        auto shared = std::make_shared<Task<int>>([]() -> Task<int> {
          co_await sleep_for(1h);
          co_return 1;
        }());
        for (int i = 0; i < 2; ++i) {
          spawn(loop_.get(), [](std::shared_ptr<Task<int>> child) -> Task<> {
            (void)co_await std::move(*child);
          }(shared));
        }
        run();
      },
      "co_await on a coro::Task that another co_await runs");
}

}  // namespace
