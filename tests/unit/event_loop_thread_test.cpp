// EventLoopThread: start() returns with the loop running in the new thread,
// stop() drains queued work and joins, and a loop that cannot be created is
// an error from start(), not an abort. LoopThreadPool is built on it.
#include "tcpkit/event_loop_thread.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "tcpkit/event_loop.h"
#include "tcpkit/loop_thread_pool.h"
#include "test_util.h"

namespace {

using tcpkit::EventLoop;
using tcpkit::EventLoopThread;
using tcpkit::LoopThreadPool;
using tcpkit::test::call_in;
using tcpkit::test::exhaust_descriptors;
using tcpkit::test::LoopThread;

TEST(EventLoopThread, StartReturnsWithTheLoopRunningInItsOwnThread) {
  EventLoopThread t;
  EXPECT_EQ(t.loop(), nullptr);
  ASSERT_TRUE(t.start());
  EventLoop* loop = t.loop();
  ASSERT_NE(loop, nullptr);
  EXPECT_TRUE(loop->is_running());
  EXPECT_FALSE(loop->is_in_loop_thread());
  auto loop_thread = call_in(loop, [] { return std::this_thread::get_id(); });
  EXPECT_NE(loop_thread, std::this_thread::get_id());
  EXPECT_EQ(call_in(loop, [] { return EventLoop::current(); }), loop);
}

TEST(EventLoopThread, StopRunsWorkQueuedBeforeItAndJoins) {
  EventLoopThread t;
  ASSERT_TRUE(t.start());
  int ran = 0;  // loop thread only until stop() has joined it
  for (int i = 0; i < 100; ++i) t.loop()->queue_in_loop([&ran] { ++ran; });
  t.stop();
  EXPECT_EQ(ran, 100);
  EXPECT_EQ(t.loop(), nullptr);
  t.stop();  // a second stop() has nothing left to do
}

// bench's workers end their loops from inside; stop() must not quit (or
// touch) a loop that has already returned and been destroyed.
TEST(EventLoopThread, StopAfterTheLoopQuitItself) {
  EventLoopThread t;
  ASSERT_TRUE(t.start());
  EventLoop* loop = t.loop();
  loop->queue_in_loop([loop] { loop->quit(); });
  t.stop();
  EXPECT_EQ(t.loop(), nullptr);
}

TEST(EventLoopThread, DestructorStopsTheLoop) {
  std::atomic<bool> ran{false};
  {
    EventLoopThread t;
    ASSERT_TRUE(t.start());
    t.loop()->queue_in_loop([&ran] { ran = true; });
  }
  EXPECT_TRUE(ran);
}

TEST(EventLoopThreadDeathTest, StartReportsALoopThatCannotBeCreated) {
  TCPKIT_SKIP_WHERE_DESCRIPTORS_CANNOT_RUN_OUT();
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        auto held = exhaust_descriptors(0);
        EventLoopThread t;
        auto started = t.start();
        if (started || t.loop() != nullptr) std::_Exit(1);
        std::fprintf(stderr, "[%s]\n", started.error().message().c_str());
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(0),
      "\\[(epoll_create1|io_uring_setup) for an event loop: Too many open files\\]");
}

TEST(LoopThreadPool, HandsOutItsLoopsRoundRobin) {
  LoopThread base;
  base.call([&] {
    LoopThreadPool pool(base.loop(), 3);
    ASSERT_TRUE(pool.start());
    auto loops = pool.loops();
    ASSERT_EQ(loops.size(), 3u);
    for (int round = 0; round < 2; ++round) {
      for (EventLoop* loop : loops) EXPECT_EQ(pool.next_loop(), loop);
    }
    for (EventLoop* loop : loops) {
      EXPECT_NE(loop, base.loop());
      EXPECT_TRUE(loop->is_running());
    }
  });
}

TEST(LoopThreadPool, WithoutThreadsEveryLoopIsTheBaseLoop) {
  LoopThread base;
  base.call([&] {
    LoopThreadPool pool(base.loop(), 0);
    ASSERT_TRUE(pool.start());
    EXPECT_EQ(pool.loops(), std::vector<EventLoop*>{base.loop()});
    EXPECT_EQ(pool.next_loop(), base.loop());
  });
}

// Two descriptors are one loop (epoll + eventfd): the second of two threads
// cannot have its loop, and the first is stopped again.
TEST(LoopThreadPoolDeathTest, StartReportsTheLoopThatCouldNotBeCreated) {
  TCPKIT_SKIP_WHERE_DESCRIPTORS_CANNOT_RUN_OUT();
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        EventLoop base;
        LoopThreadPool pool(&base, 2);
        auto held = exhaust_descriptors(2);
        auto started = pool.start();
        if (started || pool.loops() != std::vector<EventLoop*>{&base}) std::_Exit(1);
        std::fprintf(stderr, "[%s]\n", started.error().message().c_str());
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(0),
      "\\[(epoll_create1|io_uring_setup) for an event loop: Too many open files\\]");
}

}  // namespace
