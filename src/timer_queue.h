// TimerQueue: the timers of one EventLoop, ordered by deadline.
//
// Internal; used only in its loop's thread. There is no timerfd: the loop
// sleeps in epoll_wait no longer than until the earliest deadline (as libuv
// and Redis's ae do), then runs what is due. Cancelling is by id and is safe
// from inside any timer callback, the timer's own included.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <unordered_map>
#include <unordered_set>

namespace tcpkit {

class TimerQueue {
 public:
  using Clock = std::chrono::steady_clock;
  using Callback = std::function<void()>;

  // `interval` zero: runs once. Ids come from the caller (the loop hands
  // them out, also to other threads) and must be unique.
  void add(uint64_t id, Clock::time_point when, Clock::duration interval, Callback cb);
  // True when a queued timer was removed; false for an id that is not
  // queued (ran already, is running now, or was never added).
  bool cancel(uint64_t id);
  // How long the loop may sleep: until the earliest deadline, or -1 (no timers).
  std::chrono::microseconds time_until_next(Clock::time_point now) const;
  // Runs every timer due at `now`; repeating ones are scheduled again.
  void run_due(Clock::time_point now);
  size_t size() const { return by_id_.size(); }

 private:
  struct Timer {
    uint64_t id;
    Clock::duration interval;
    Callback cb;
  };
  using Key = std::pair<Clock::time_point, uint64_t>;

  std::map<Key, Timer> by_deadline_;
  std::unordered_map<uint64_t, Clock::time_point> by_id_;
  std::unordered_set<uint64_t> cancelled_while_running_;
  bool running_ = false;
};

}  // namespace tcpkit
