// detail::Task: the callable an EventLoop queues. What it runs, where it
// keeps what the callable captured, and when it lets that go.
#include "tcpkit/detail/task.h"

#include <gtest/gtest.h>

#include <array>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <system_error>
#include <utility>

#include "tcpkit/event_loop.h"
#include "test_util.h"

using tcpkit::detail::Task;
using tcpkit::test::kWait;
using tcpkit::test::LoopThread;

namespace {

// A callable that counts its moves; `noexcept(Nothrow)` on its move.
template <bool Nothrow>
struct CountsMoves {
  int* moves;
  int* calls;
  CountsMoves(int* m, int* c) : moves(m), calls(c) {}
  CountsMoves(CountsMoves&& other) noexcept(Nothrow) : moves(other.moves), calls(other.calls) {
    ++*moves;
  }
  CountsMoves(const CountsMoves&) = delete;
  void operator()() { ++*calls; }
};

}  // namespace

TEST(Task, WhatAQueuedCloseOrSendCapturesIsKeptInline) {
  auto conn = std::make_shared<int>(1);
  std::string data = "bytes";
  std::error_code reason;
  auto close = [conn, reason] { (void)reason; };
  auto send = [conn, data] { (void)data; };
  EXPECT_TRUE(Task::kKeptInline<decltype(close)>);
  EXPECT_TRUE(Task::kKeptInline<decltype(send)>);
  EXPECT_TRUE(Task::kKeptInline<std::function<void()>>);
  std::array<char, Task::kInline + 1> big{};
  auto too_big = [big] { (void)big; };
  EXPECT_FALSE(Task::kKeptInline<decltype(too_big)>);
  EXPECT_FALSE(Task::kKeptInline<CountsMoves<false>>);  // a move that may throw: on the heap
  EXPECT_TRUE(Task::kKeptInline<CountsMoves<true>>);
}

TEST(Task, RunsWhatItHoldsAndAMoveTakesIt) {
  int moves = 0;
  int calls = 0;
  Task a(CountsMoves<true>(&moves, &calls));
  ASSERT_TRUE(a);
  a();
  EXPECT_EQ(calls, 1);
  const int moves_before = moves;
  Task b(std::move(a));
  EXPECT_FALSE(a);  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
  ASSERT_TRUE(b);
  EXPECT_EQ(moves, moves_before + 1) << "an inline callable moves with its Task";
  b();
  EXPECT_EQ(calls, 2);
  Task c;
  c = std::move(b);
  c();
  EXPECT_EQ(calls, 3);
  EXPECT_FALSE(b);  // NOLINT(bugprone-use-after-move)
}

TEST(Task, ACallableOnTheHeapStaysWhereItIsWhenTheTaskMoves) {
  int moves = 0;
  int calls = 0;
  Task a(CountsMoves<false>(&moves, &calls));
  const int moves_after_construction = moves;
  Task b(std::move(a));
  Task c;
  c = std::move(b);
  EXPECT_EQ(moves, moves_after_construction);
  c();
  EXPECT_EQ(calls, 1);
}

TEST(Task, WhatItCapturedIsReleasedWithItInlineOrNot) {
  auto held = std::make_shared<int>(7);
  std::weak_ptr<int> watch = held;
  std::array<char, Task::kInline> big{};
  {
    Task small([held] {});
    Task large([held, big] { (void)big; });
    held.reset();
    EXPECT_FALSE(watch.expired());
    small.reset();
    EXPECT_FALSE(small);
    EXPECT_FALSE(watch.expired()) << "the large one still holds it";
  }
  EXPECT_TRUE(watch.expired());
  // An assignment lets go of what the Task held before.
  auto first = std::make_shared<int>(1);
  std::weak_ptr<int> first_watch = first;
  Task t([first = std::move(first)] {});
  t = Task([] {});
  EXPECT_TRUE(first_watch.expired());
}

TEST(Task, ALoopRunsACallableThatCanOnlyBeMoved) {
  LoopThread t;
  auto owned = std::make_unique<int>(41);
  std::promise<int> seen;
  t.loop()->queue_in_loop([owned = std::move(owned), &seen] { seen.set_value(*owned + 1); });
  auto result = seen.get_future();
  ASSERT_EQ(result.wait_for(kWait), std::future_status::ready);
  EXPECT_EQ(result.get(), 42);
}
