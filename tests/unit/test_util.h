// Helpers shared by the reactor tests: a thread that owns and runs an
// EventLoop (an EventLoopThread), waits with deadlines, and blocking clients built on TcpStream.
//
// Every wait has a deadline, so a broken reactor fails a test instead of
// hanging CTest; nothing here sleeps to synchronise.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "tcpkit/event_loop.h"
#include "tcpkit/event_loop_thread.h"
#include "tcpkit/tcp_server.h"
#include "tcpkit/tcp_stream.h"
#include "tcpkit/unique_fd.h"

namespace tcpkit::test {

using namespace std::chrono_literals;

// The longest any single wait in a test may take before the test fails.
constexpr std::chrono::milliseconds kWait{5000};

// Runs `f` in `loop`'s thread and returns its result. Unlike
// EventLoop::run_in_loop_and_wait(), which waits as long as it takes, a loop
// that does not answer within kWait is a hang here: the process aborts with a
// message rather than blocking CTest.
template <typename F>
auto call_in(EventLoop* loop, F&& f) -> std::invoke_result_t<F&> {
  using R = std::invoke_result_t<F&>;
  auto task = std::make_shared<std::packaged_task<R()>>(std::forward<F>(f));
  auto result = task->get_future();
  loop->run_in_loop([task] { (*task)(); });
  if (result.wait_for(kWait) != std::future_status::ready) {
    std::fprintf(stderr, "test_util: the loop did not answer within %lld ms\n",
                 static_cast<long long>(kWait.count()));
    std::abort();
  }
  return result.get();
}

// An EventLoopThread started at construction (a test cannot go on without
// its loop) and stopped at destruction. call() runs a function in the loop
// thread and waits, with call_in()'s deadline.
class LoopThread {
 public:
  LoopThread() {
    auto started = thread_.start();
    if (!started) {
      std::fprintf(stderr, "test_util: %s\n", started.error().message().c_str());
      std::abort();
    }
  }

  EventLoop* loop() const { return thread_.loop(); }

  template <typename F>
  auto call(F&& f) -> std::invoke_result_t<F&> {
    return call_in(loop(), std::forward<F>(f));
  }

 private:
  EventLoopThread thread_;
};

// A value guarded by a mutex that other threads update and a test waits on.
template <typename T>
class Watched {
 public:
  explicit Watched(T initial = T{}) : value_(std::move(initial)) {}

  template <typename F>
  void update(F&& f) {
    {
      std::lock_guard lock(mutex_);
      f(value_);
    }
    cv_.notify_all();
  }
  void set(T v) {
    update([&](T& x) { x = std::move(v); });
  }
  T get() const {
    std::lock_guard lock(mutex_);
    return value_;
  }
  // Waits until pred(value) holds; false after `timeout`.
  template <typename P>
  bool wait(P&& pred, std::chrono::milliseconds timeout = kWait) const {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return pred(value_); });
  }

 private:
  mutable std::mutex mutex_;
  mutable std::condition_variable cv_;
  T value_;
};

// Polls `pred` until it holds, for conditions no callback reports (a
// descriptor closed in another thread). Bounded by `timeout`; the short
// yield is not synchronisation, the predicate is.
template <typename P>
bool eventually(P&& pred, std::chrono::milliseconds timeout = kWait) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// Raises the soft descriptor limit to the hard one (tests with hundreds of
// sockets); returns the new soft limit.
inline rlim_t raise_fd_limit() {
  rlimit rl{};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &rl);
  return rl.rlim_cur;
}

// Uses up the process's descriptors but `leave_free`, so that the next
// descriptors the code under test opens are its last (EMFILE after them).
// The soft limit is lowered first, so the filling takes a few hundred
// descriptors whatever the hard limit. Meant for a death test's child (or
// a forked one): the limit is not restored. Closing the returned
// descriptors frees them again.
inline std::vector<UniqueFd> exhaust_descriptors(size_t leave_free) {
  rlimit rl{};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = std::min<rlim_t>(rl.rlim_cur, 256);
  ::setrlimit(RLIMIT_NOFILE, &rl);
  std::vector<UniqueFd> held;
  for (;;) {
    UniqueFd fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!fd) break;
    held.push_back(std::move(fd));
  }
  for (size_t i = 0; i < leave_free && !held.empty(); ++i) held.pop_back();
  return held;
}

// UBSan's vptr check (part of the asan preset) needs a free descriptor:
// with none left it reports a false error. Tests that run the process out of
// descriptors skip there, saying so.
#ifdef __SANITIZE_ADDRESS__
#define TCPKIT_SKIP_WHERE_DESCRIPTORS_CANNOT_RUN_OUT() \
  GTEST_SKIP()                                         \
      << "under ASan+UBSan: UBSan's vptr check needs a free descriptor, so none may run out"
#else
#define TCPKIT_SKIP_WHERE_DESCRIPTORS_CANNOT_RUN_OUT() (void)0
#endif

// ---- blocking clients -----------------------------------------------------

inline TcpStream connect_client(const Endpoint& server,
                                std::chrono::milliseconds recv_timeout = kWait) {
  auto s = TcpStream::connect(server, kWait);
  EXPECT_TRUE(s) << s.error().message();
  if (!s) return {};
  EXPECT_TRUE(s->set_recv_timeout(recv_timeout));
  return std::move(*s);
}

// Receives exactly n bytes (empty string and a test failure if it cannot).
inline std::string recv_n(TcpStream& s, size_t n) {
  std::string out(n, '\0');
  auto r = s.recv_exact(out.data(), n);
  EXPECT_TRUE(r) << r.error().message();
  if (!r) return {};
  return out;
}

// Reads until EOF and returns everything; a timeout or error fails the test.
inline std::string read_to_eof(TcpStream& s) {
  std::string out;
  char buf[16 * 1024];
  for (;;) {
    auto n = s.recv(buf, sizeof buf);
    EXPECT_TRUE(n) << n.error().message() << " after " << out.size() << " bytes";
    if (!n || *n == 0) return out;
    out.append(buf, *n);
  }
}

// A server on 127.0.0.1:0 whose base loop runs in its own thread. The test
// configures callbacks in `configure` (run in the base loop before start()).
// finish() checks the end state every test must reach: every connection
// gone, the I/O loops and the base loop holding no channels and no timers.
class ServerHarness {
 public:
  void start(ServerOptions options, const std::function<void(TcpServer&)>& configure = {},
             const Endpoint& listen_on = Endpoint::loopback_v4(0)) {
    base_.call([&] {
      server_ = std::make_unique<TcpServer>(base_.loop(), options);
      if (configure) configure(*server_);
      auto r = server_->listen(listen_on);
      EXPECT_TRUE(r) << r.error().message();
      auto started = server_->start();
      EXPECT_TRUE(started) << started.error().message();
      address_ = server_->listen_endpoints().at(0);
    });
  }

  TcpServer& server() { return *server_; }
  const Endpoint& address() const { return address_; }
  LoopThread& base() { return base_; }

  // Waits for every connection to close, checks that every loop then holds
  // no channels but its listeners (connections are destroyed a moment after
  // they close, in their loop), destroys the server and checks the base loop.
  // `listening`: false after stop(), when the listeners are gone too.
  void finish(bool listening = true) {
    if (!server_) return;
    EXPECT_TRUE(eventually([&] { return server_->open_connections() == 0; }))
        << server_->open_connections() << " connections still open";
    for (EventLoop* loop : server_->io_loops()) {
      bool has_listener = listening && (reuse_port_per_loop_ || loop == base_.loop());
      size_t expected = has_listener ? 1 : 0;
      EXPECT_TRUE(eventually([&] {
        return call_in(loop, [loop] { return loop->channel_count(); }) == expected;
      })) << "a loop still holds connection channels";
      if (loop != base_.loop()) {
        EXPECT_TRUE(eventually([&] {
          return call_in(loop, [loop] { return loop->timer_count(); }) == 0;
        })) << "an I/O loop still holds timers";
      }
    }
    base_.call([&] {
      server_.reset();
      EXPECT_EQ(base_.loop()->channel_count(), 0u);
      EXPECT_EQ(base_.loop()->timer_count(), 0u);
    });
  }

  void set_reuse_port_per_loop(bool on) { reuse_port_per_loop_ = on; }

  ~ServerHarness() {
    if (server_) base_.call([&] { server_.reset(); });
  }

 private:
  LoopThread base_;
  std::unique_ptr<TcpServer> server_;
  Endpoint address_;
  bool reuse_port_per_loop_ = false;
};

// An echo server's on_message.
inline void echo(const TcpConnectionPtr& conn, Buffer& in) {
  conn->send(in);
}

// Ups, downs and the last connection seen, from the server's callbacks.
struct Tally {
  Watched<int> up{0};
  Watched<int> down{0};
  Watched<std::vector<std::error_code>> reasons;
  Watched<TcpConnectionPtr> last;

  ConnectionCallback callback() {
    return [this](const TcpConnectionPtr& conn) {
      if (conn->connected()) {
        last.set(conn);
        up.update([](int& n) { ++n; });
        return;
      }
      auto reason = conn->close_reason();
      reasons.update([&](auto& v) { v.push_back(reason); });
      down.update([](int& n) { ++n; });
    };
  }
  TcpConnectionPtr wait_last() {
    EXPECT_TRUE(last.wait([](auto& c) { return c != nullptr; }));
    return last.get();
  }
  // Drops the test's reference so the connection can be destroyed.
  void forget() { last.set(nullptr); }
};

// The usual fixture: an echo server on one I/O loop whose ups and downs
// `tally` records.
inline void start_echo(ServerHarness& h, Tally& tally) {
  ServerOptions options;
  options.threads = 1;
  h.start(options, [&](TcpServer& s) {
    s.set_on_connection(tally.callback());
    s.set_on_message(echo);
  });
}

}  // namespace tcpkit::test
