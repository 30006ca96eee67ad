#include "poller_epoll.h"

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <ctime>
#include <limits>

#include "sys.h"
#include "tcpkit/detail/channel.h"

namespace tcpkit {
namespace {

uint32_t to_epoll(unsigned interest) {
  uint32_t ev = 0;
  if (interest & event::kReadable) ev |= EPOLLIN | EPOLLPRI | EPOLLRDHUP;
  if (interest & event::kWritable) ev |= EPOLLOUT;
  return ev;
}

// epoll always reports EPOLLERR and EPOLLHUP, wanted or not. A peer's FIN is
// EPOLLIN|EPOLLRDHUP (read() then returns 0); EPOLLHUP alone means both
// directions are finished, e.g. after a reset.
unsigned from_epoll(uint32_t ev) {
  unsigned mask = 0;
  if (ev & (EPOLLIN | EPOLLPRI | EPOLLRDHUP)) mask |= event::kReadable;
  if (ev & EPOLLOUT) mask |= event::kWritable;
  if (ev & EPOLLHUP) mask |= event::kHangup;
  if (ev & EPOLLERR) mask |= event::kError;
  return mask;
}

}  // namespace

Result<std::unique_ptr<Poller>> EpollPoller::create() {
  auto fd = sys::epoll_create();
  if (!fd) return fd.error();
  return std::unique_ptr<Poller>(std::make_unique<EpollPoller>(std::move(*fd)));
}

EpollPoller::EpollPoller(UniqueFd epoll_fd) : epoll_fd_(std::move(epoll_fd)), events_(64) {}

void EpollPoller::poll(std::chrono::microseconds timeout, Ready* ready) {
  ready->clear();
  int n = wait(timeout);
  if (n < 0) {
    if (n == -EINTR) return;
    die("epoll_wait", -n);
  }
  for (int i = 0; i < n; ++i) {
    ready->emplace_back(static_cast<Channel*>(events_[i].data.ptr), from_epoll(events_[i].events));
  }
  // A full batch hints at more ready descriptors: take more next time.
  if (static_cast<size_t>(n) == events_.size()) events_.resize(events_.size() * 2);
}

// epoll_wait counts whole milliseconds. A short wait with a finer deadline
// (a timer 300 us away) goes through epoll_pwait2, which takes a timespec;
// where the kernel lacks it (before 5.11) or a filter forbids it, the wait
// is rounded up to the next millisecond, as it always was. Longer waits
// (a server's idle timeouts) keep epoll_wait: a millisecond late is
// nothing to them.
int EpollPoller::wait(std::chrono::microseconds timeout) {
  constexpr std::chrono::microseconds kFineBelow = std::chrono::milliseconds(10);
  const int max_events = static_cast<int>(events_.size());
  const auto us = timeout.count();
  if (us > 0 && timeout < kFineBelow && us % 1000 != 0 && fine_waits_) {
    const timespec ts{static_cast<time_t>(us / 1'000'000),
                      static_cast<long>(us % 1'000'000) * 1000};
    const int n = sys::epoll_pwait2(epoll_fd_.get(), events_.data(), max_events, &ts);
    if (n != -ENOSYS && n != -EPERM) return n;
    fine_waits_ = false;
  }
  constexpr std::chrono::milliseconds::rep kLongest = std::numeric_limits<int>::max();
  const auto ms =
      us < 0 ? -1
             : std::min(std::chrono::ceil<std::chrono::milliseconds>(timeout).count(), kLongest);
  return sys::epoll_wait(epoll_fd_.get(), events_.data(), max_events, static_cast<int>(ms));
}

void EpollPoller::update(Channel* channel) {
  if (!channel->registered()) {
    if (channel->interest() == 0) return;
    control(EPOLL_CTL_ADD, channel);
    channel->set_registered(true);
    ++count_;
    return;
  }
  control(EPOLL_CTL_MOD, channel);
}

void EpollPoller::remove(Channel* channel) {
  if (!channel->registered()) return;
  control(EPOLL_CTL_DEL, channel);
  channel->set_registered(false);
  --count_;
}

void EpollPoller::control(int op, Channel* channel) {
  epoll_event ev{};
  ev.events = to_epoll(channel->interest());
  ev.data.ptr = channel;
  if (::epoll_ctl(epoll_fd_.get(), op, channel->fd(), &ev) < 0) {
    die(op == EPOLL_CTL_ADD   ? "epoll_ctl ADD"
        : op == EPOLL_CTL_MOD ? "epoll_ctl MOD"
                              : "epoll_ctl DEL",
        sys::last_errno());
  }
}

}  // namespace tcpkit
