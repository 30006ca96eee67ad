// TimerQueue on its own: deadlines are given explicitly, so these tests are
// exact and take no time.
#include "timer_queue.h"

#include <gtest/gtest.h>

#include <chrono>
#include <vector>

using namespace std::chrono_literals;
using tcpkit::TimerQueue;
using Clock = TimerQueue::Clock;

namespace {

const Clock::time_point kT0 = Clock::now();

TEST(TimerQueue, EmptyQueueSleepsWithoutLimit) {
  TimerQueue q;
  EXPECT_EQ(q.time_until_next(kT0), -1us);
  EXPECT_EQ(q.size(), 0u);
  q.run_due(kT0 + 1h);  // nothing to do, nothing breaks
}

TEST(TimerQueue, RunsDueTimersInDeadlineOrder) {
  TimerQueue q;
  std::vector<int> order;
  q.add(1, kT0 + 30ms, 0ms, [&] { order.push_back(1); });
  q.add(2, kT0 + 10ms, 0ms, [&] { order.push_back(2); });
  q.add(3, kT0 + 20ms, 0ms, [&] { order.push_back(3); });
  q.add(4, kT0 + 10ms, 0ms, [&] { order.push_back(4); });  // same deadline: by id
  q.add(5, kT0 + 50ms, 0ms, [&] { order.push_back(5); });
  EXPECT_EQ(q.size(), 5u);

  q.run_due(kT0 + 30ms);
  EXPECT_EQ(order, (std::vector<int>{2, 4, 3, 1}));
  EXPECT_EQ(q.size(), 1u);
  EXPECT_EQ(q.time_until_next(kT0 + 30ms), 20ms);

  q.run_due(kT0 + 50ms);
  EXPECT_EQ(order, (std::vector<int>{2, 4, 3, 1, 5}));
  EXPECT_EQ(q.size(), 0u);
}

// Regression: the wait was rounded up to whole milliseconds, so a timer
// 100 us away (a relay's slicer pausing between pieces) fired a millisecond
// late, every time.
TEST(TimerQueue, TimeUntilNextRoundsUpToMicrosecondsAndNeverGoesNegative) {
  TimerQueue q;
  q.add(1, kT0 + 10ms + 100us, 0ms, [] {});
  EXPECT_EQ(q.time_until_next(kT0), 10100us);
  EXPECT_EQ(q.time_until_next(kT0 + 10ms), 100us);
  EXPECT_EQ(q.time_until_next(kT0 + 10ms + 99999ns), 1us);
  EXPECT_EQ(q.time_until_next(kT0 + 10ms + 100us), 0ms);
  EXPECT_EQ(q.time_until_next(kT0 + 1s), 0ms);
}

TEST(TimerQueue, CancelledTimerNeverRuns) {
  TimerQueue q;
  int runs = 0;
  q.add(1, kT0 + 10ms, 0ms, [&] { ++runs; });
  q.add(2, kT0 + 20ms, 0ms, [&] { ++runs; });
  EXPECT_TRUE(q.cancel(1));
  EXPECT_FALSE(q.cancel(99));  // unknown ids are ignored
  EXPECT_EQ(q.size(), 1u);
  q.run_due(kT0 + 1s);
  EXPECT_EQ(runs, 1);
  EXPECT_EQ(q.size(), 0u);
  EXPECT_FALSE(q.cancel(2));  // already run: a no-op
  EXPECT_FALSE(q.cancel(1));  // already cancelled
}

TEST(TimerQueue, RepeatingTimerIsRescheduledFromItsDeadline) {
  TimerQueue q;
  int runs = 0;
  q.add(1, kT0 + 10ms, 10ms, [&] { ++runs; });
  q.run_due(kT0 + 12ms);  // a little late: the next deadline stays at 20ms
  EXPECT_EQ(runs, 1);
  EXPECT_EQ(q.size(), 1u);
  EXPECT_EQ(q.time_until_next(kT0 + 12ms), 8ms);
  q.run_due(kT0 + 20ms);
  EXPECT_EQ(runs, 2);
  EXPECT_EQ(q.time_until_next(kT0 + 20ms), 10ms);
}

TEST(TimerQueue, RepeatingTimerAfterAStallIsNotScheduledInThePast) {
  TimerQueue q;
  int runs = 0;
  q.add(1, kT0 + 10ms, 10ms, [&] { ++runs; });
  q.run_due(kT0 + 1s);  // one run, not a burst of 99 catch-ups
  EXPECT_EQ(runs, 1);
  EXPECT_EQ(q.time_until_next(kT0 + 1s), 10ms);
}

TEST(TimerQueue, RepeatingTimerCancelsItselfFromItsCallback) {
  TimerQueue q;
  int runs = 0;
  q.add(7, kT0 + 10ms, 10ms, [&] {
    if (++runs == 3) q.cancel(7);
  });
  for (int i = 1; i <= 6; ++i) q.run_due(kT0 + i * 10ms);
  EXPECT_EQ(runs, 3);
  EXPECT_EQ(q.size(), 0u);
  EXPECT_EQ(q.time_until_next(kT0 + 1s), -1us);
}

TEST(TimerQueue, CallbackCancelsALaterTimerOfTheSameBatch) {
  TimerQueue q;
  std::vector<int> order;
  q.add(1, kT0 + 10ms, 0ms, [&] {
    order.push_back(1);
    q.cancel(2);  // already taken out of the queue for this batch
    q.cancel(3);  // still queued
  });
  q.add(2, kT0 + 20ms, 0ms, [&] { order.push_back(2); });
  q.add(3, kT0 + 40ms, 0ms, [&] { order.push_back(3); });
  q.run_due(kT0 + 30ms);
  q.run_due(kT0 + 1s);
  EXPECT_EQ(order, (std::vector<int>{1}));
  EXPECT_EQ(q.size(), 0u);
}

TEST(TimerQueue, CallbackCancelsARepeatingTimerRescheduledEarlierInTheBatch) {
  TimerQueue q;
  int repeats = 0;
  q.add(1, kT0 + 10ms, 10ms, [&] { ++repeats; });
  q.add(2, kT0 + 15ms, 0ms, [&] { q.cancel(1); });
  q.run_due(kT0 + 15ms);  // 1 runs and is rescheduled, then 2 cancels it
  q.run_due(kT0 + 1s);
  EXPECT_EQ(repeats, 1);
  EXPECT_EQ(q.size(), 0u);
}

TEST(TimerQueue, CancelInOneBatchDoesNotLeakIntoTheNext) {
  TimerQueue q;
  int runs = 0;
  // Cancelling an id that is not queued (here: ran earlier) while callbacks
  // run must not cancel a later timer with the same id.
  q.add(1, kT0 + 10ms, 0ms, [&] { ++runs; });
  q.add(2, kT0 + 20ms, 0ms, [&] { q.cancel(1); });
  q.run_due(kT0 + 20ms);
  q.add(1, kT0 + 30ms, 0ms, [&] { ++runs; });
  q.run_due(kT0 + 30ms);
  EXPECT_EQ(runs, 2);
}

TEST(TimerQueue, TimerAddedByACallbackRunsInALaterBatch) {
  TimerQueue q;
  std::vector<int> order;
  q.add(1, kT0 + 10ms, 0ms, [&] {
    order.push_back(1);
    q.add(2, kT0 + 10ms, 0ms, [&] { order.push_back(2); });  // already due
  });
  q.run_due(kT0 + 10ms);
  EXPECT_EQ(order, (std::vector<int>{1}));
  EXPECT_EQ(q.time_until_next(kT0 + 10ms), 0ms);
  q.run_due(kT0 + 10ms);
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
}

TEST(TimerQueue, RepeatingTimerCancelledAfterItsLastRunCanBeReAddedAndCancelled) {
  TimerQueue q;
  int runs = 0;
  q.add(1, kT0 + 10ms, 10ms, [&] { ++runs; });
  q.run_due(kT0 + 10ms);
  q.cancel(1);
  EXPECT_EQ(q.size(), 0u);
  q.run_due(kT0 + 1s);
  EXPECT_EQ(runs, 1);
}

}  // namespace
