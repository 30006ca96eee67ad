// EpollPoller: the epoll backend (poller.h). Internal, loop thread only.
#pragma once

#include <sys/epoll.h>

#include "poller.h"
#include "tcpkit/unique_fd.h"

namespace tcpkit {

class EpollPoller final : public Poller {
 public:
  // Fails when the kernel refuses an epoll instance (EMFILE, ENOMEM).
  static Result<std::unique_ptr<Poller>> create();
  explicit EpollPoller(UniqueFd epoll_fd);

  IoBackend backend() const override { return IoBackend::kEpoll; }
  void poll(std::chrono::microseconds timeout, Ready* ready) override;
  void update(Channel* channel) override;
  void remove(Channel* channel) override;

 private:
  void control(int op, Channel* channel);
  // One wait; the number of events, or -errno.
  int wait(std::chrono::microseconds timeout);

  UniqueFd epoll_fd_;
  std::vector<epoll_event> events_;
  bool fine_waits_ = true;  ///< epoll_pwait2 works here (Linux 5.11, not forbidden)
};

}  // namespace tcpkit
