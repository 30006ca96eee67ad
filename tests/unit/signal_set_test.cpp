// SignalSet: signals arrive in the loop as events, through a signalfd.
#include "tcpkit/signal_set.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "tcpkit/event_loop.h"
#include "tcpkit/event_loop_thread.h"

using namespace std::chrono_literals;
using namespace tcpkit;

namespace {

// Takes a pending `signo` off the process, so that a test leaves none behind.
bool take_pending(int signo) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, signo);
  const timespec none{0, 0};
  return sigtimedwait(&set, nullptr, &none) == signo;
}

class SignalSetTest : public ::testing::Test {
 protected:
  void SetUp() override { SignalSet::block({SIGUSR1, SIGUSR2}); }
  void TearDown() override {
    take_pending(SIGUSR1);
    take_pending(SIGUSR2);
  }
};

TEST_F(SignalSetTest, ASignalSentToTheProcessRunsTheCallbackInTheLoop) {
  EventLoop loop;
  std::vector<int> got;
  std::thread::id ran_on;
  auto set = SignalSet::create(&loop, {SIGUSR1}, [&](int signo) {
    got.push_back(signo);
    ran_on = std::this_thread::get_id();
    loop.quit();
  });
  ASSERT_TRUE(set) << set.error().message();
  // From another thread, as a signal from outside comes: the loop sleeps.
  std::thread sender([] {
    std::this_thread::sleep_for(20ms);
    kill(getpid(), SIGUSR1);
  });
  loop.run_after(5s, [&] { loop.quit(); });
  loop.run();
  sender.join();
  EXPECT_EQ(got, std::vector<int>{SIGUSR1});
  EXPECT_EQ(ran_on, std::this_thread::get_id());
}

TEST_F(SignalSetTest, EachSignalOfTheSetIsDeliveredOnceAndOthersAreLeftPending) {
  EventLoop loop;
  std::vector<int> got;
  auto set = SignalSet::create(&loop, {SIGUSR1}, [&](int signo) { got.push_back(signo); });
  ASSERT_TRUE(set) << set.error().message();
  kill(getpid(), SIGUSR2);  // blocked, but not in the set
  kill(getpid(), SIGUSR1);
  loop.run_after(100ms, [&] { loop.quit(); });
  loop.run();
  EXPECT_EQ(got, std::vector<int>{SIGUSR1});
  EXPECT_TRUE(take_pending(SIGUSR2)) << "a signal the set does not watch was taken";
}

TEST_F(SignalSetTest, TwoSignalsPendingAtOnceBothArrive) {
  EventLoop loop;
  std::vector<int> got;
  auto set = SignalSet::create(&loop, {SIGUSR1, SIGUSR2}, [&](int signo) {
    got.push_back(signo);
    if (got.size() == 2) loop.quit();
  });
  ASSERT_TRUE(set) << set.error().message();
  kill(getpid(), SIGUSR2);
  kill(getpid(), SIGUSR1);
  loop.run_after(5s, [&] { loop.quit(); });
  loop.run();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_NE(got[0], got[1]);
}

// The second signal, pending with the first, is not read once the set is
// gone: it stays pending for whoever watches it next.
TEST_F(SignalSetTest, TheCallbackMayDestroyItsSetAndLeavesTheRestPending) {
  EventLoop loop;
  std::unique_ptr<SignalSet> set;
  std::vector<int> got;
  auto created = SignalSet::create(&loop, {SIGUSR1, SIGUSR2}, [&](int signo) {
    got.push_back(signo);
    set.reset();
    loop.quit();
  });
  ASSERT_TRUE(created) << created.error().message();
  set = std::move(*created);
  kill(getpid(), SIGUSR1);
  kill(getpid(), SIGUSR2);
  loop.run_after(5s, [&] { loop.quit(); });
  loop.run();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(set, nullptr);
  EXPECT_TRUE(take_pending(got[0] == SIGUSR1 ? SIGUSR2 : SIGUSR1))
      << "the signal after the one that ended the set was taken with it";
}

// As asio's signal_set: every set that watches a signal hears each
// arrival, and a set that watches others hears nothing of it.
TEST_F(SignalSetTest, EverySetThatWatchesASignalHearsEachArrival) {
  EventLoop loop;
  int first = 0;
  int second = 0;
  int other = 0;
  auto a = SignalSet::create(&loop, {SIGUSR1}, [&](int) { ++first; });
  auto b = SignalSet::create(&loop, {SIGUSR1, SIGUSR2}, [&](int signo) {
    if (signo == SIGUSR1) ++second;
  });
  auto c = SignalSet::create(&loop, {SIGUSR2}, [&](int) { ++other; });
  ASSERT_TRUE(a && b && c);
  kill(getpid(), SIGUSR1);
  loop.run_after(100ms, [&] { loop.quit(); });
  loop.run();
  EXPECT_EQ(first, 1);
  EXPECT_EQ(second, 1);
  EXPECT_EQ(other, 0);
  // And the next arrival, once more each.
  kill(getpid(), SIGUSR1);
  loop.run_after(100ms, [&] { loop.quit(); });
  loop.run();
  EXPECT_EQ(first, 2);
  EXPECT_EQ(second, 2);
}

TEST_F(SignalSetTest, SetsOnTwoLoopsHearTheSignalEachInItsOwnThread) {
  EventLoop loop;
  EventLoopThread thread;
  ASSERT_TRUE(thread.start());
  EventLoop* other_loop = thread.loop();
  std::atomic<int> heard_there{0};
  std::thread::id there;
  std::unique_ptr<SignalSet> remote;
  other_loop->run_in_loop_and_wait([&] {
    auto created = SignalSet::create(other_loop, {SIGUSR1}, [&](int) {
      there = std::this_thread::get_id();
      heard_there.fetch_add(1);
    });
    ASSERT_TRUE(created) << created.error().message();
    remote = std::move(*created);
  });
  int heard_here = 0;
  auto local = SignalSet::create(&loop, {SIGUSR1}, [&](int) { ++heard_here; });
  ASSERT_TRUE(local);
  kill(getpid(), SIGUSR1);
  loop.run_after(200ms, [&] { loop.quit(); });
  loop.run();
  other_loop->run_in_loop_and_wait([&] {
    EXPECT_EQ(heard_there.load(), 1);
    EXPECT_EQ(there, std::this_thread::get_id());
    remote.reset();
  });
  EXPECT_EQ(heard_here, 1);
  thread.stop();
}

// Whichever set reads the arrival runs first and destroys the other: the
// arrival queued for that one is not heard.
TEST_F(SignalSetTest, ASetDestroyedBeforeAnArrivalQueuedForItDoesNotHearIt) {
  EventLoop loop;
  std::unique_ptr<SignalSet> sets[2];
  int heard[2] = {0, 0};
  for (int i = 0; i < 2; ++i) {
    auto created = SignalSet::create(&loop, {SIGUSR1}, [&, i](int) {
      ++heard[i];
      sets[1 - i].reset();
    });
    ASSERT_TRUE(created) << created.error().message();
    sets[i] = std::move(*created);
  }
  kill(getpid(), SIGUSR1);
  loop.run_after(100ms, [&] { loop.quit(); });
  loop.run();
  EXPECT_EQ(heard[0] + heard[1], 1) << heard[0] << " and " << heard[1];
}

// The callback is one callable throughout, not a copy per arrival: what it
// keeps lasts from one signal to the next.
TEST_F(SignalSetTest, TheCallbackKeepsItsOwnStateFromOneArrivalToTheNext) {
  EventLoop loop;
  std::vector<int> counts;
  auto a = SignalSet::create(&loop, {SIGUSR1}, [&, n = 0](int) mutable { counts.push_back(++n); });
  auto b = SignalSet::create(&loop, {SIGUSR1}, [&, n = 0](int) mutable { counts.push_back(++n); });
  ASSERT_TRUE(a && b);
  for (int i = 0; i < 2; ++i) {
    kill(getpid(), SIGUSR1);
    loop.run_after(100ms, [&] { loop.quit(); });
    loop.run();
  }
  EXPECT_EQ(counts, (std::vector<int>{1, 1, 2, 2}));
}

std::atomic<int> handled{0};

TEST_F(SignalSetTest, UnblockHandsAPendingSignalToItsDisposition) {
  struct sigaction action {};
  action.sa_handler = [](int signo) { handled.store(signo); };
  struct sigaction old {};
  sigaction(SIGUSR2, &action, &old);
  kill(getpid(), SIGUSR2);
  EXPECT_EQ(handled.load(), 0);  // blocked: pending
  SignalSet::unblock({SIGUSR2});
  EXPECT_EQ(handled.load(), SIGUSR2);
  SignalSet::block({SIGUSR2});
  sigaction(SIGUSR2, &old, nullptr);
}

}  // namespace
