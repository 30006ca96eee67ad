#include "timer_queue.h"

#include <vector>

#include "tcpkit/detail/saturate.h"

namespace tcpkit {

void TimerQueue::add(uint64_t id, Clock::time_point when, Clock::duration interval, Callback cb) {
  by_deadline_.emplace(Key{when, id}, Timer{id, interval, std::move(cb)});
  by_id_.emplace(id, when);
}

bool TimerQueue::cancel(uint64_t id) {
  auto it = by_id_.find(id);
  if (it != by_id_.end()) {
    by_deadline_.erase(Key{it->second, id});
    by_id_.erase(it);
    return true;
  }
  // A timer that is running right now is neither in the maps nor gone yet:
  // remember the cancel so a repeating timer is not scheduled again.
  if (running_) cancelled_while_running_.insert(id);
  return false;
}

std::chrono::microseconds TimerQueue::time_until_next(Clock::time_point now) const {
  if (by_deadline_.empty()) return std::chrono::microseconds(-1);
  auto left = by_deadline_.begin()->first.first - now;
  if (left <= Clock::duration::zero()) return std::chrono::microseconds(0);
  // Round up: waking a little late is harmless, waking early just spins.
  return std::chrono::ceil<std::chrono::microseconds>(left);
}

void TimerQueue::run_due(Clock::time_point now) {
  std::vector<std::pair<Key, Timer>> due;
  while (!by_deadline_.empty() && by_deadline_.begin()->first.first <= now) {
    auto node = by_deadline_.extract(by_deadline_.begin());
    by_id_.erase(node.key().second);
    due.emplace_back(node.key(), std::move(node.mapped()));
  }
  // Most iterations of a busy loop find nothing due: they touch nothing more.
  if (due.empty()) return;
  running_ = true;
  for (auto& [key, timer] : due) {
    // An earlier callback of this batch may have cancelled this one.
    if (cancelled_while_running_.count(timer.id)) continue;
    timer.cb();
    if (timer.interval == Clock::duration::zero() || cancelled_while_running_.count(timer.id))
      continue;
    // Schedule from the planned deadline so a repeating timer does not drift,
    // but never into the past after a long stall.
    auto next = detail::saturating_deadline(key.first, timer.interval);
    if (next <= now) next = detail::saturating_deadline(now, timer.interval);
    by_deadline_.emplace(Key{next, timer.id}, std::move(timer));
    by_id_.emplace(key.second, next);
  }
  running_ = false;
  cancelled_while_running_.clear();
}

}  // namespace tcpkit
