// Poller: the epoll backend of one EventLoop.
//
// Internal; owned by its EventLoop and used only in that loop's thread. It is
// the one place where epoll's event bits are translated into tcpkit's small
// event mask (channel.h), as Redis's ae does for each of its backends.
#pragma once

#include <sys/epoll.h>

#include <chrono>
#include <utility>
#include <vector>

#include <memory>

#include "tcpkit/result.h"
#include "tcpkit/unique_fd.h"

namespace tcpkit {

class Channel;

class Poller {
 public:
  // A channel with its translated event mask.
  using Ready = std::vector<std::pair<Channel*, unsigned>>;

  // Fails when the kernel refuses an epoll instance (EMFILE, ENOMEM).
  static Result<std::unique_ptr<Poller>> create();
  explicit Poller(UniqueFd epoll_fd);
  // Waits up to `timeout` (negative: no limit) and fills `ready`.
  void poll(std::chrono::milliseconds timeout, Ready* ready);
  void update(Channel* channel);
  void remove(Channel* channel);
  size_t channel_count() const { return count_; }

 private:
  void control(int op, Channel* channel);

  UniqueFd epoll_fd_;
  std::vector<epoll_event> events_;
  size_t count_ = 0;
};

}  // namespace tcpkit
