// The EventLoop's backends (epoll, io_uring) seen through channels: level-
// triggered readiness, removal while events are dispatched, interest changes
// while a poll is armed, closing a watched socket, wake-ups and timers; and
// the fallback to epoll where io_uring is forbidden. The rest of the suite
// runs on each backend through TCPKIT_IO_BACKEND (tests/CMakeLists.txt).
#include <gtest/gtest.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <thread>
#include <utility>

#include "tcpkit/detail/channel.h"
#include "tcpkit/event_loop.h"
#include "tcpkit/io_backend.h"
#include "tcpkit/unique_fd.h"
#include "test_util.h"

using namespace std::chrono_literals;
using tcpkit::Channel;
using tcpkit::EventLoop;
using tcpkit::IoBackend;
using tcpkit::TimerId;
using tcpkit::UniqueFd;
using tcpkit::test::kWait;
namespace event = tcpkit::event;

namespace tcpkit {
// Test names and failure messages read "uring", not "1-byte object <02>".
void PrintTo(IoBackend backend, std::ostream* os) {
  *os << to_string(backend);
}
}  // namespace tcpkit

namespace {

struct SocketPair {
  UniqueFd near, far;
};

SocketPair socket_pair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0) std::abort();
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

void put(const UniqueFd& fd, const std::string& bytes) {
  ASSERT_EQ(::write(fd.get(), bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
}

// A channel whose events go to a std::function the test sets.
struct Watch {
  Watch(EventLoop* loop, int fd) : channel(loop, fd) { channel.set_handler<&Watch::handle>(this); }
  ~Watch() {
    channel.disable_all();
    channel.remove();
  }
  void handle(unsigned mask) { on_event(mask); }

  Channel channel;
  std::function<void(unsigned)> on_event;
};

class PollerTest : public ::testing::TestWithParam<IoBackend> {
 protected:
  void SetUp() override {
    auto loop = EventLoop::create(GetParam());
    ASSERT_TRUE(loop) << loop.error().message();
    loop_ = std::move(*loop);
    if (loop_->backend() != GetParam()) {
      GTEST_SKIP() << "io_uring is unavailable here: " << loop_->backend_fallback().message();
    }
  }
  void TearDown() override {
    if (!loop_) return;
    EXPECT_EQ(loop_->channel_count(), 0u);
    EXPECT_EQ(loop_->timer_count(), 0u);
  }
  // Runs the loop until a handler quits it; fails the test after kWait.
  void run() {
    TimerId guard = loop_->run_after(kWait, [this] {
      ADD_FAILURE() << "the loop did not finish in time";
      loop_->quit();
    });
    loop_->run();
    loop_->cancel(guard);
  }

  std::unique_ptr<EventLoop> loop_;
};

// A connection reads a bounded amount per event and expects to hear again
// about the rest: readiness must be level-triggered on both backends.
TEST_P(PollerTest, ReadinessIsLevelTriggered) {
  auto pair = socket_pair();
  put(pair.far, "0123456789");
  Watch w(loop_.get(), pair.near.get());
  int events = 0;
  std::string got;
  w.on_event = [&](unsigned mask) {
    ++events;
    EXPECT_TRUE(mask & event::kReadable);
    char c = 0;
    ASSERT_EQ(::read(pair.near.get(), &c, 1), 1);  // one byte per event, the rest left waiting
    got += c;
    if (got.size() == 10) {
      w.channel.disable_all();
      loop_->quit();
    }
  };
  w.channel.enable_reading();
  run();
  EXPECT_EQ(got, "0123456789");
  EXPECT_EQ(events, 10);
}

// Two channels ready in one iteration; the first handler destroys the
// other. Its event must not be delivered (ASan would see the freed channel).
TEST_P(PollerTest, ChannelDestroyedByAnEarlierHandlerGetsNoEvent) {
  auto a = socket_pair();
  auto b = socket_pair();
  put(a.far, "a");
  put(b.far, "b");
  auto wa = std::make_unique<Watch>(loop_.get(), a.near.get());
  auto wb = std::make_unique<Watch>(loop_.get(), b.near.get());
  int handled = 0;
  // Whichever comes first destroys the other (not itself: its handler is
  // running and lives in it).
  wa->on_event = [&](unsigned) {
    ++handled;
    wb.reset();
    loop_->quit();
  };
  wb->on_event = [&](unsigned) {
    ++handled;
    wa.reset();
    loop_->quit();
  };
  wa->channel.enable_reading();
  wb->channel.enable_reading();
  run();
  EXPECT_EQ(handled, 1);
}

// A poll that fires as its channel is removed completes with the old slot's
// generation; the channel that reuses the slot must not see that event. A
// spurious event would find nothing to read.
TEST_P(PollerTest, StaleCompletionNeverReachesTheNextChannelInItsSlot) {
  auto a = socket_pair();
  auto b = socket_pair();
  auto wa = std::make_unique<Watch>(loop_.get(), a.near.get());
  wa->on_event = [](unsigned) { ADD_FAILURE() << "the removed channel got an event"; };
  wa->channel.enable_reading();
  std::unique_ptr<Watch> wb;
  int b_events = 0;
  // After the first wait, so a's poll is armed in the kernel.
  loop_->run_after(0ms, [&] {
    put(a.far, "for a");  // a's poll fires now...
    wa.reset();           // ...and a is removed before the loop reaps it
    wb = std::make_unique<Watch>(loop_.get(), b.near.get());
    wb->on_event = [&](unsigned) {
      ++b_events;
      char buf[16];
      EXPECT_EQ(::read(b.near.get(), buf, sizeof buf), 5) << "an event with nothing to read";
      wb->channel.disable_all();  // wb itself goes after run(): this handler lives in it
      loop_->quit();
    };
    wb->channel.enable_reading();
    // One more wait reaps a's completion; then b gets something to read.
    loop_->run_after(0ms, [&] { put(b.far, "for b"); });
  });
  run();
  EXPECT_EQ(b_events, 1);
}

// Interest changed outside the channel's own handler, while its poll waits
// in the kernel: the new interest applies (io_uring cancels and re-arms).
TEST_P(PollerTest, InterestAddedWhileArmedIsSeen) {
  auto pair = socket_pair();
  Watch w(loop_.get(), pair.near.get());
  w.on_event = [&](unsigned mask) {
    EXPECT_TRUE(mask & event::kWritable);
    EXPECT_FALSE(mask & event::kReadable);
    w.channel.disable_all();
    loop_->quit();
  };
  w.channel.enable_reading();
  loop_->run_after(0ms, [&] { w.channel.enable_writing(); });
  run();
}

// After a peer's FIN, io_uring reports POLLRDHUP to every poll of the
// socket; a channel waiting for room to write must still hear of the room
// (and not of the FIN, which epoll does not report to a writer).
TEST_P(PollerTest, WriterHearsOfRoomAfterThePeerHalfCloses) {
  auto pair = socket_pair();
  std::string chunk(4096, 'x');
  while (::write(pair.near.get(), chunk.data(), chunk.size()) > 0) {
  }
  ASSERT_EQ(::shutdown(pair.far.get(), SHUT_WR), 0);
  Watch w(loop_.get(), pair.near.get());
  w.on_event = [&](unsigned mask) {
    EXPECT_EQ(mask, event::kWritable);
    w.channel.disable_all();
    loop_->quit();
  };
  w.channel.enable_writing();
  // Two waits later the FIN has been seen; then the peer makes room.
  loop_->run_after(0ms, [&] {
    loop_->run_after(0ms, [&] {
      char buf[65536];
      while (::read(pair.far.get(), buf, sizeof buf) > 0) {
      }
    });
  });
  run();
}

// A watched socket, once its channel is removed, is closed for real by
// close(): a listener's port is free again at once. (An io_uring poll holds
// a reference to the socket until its cancellation reaches the kernel.)
TEST_P(PollerTest, RemovedListenerFreesItsPortAtOnce) {
  auto listener =
      std::make_unique<UniqueFd>(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener->get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(listener->get(), 8), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(listener->get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
  auto w = std::make_unique<Watch>(loop_.get(), listener->get());
  w->on_event = [](unsigned) { ADD_FAILURE() << "nobody connected"; };
  w->channel.enable_reading();
  int rebind = -1;
  loop_->run_after(0ms, [&] {
    w.reset();
    listener.reset();
    UniqueFd again(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));  // no SO_REUSEADDR
    rebind = ::bind(again.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 ? 0 : errno;
    loop_->quit();
  });
  run();
  EXPECT_EQ(rebind, 0) << std::strerror(rebind);
}

TEST_P(PollerTest, AnotherThreadWakesTheLoop) {
  bool ran = false;
  std::thread other([&] {
    loop_->run_in_loop([&] {
      ran = true;
      loop_->quit();
    });
  });
  run();
  other.join();
  EXPECT_TRUE(ran);
}

// A loop with no I/O sleeps until its timer is due, and not less.
TEST_P(PollerTest, TimerEndsAnIdleWait) {
  const auto start = EventLoop::Clock::now();
  EventLoop::Clock::time_point fired;
  loop_->run_after(30ms, [&] {
    fired = EventLoop::Clock::now();
    loop_->quit();
  });
  run();
  EXPECT_GE(fired - start, 30ms);
}

INSTANTIATE_TEST_SUITE_P(Backends, PollerTest,
                         ::testing::Values(IoBackend::kEpoll, IoBackend::kUring),
                         [](const auto& info) {
                           return std::string(tcpkit::to_string(info.param));
                         });

TEST(IoBackend, NamesAndParsing) {
  EXPECT_EQ(tcpkit::parse_io_backend("epoll"), IoBackend::kEpoll);
  EXPECT_EQ(tcpkit::parse_io_backend("uring"), IoBackend::kUring);
  EXPECT_EQ(tcpkit::parse_io_backend("io_uring"), IoBackend::kUring);
  EXPECT_EQ(tcpkit::parse_io_backend("kqueue"), std::nullopt);
  EXPECT_STREQ(tcpkit::to_string(IoBackend::kUring), "uring");
  EXPECT_EQ(tcpkit::resolve_io_backend(IoBackend::kEpoll), IoBackend::kEpoll);
}

// The environment chooses kDefault's backend (how the suite runs twice).
TEST(IoBackend, EnvironmentChoosesTheDefault) {
  const char* was = std::getenv("TCPKIT_IO_BACKEND");
  const std::string saved = was != nullptr ? was : "";
  ::setenv("TCPKIT_IO_BACKEND", "epoll", 1);
  EXPECT_EQ(EventLoop::create().value()->backend(), IoBackend::kEpoll);
  ::setenv("TCPKIT_IO_BACKEND", "uring", 1);
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop);
  EXPECT_EQ((*loop)->backend() == IoBackend::kUring, !(*loop)->backend_fallback().code());
  loop->reset();
  ::setenv("TCPKIT_IO_BACKEND", "nonsense", 1);
  EXPECT_EQ(tcpkit::resolve_io_backend(IoBackend::kDefault), IoBackend::kEpoll);
  if (was != nullptr) {
    ::setenv("TCPKIT_IO_BACKEND", saved.c_str(), 1);
  } else {
    ::unsetenv("TCPKIT_IO_BACKEND");
  }
}

// In a child process only (a seccomp filter cannot be removed again): the
// system call `nr` fails with EPERM from now on; every other is allowed.
void forbid_system_call(unsigned nr) {
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog program{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) std::_Exit(2);
  if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0) std::_Exit(3);
}

// In a child process: forbids io_uring_setup, as container runtimes' seccomp
// profiles do, then creates a loop asked for io_uring. Exits 0 and prints the
// fallback's reason when the loop runs, on epoll.
[[noreturn]] void create_loop_where_io_uring_is_forbidden() {
  forbid_system_call(__NR_io_uring_setup);
  auto loop = EventLoop::create(IoBackend::kUring);
  if (!loop || (*loop)->backend() != IoBackend::kEpoll) std::_Exit(1);
  // The fallback loop works: a timer runs on it.
  bool fired = false;
  (*loop)->run_after(0ms, [&] {
    fired = true;
    (*loop)->quit();
  });
  (*loop)->run();
  if (!fired) std::_Exit(4);
  std::fprintf(stderr, "[%s]\n", (*loop)->backend_fallback().message().c_str());
  std::_Exit(0);
}

// Where a seccomp filter forbids io_uring_setup, a loop asked for io_uring
// runs on epoll and says why. In a child process: a seccomp filter cannot be
// removed again.
TEST(IoBackendDeathTest, FallsBackToEpollWhereSeccompForbidsIoUring) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(create_loop_where_io_uring_is_forbidden(), ::testing::ExitedWithCode(0),
              "\\[io_uring_setup for an event loop: Operation not permitted\\]");
}

// In a child process: an epoll loop watches a socket; then epoll_ctl is
// forbidden, and the channel switches between receiving and not, as a
// connection does when its reads change between bulk and small ones. epoll
// cannot receive, so a switch must cost no epoll_ctl (one that fails aborts
// the process, and one that succeeds is a system call for nothing), and
// readiness is still reported after the switches. Exits 0 then.
[[noreturn]] void switch_receiving_where_epoll_ctl_is_forbidden() {
  auto created = EventLoop::create(IoBackend::kEpoll);
  if (!created) std::_Exit(1);
  EventLoop* loop = created->get();
  auto [near, far] = socket_pair();
  Watch watch(loop, near.get());
  bool heard = false;
  watch.on_event = [&](unsigned mask) {
    heard = (mask & event::kReadable) != 0;
    loop->quit();
  };
  watch.channel.enable_reading();
  loop->run_after(kWait, [loop] { loop->quit(); });
  forbid_system_call(__NR_epoll_ctl);
  for (int i = 0; i < 8; ++i) watch.channel.set_receives(i % 2 == 0);
  if (::write(far.get(), "x", 1) != 1) std::_Exit(5);
  loop->run();
  // No destructors: removing the channel would need epoll_ctl.
  std::_Exit(heard ? 0 : 4);
}

TEST(PollerDeathTest, EpollSwitchesReceivingWithoutASystemCall) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(switch_receiving_where_epoll_ctl_is_forbidden(), ::testing::ExitedWithCode(0), "");
}

}  // namespace
