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
  void poll(std::chrono::milliseconds timeout, Ready* ready) override;
  void update(Channel* channel) override;
  void remove(Channel* channel) override;

 private:
  void control(int op, Channel* channel);

  UniqueFd epoll_fd_;
  std::vector<epoll_event> events_;
};

}  // namespace tcpkit
