// EventLoop: timers on a running loop, cross-thread functors, quit, and the
// thread-ownership assertion.
#include "tcpkit/event_loop.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include "test_util.h"

using namespace std::chrono_literals;
using tcpkit::EventLoop;
using tcpkit::TimerId;
using tcpkit::test::exhaust_descriptors;
using tcpkit::test::kWait;
using tcpkit::test::LoopThread;
using tcpkit::test::Watched;

namespace {

// Checks the end state of every test: nothing left registered on the loop.
void expect_empty(LoopThread& t) {
  t.call([&] {
    EXPECT_EQ(t.loop()->channel_count(), 0u);
    EXPECT_EQ(t.loop()->timer_count(), 0u);
  });
}

TEST(EventLoop, FreshLoopHoldsNothing) {
  LoopThread t;
  EXPECT_NE(t.loop(), nullptr);
  EXPECT_FALSE(t.loop()->is_in_loop_thread());
  EXPECT_EQ(EventLoop::current(), nullptr);
  t.call([&] {
    EXPECT_EQ(EventLoop::current(), t.loop());
    EXPECT_TRUE(t.loop()->is_in_loop_thread());
    EXPECT_TRUE(t.loop()->is_running());
  });
  expect_empty(t);
}

TEST(EventLoop, TimersFireInDeadlineOrder) {
  LoopThread t;
  Watched<std::vector<int>> order;
  t.call([&] {
    auto note = [&](int i) {
      return [&order, i] { order.update([i](auto& v) { v.push_back(i); }); };
    };
    t.loop()->run_after(60ms, note(3));
    t.loop()->run_after(20ms, note(1));
    t.loop()->run_after(40ms, note(2));
  });
  ASSERT_TRUE(order.wait([](auto& v) { return v.size() == 3; }));
  EXPECT_EQ(order.get(), (std::vector<int>{1, 2, 3}));
  expect_empty(t);
}

TEST(EventLoop, TimerFiresNoEarlierThanItsDelay) {
  LoopThread t;
  std::promise<EventLoop::Clock::duration> fired;
  auto start = EventLoop::Clock::now();
  t.loop()->run_after(30ms, [&] { fired.set_value(EventLoop::Clock::now() - start); });
  auto f = fired.get_future();
  ASSERT_EQ(f.wait_for(kWait), std::future_status::ready);
  EXPECT_GE(f.get(), 30ms);
  expect_empty(t);
}

// Regression: the deadline was now + delay, which wraps for a delay the
// clock cannot count: Clock::duration::max() came out in the past, and the
// wait until it, wrapped again, put the loop to sleep past every other
// timer. Such a delay means never.
TEST(EventLoop, ADelayTooLongForTheClockNeverFiresAndHoldsNoOtherTimerBack) {
  LoopThread t;
  std::atomic<int> never{0};
  std::promise<void> soon;
  t.call([&] {
    t.loop()->run_after(EventLoop::Clock::duration::max(), [&] { ++never; });
    t.loop()->run_after(std::chrono::hours::max(), [&] { ++never; });
    t.loop()->run_after(std::chrono::duration<double>(1e300), [&] { ++never; });
    t.loop()->run_every(std::chrono::milliseconds::max(), [&] { ++never; });
    t.loop()->run_after(20ms, [&] { soon.set_value(); });
  });
  ASSERT_EQ(soon.get_future().wait_for(kWait), std::future_status::ready);
  EXPECT_EQ(never.load(), 0);
  t.call([&] { EXPECT_EQ(t.loop()->timer_count(), 4u); });
}

TEST(EventLoop, ADelayBelowZeroFiresAtOnce) {
  LoopThread t;
  std::promise<void> fired;
  t.loop()->run_after(std::chrono::hours::min(), [&] { fired.set_value(); });
  ASSERT_EQ(fired.get_future().wait_for(kWait), std::future_status::ready);
  expect_empty(t);
}

TEST(EventLoop, CancelledTimerDoesNotFire) {
  LoopThread t;
  std::atomic<bool> cancelled_ran{false};
  std::promise<void> marker;
  t.call([&] {
    TimerId id = t.loop()->run_after(10ms, [&] { cancelled_ran = true; });
    EXPECT_NE(id, 0u);
    t.loop()->cancel(id);
    // A later timer proves the loop went past the cancelled deadline.
    t.loop()->run_after(40ms, [&] { marker.set_value(); });
  });
  ASSERT_EQ(marker.get_future().wait_for(kWait), std::future_status::ready);
  EXPECT_FALSE(cancelled_ran);
  expect_empty(t);
}

TEST(EventLoop, RepeatingTimerRunsUntilItCancelsItself) {
  LoopThread t;
  Watched<int> runs{0};
  std::promise<void> marker;
  t.call([&] {
    auto id = std::make_shared<TimerId>(0);
    *id = t.loop()->run_every(5ms, [&, id] {
      int n = 0;
      runs.update([&](int& r) { n = ++r; });
      if (n == 3) {
        t.loop()->cancel(*id);
        t.loop()->run_after(30ms, [&] { marker.set_value(); });
      }
    });
  });
  ASSERT_EQ(marker.get_future().wait_for(kWait), std::future_status::ready);
  EXPECT_EQ(runs.get(), 3);
  expect_empty(t);
}

TEST(EventLoop, CallbackCancelsAnotherTimer) {
  LoopThread t;
  std::atomic<bool> victim_ran{false};
  std::promise<void> marker;
  t.call([&] {
    TimerId victim = t.loop()->run_after(40ms, [&] { victim_ran = true; });
    t.loop()->run_after(10ms, [&, victim] { t.loop()->cancel(victim); });
    t.loop()->run_after(70ms, [&] { marker.set_value(); });
  });
  ASSERT_EQ(marker.get_future().wait_for(kWait), std::future_status::ready);
  EXPECT_FALSE(victim_ran);
  expect_empty(t);
}

TEST(EventLoop, RunAfterAndCancelFromAnotherThread) {
  LoopThread t;
  std::promise<bool> fired_in_loop;
  std::atomic<bool> cancelled_ran{false};
  // Called from the test thread: the timer is added by the loop thread.
  TimerId cancelled = t.loop()->run_after(20ms, [&] { cancelled_ran = true; });
  t.loop()->cancel(cancelled);
  TimerId fired =
      t.loop()->run_after(40ms, [&] { fired_in_loop.set_value(t.loop()->is_in_loop_thread()); });
  EXPECT_NE(fired, cancelled);
  auto f = fired_in_loop.get_future();
  ASSERT_EQ(f.wait_for(kWait), std::future_status::ready);
  EXPECT_TRUE(f.get());
  EXPECT_FALSE(cancelled_ran);
  expect_empty(t);
}

TEST(EventLoop, RunEveryFromAnotherThreadCancelledFromAnotherThread) {
  LoopThread t;
  Watched<int> runs{0};
  TimerId id = t.loop()->run_every(2ms, [&] { runs.update([](int& r) { ++r; }); });
  ASSERT_TRUE(runs.wait([](int r) { return r >= 3; }));
  t.loop()->cancel(id);
  int after_cancel = t.call([&] { return runs.get(); });  // the cancel has run by now
  t.call([] {});
  EXPECT_EQ(runs.get(), after_cancel);
  expect_empty(t);
}

// Regression: a timer added from another thread is added by a queued
// functor; a cancel in the loop thread that came before that functor ran
// was lost, and the timer fired.
TEST(EventLoop, CancelInTheLoopBeforeAnotherThreadsTimerIsAdded) {
  LoopThread t;
  std::atomic<bool> fired{false};
  std::promise<void> holding, release, marker;
  std::atomic<TimerId> id{0};
  t.loop()->queue_in_loop([&] {
    holding.set_value();
    release.get_future().wait();
    // Back in the loop thread; the run_after() below has queued its add.
    t.loop()->cancel(id.load());
    t.loop()->run_after(40ms, [&] { marker.set_value(); });
  });
  holding.get_future().wait();
  id = t.loop()->run_after(10ms, [&] { fired = true; });
  release.set_value();
  ASSERT_EQ(marker.get_future().wait_for(kWait), std::future_status::ready);
  EXPECT_FALSE(fired);
  expect_empty(t);
}

TEST(EventLoop, TimerIdsAreUniqueAcrossThreads) {
  LoopThread t;
  std::vector<std::thread> threads;
  std::vector<std::vector<TimerId>> ids(4);
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      for (int k = 0; k < 100; ++k) ids[i].push_back(t.loop()->run_after(1h, [] {}));
    });
  }
  for (auto& th : threads) th.join();
  std::vector<TimerId> all;
  for (auto& v : ids) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(std::adjacent_find(all.begin(), all.end()), all.end());
  EXPECT_EQ(t.call([&] { return t.loop()->timer_count(); }), 400u);
  for (TimerId id : all) t.loop()->cancel(id);
  expect_empty(t);
}

TEST(EventLoop, RunInLoopRunsInlineInTheLoopThread) {
  LoopThread t;
  t.call([&] {
    bool ran = false;
    t.loop()->run_in_loop([&] { ran = true; });
    EXPECT_TRUE(ran);
  });
}

TEST(EventLoop, FunctorsFromManyThreadsRunInTheLoopInPerThreadOrder) {
  LoopThread t;
  constexpr int kThreads = 4;
  constexpr int kEach = 2000;
  // Touched only in the loop thread: TSan checks that claim.
  std::vector<std::vector<int>> seen(kThreads);
  Watched<int> done{0};
  std::atomic<int> wrong_thread{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      for (int k = 0; k < kEach; ++k) {
        auto f = [&, i, k] {
          if (!t.loop()->is_in_loop_thread()) ++wrong_thread;
          seen[i].push_back(k);
          if (k == kEach - 1) done.update([](int& d) { ++d; });
        };
        if (k % 2) {
          t.loop()->queue_in_loop(f);
        } else {
          t.loop()->run_in_loop(f);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_TRUE(done.wait([](int d) { return d == kThreads; }));
  EXPECT_EQ(wrong_thread, 0);
  t.call([&] {
    for (auto& v : seen) {
      ASSERT_EQ(v.size(), static_cast<size_t>(kEach));
      for (int k = 0; k < kEach; ++k) ASSERT_EQ(v[k], k);
    }
  });
}

// Regression guard: a functor queued from inside a functor must run without
// waiting for unrelated I/O (the loop has none here, and no timers).
TEST(EventLoop, FunctorQueuedFromAFunctorRunsPromptly) {
  LoopThread t;
  std::promise<void> inner;
  t.loop()->queue_in_loop([&] { t.loop()->queue_in_loop([&] { inner.set_value(); }); });
  EXPECT_EQ(inner.get_future().wait_for(kWait), std::future_status::ready);
}

// The loop keeps the storage of the functors it ran for the next batch, not
// the functors: what one captured (a connection, in a queued close) is
// released once the batch has run, before the loop sleeps again.
TEST(EventLoop, AFunctorsCapturesAreReleasedOnceItRan) {
  LoopThread t;
  auto held = std::make_shared<int>(7);
  std::weak_ptr<int> watch = held;
  std::promise<void> ran;
  t.loop()->queue_in_loop([held = std::move(held), &ran] { ran.set_value(); });
  ASSERT_EQ(ran.get_future().wait_for(kWait), std::future_status::ready);
  // The next batch runs after the first one has been cleared.
  bool expired = false;
  t.call([&] { expired = watch.expired(); });
  EXPECT_TRUE(expired) << "a functor that ran still holds what it captured";
}

TEST(EventLoop, FunctorQueuedFromATimerRunsPromptly) {
  LoopThread t;
  std::promise<void> inner;
  t.loop()->run_after(1ms, [&] { t.loop()->queue_in_loop([&] { inner.set_value(); }); });
  EXPECT_EQ(inner.get_future().wait_for(kWait), std::future_status::ready);
  expect_empty(t);
}

// Regression: work queued from the loop's own thread before run() did not
// wake it, and run() sleeps first: it waited for the next I/O event or
// timer (here the 5 s guard), with no I/O at all for ever.
TEST(EventLoop, WorkQueuedBeforeRunRunsWithoutWaitingForAnEvent) {
  EventLoop loop;
  bool ran = false;
  bool guard_fired = false;
  loop.queue_in_loop([&] {
    ran = true;
    loop.quit();
  });
  const auto guard = loop.run_after(kWait, [&] {
    guard_fired = true;
    loop.quit();
  });
  loop.run();
  loop.cancel(guard);
  EXPECT_TRUE(ran);
  EXPECT_FALSE(guard_fired) << "the queued work waited for the guard timer";
}

TEST(EventLoop, QuitFromAnotherThreadStopsRun) {
  std::promise<EventLoop*> ready;
  std::promise<void> returned;
  std::thread th([&] {
    EventLoop loop;
    ready.set_value(&loop);
    loop.run();
    returned.set_value();
  });
  EventLoop* loop = ready.get_future().get();
  std::promise<void> running;
  loop->run_in_loop([&] { running.set_value(); });
  ASSERT_EQ(running.get_future().wait_for(kWait), std::future_status::ready);
  loop->quit();
  EXPECT_EQ(returned.get_future().wait_for(kWait), std::future_status::ready);
  th.join();
}

TEST(EventLoop, QuitStillRunsFunctorsQueuedBeforeIt) {
  std::promise<EventLoop*> ready;
  std::atomic<int> ran{0};
  std::thread th([&] {
    EventLoop loop;
    ready.set_value(&loop);
    loop.run();
  });
  EventLoop* loop = ready.get_future().get();
  for (int i = 0; i < 100; ++i) loop->queue_in_loop([&] { ++ran; });
  loop->quit();
  th.join();
  EXPECT_EQ(ran, 100);
}

// Regression: queue_in_loop() from another thread wrote its wake-up after
// releasing the queue's lock, so a functor that ended the loop could run,
// and the owner destroy the loop (closing its eventfd, whose number the next
// open file may take), before that write: a write to a closed or reused
// descriptor. `tcpkit bench` ends its worker loops this way; TSan reported
// the race between the write and the close. A busy timer keeps the loop
// awake without its eventfd, so that it may pick the ending functor up
// before the wake-up is written.
TEST(EventLoop, FunctorThatEndsTheLoopFromAnotherThreadIsQueuedBeforeTheLoopIsDestroyed) {
  for (int round = 0; round < 50; ++round) {
    std::promise<EventLoop*> ready;
    std::thread th([&] {
      EventLoop loop;
      loop.run_every(1us, [] {});
      ready.set_value(&loop);
      loop.run();
    });
    EventLoop* loop = ready.get_future().get();
    loop->queue_in_loop([loop] { loop->quit(); });
    th.join();
  }
}

TEST(EventLoop, QuitFromInsideTheLoop) {
  std::promise<void> returned;
  std::thread th([&] {
    EventLoop loop;
    loop.run_after(1ms, [&] { loop.quit(); });
    loop.run();
    EXPECT_FALSE(loop.is_running());
    returned.set_value();
  });
  EXPECT_EQ(returned.get_future().wait_for(kWait), std::future_status::ready);
  th.join();
}

// Busy polling changes how the loop waits, not what it does: timers fire in
// order and no earlier than their delay, functors from other threads run,
// and quit() ends it.
TEST(EventLoop, BusyPollingLoopRunsTimersAndFunctorsAndQuits) {
  std::promise<EventLoop*> ready;
  std::promise<void> returned;
  Watched<std::vector<int>> order;
  EventLoop::Clock::duration late_timer_after{};
  std::thread th([&] {
    EventLoop loop;
    loop.set_busy_poll(500us);
    const auto start = EventLoop::Clock::now();
    loop.run_after(30ms, [&] {
      late_timer_after = EventLoop::Clock::now() - start;
      order.update([](auto& v) { v.push_back(2); });
    });
    loop.run_after(5ms, [&] { order.update([](auto& v) { v.push_back(1); }); });
    ready.set_value(&loop);
    loop.run();
    returned.set_value();
  });
  EventLoop* loop = ready.get_future().get();
  ASSERT_TRUE(order.wait([](auto& v) { return v.size() == 2; }));
  std::promise<void> ran;
  loop->queue_in_loop([&] { ran.set_value(); });
  ASSERT_EQ(ran.get_future().wait_for(kWait), std::future_status::ready);
  loop->quit();
  EXPECT_EQ(returned.get_future().wait_for(kWait), std::future_status::ready);
  th.join();
  EXPECT_EQ(order.get(), (std::vector<int>{1, 2}));
  EXPECT_GE(late_timer_after, 30ms);
}

// After a wait that found I/O (here the wake-up of work queued from
// another thread), the loop spins for at most its busy-poll time before it
// sleeps, and counts the spinning as idle: with a 1 ms spin and a timer
// 100 ms away, it spins for about a millisecond and then sleeps (far less
// than the 100 ms as idle), and a loop without busy polling counts none.
TEST(EventLoop, BusyPollSpinsAfterIoOnlyUntilItSleepsAndCountsTheSpinAsIdle) {
  for (const auto spin : {0us, 1000us}) {
    EventLoop::Clock::duration idle{};
    std::promise<EventLoop*> ready;
    std::thread th([&] {
      EventLoop loop;
      loop.set_busy_poll(spin);
      EXPECT_EQ(loop.busy_poll(), spin);
      loop.run_after(100ms, [&] { loop.quit(); });
      ready.set_value(&loop);
      loop.run();
      idle = loop.busy_poll_idle();
    });
    ready.get_future().get()->queue_in_loop([] {});
    th.join();
    if (spin.count() == 0) {
      EXPECT_EQ(idle.count(), 0);
    } else {
      EXPECT_GE(idle, spin);
      EXPECT_LT(idle, 50ms);
    }
  }
}

// A spin ends when the next timer is due: a timer 50 ms away runs on time
// behind a one-second spin (it ran after the whole spin, a second late).
TEST(EventLoop, ATimerDueDuringASpinRunsOnTime) {
  EventLoop::Clock::duration fired_after{};
  std::promise<EventLoop*> ready;
  std::thread th([&] {
    EventLoop loop;
    loop.set_busy_poll(1s);
    ready.set_value(&loop);
    loop.run();
  });
  EventLoop* loop = ready.get_future().get();
  const auto start = EventLoop::Clock::now();
  loop->queue_in_loop([&] {  // I/O (the wake-up): the next wait spins
    loop->run_after(50ms, [&] {
      fired_after = EventLoop::Clock::now() - start;
      loop->quit();
    });
  });
  th.join();
  EXPECT_GE(fired_after, 50ms);
  EXPECT_LT(fired_after, 500ms);
}

// A loop that only timers wake (an idle server's periodic work) sleeps
// between them: it never spins, whatever its busy-poll time.
TEST(EventLoop, AWakeUpForATimerAloneDoesNotSpin) {
  EventLoop::Clock::duration idle{};
  int ticks = 0;
  std::thread th([&] {
    EventLoop loop;
    loop.set_busy_poll(1s);
    loop.run_every(10ms, [&] {
      if (++ticks == 10) loop.quit();
    });
    loop.run();
    idle = loop.busy_poll_idle();
  });
  th.join();
  EXPECT_EQ(ticks, 10);
  EXPECT_EQ(idle.count(), 0);
}

TEST(EventLoopDeathTest, AssertInLoopThreadAbortsFromAnotherThread) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        EventLoop loop;
        std::thread([&] { loop.assert_in_loop_thread(); }).join();
      },
      "EventLoop used from thread");
}

// Regression: only an assert checked the interval; a release build ran a
// zero interval once and a negative one on every turn of the loop.
TEST(EventLoopDeathTest, RunEveryWithoutAPositiveIntervalAbortsInEveryBuild) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EventLoop loop;
  EXPECT_DEATH(loop.run_every(0ms, [] {}), "run_every\\(\\) needs an interval above zero");
  EXPECT_DEATH(loop.run_every(-1s, [] {}), "run_every\\(\\) needs an interval above zero");
}

TEST(EventLoopDeathTest, TimerCountFromAnotherThreadAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        EventLoop loop;
        std::thread([&] { (void)loop.timer_count(); }).join();
      },
      "EventLoop used from thread");
}

TEST(EventLoopDeathTest, SecondLoopInOneThreadAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        EventLoop a;
        EventLoop b;
      },
      "second EventLoop");
}

// create() reports what the kernel refused instead of aborting. The first
// run has no descriptor left for epoll (or io_uring, in the suite's uring
// run: EMFILE is no reason to fall back); the second has exactly one, which
// the backend takes, so the eventfd is the one refused.
TEST(EventLoopDeathTest, CreateNamesTheCallThatFailedWhenDescriptorsRunOut) {
  TCPKIT_SKIP_WHERE_DESCRIPTORS_CANNOT_RUN_OUT();
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        auto held = exhaust_descriptors(0);
        auto no_epoll = EventLoop::create();
        held.pop_back();
        auto no_eventfd = EventLoop::create();
        if (no_epoll || no_eventfd) std::_Exit(1);
        std::fprintf(stderr, "[%s] [%s]\n", no_epoll.error().message().c_str(),
                     no_eventfd.error().message().c_str());
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(0),
      "\\[(epoll_create1|io_uring_setup) for an event loop: Too many open files\\] "
      "\\[eventfd for an event loop: Too many open files\\]");
}

TEST(EventLoopDeathTest, PlainConstructorAbortsWithTheReasonWhenDescriptorsRunOut) {
  TCPKIT_SKIP_WHERE_DESCRIPTORS_CANNOT_RUN_OUT();
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        auto held = exhaust_descriptors(0);
        EventLoop loop;
      },
      "cannot create an event loop: (epoll_create1|io_uring_setup) for an event loop: Too many "
      "open files");
}

TEST(EventLoop, RunInLoopAndWaitFromAnotherThreadReturnsAfterTheFunctionRan) {
  LoopThread t;
  bool ran_in_loop = false;  // no atomic: the wait orders the write before the read
  int runs = 0;
  t.loop()->run_in_loop_and_wait([&] {
    ran_in_loop = t.loop()->is_in_loop_thread();
    ++runs;
  });
  EXPECT_TRUE(ran_in_loop);
  EXPECT_EQ(runs, 1);
  expect_empty(t);
}

// Work queued earlier runs first: the wait covers everything before it.
TEST(EventLoop, RunInLoopAndWaitRunsAfterWorkQueuedBeforeIt) {
  LoopThread t;
  std::vector<int> order;  // loop thread only, read after the wait
  for (int i = 0; i < 10; ++i) t.loop()->queue_in_loop([&order, i] { order.push_back(i); });
  t.loop()->run_in_loop_and_wait([&] { order.push_back(10); });
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
}

// In the loop thread it runs inline: queuing and waiting there would wait
// for itself forever (call() would then abort on its deadline).
TEST(EventLoop, RunInLoopAndWaitInTheLoopThreadRunsInline) {
  LoopThread t;
  t.call([&] {
    bool ran = false;
    t.loop()->run_in_loop_and_wait([&] { ran = true; });
    EXPECT_TRUE(ran);
  });
  expect_empty(t);
}

TEST(EventLoop, ALoopCanBeCreatedAgainAfterTheFirstIsGone) {
  std::thread([] {
    { EventLoop a; }
    EventLoop b;
    EXPECT_EQ(EventLoop::current(), &b);
  }).join();
}

}  // namespace
