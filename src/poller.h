// Poller: the readiness backend of one EventLoop, epoll or io_uring.
//
// Internal; owned by its EventLoop and used only in that loop's thread. Each
// implementation is the one place where its kernel's event bits are
// translated into tcpkit's small event mask (channel.h), as Redis's ae does
// for each of its backends. ae picks its backend at compile time; tcpkit
// picks at run time (io_uring may be forbidden where the program runs), so
// this is an interface: one virtual call per loop iteration and per
// interest change, next to a system call each.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "tcpkit/io_backend.h"
#include "tcpkit/result.h"

namespace tcpkit {

class Channel;
class Poller;

// What Poller::create() made, and why it is not what was asked for, if it is not.
struct CreatedPoller {
  std::unique_ptr<Poller> poller;
  Error fallback;  // io_uring's setup error when epoll stands in; empty code otherwise
};

class Poller {
 public:
  // A channel with its translated event mask. A channel removed while the
  // list is dispatched is nulled out by the loop (EventLoop::remove_channel).
  using Ready = std::vector<std::pair<Channel*, unsigned>>;

  // `backend` is concrete (resolve_io_backend()). io_uring falls back to
  // epoll when the kernel lacks or forbids it (EPERM, ENOSYS, ENOMEM, see
  // poller.cpp); other failures (EMFILE) are errors, as for epoll.
  static Result<CreatedPoller> create(IoBackend backend);

  virtual ~Poller() = default;
  virtual IoBackend backend() const = 0;
  // Waits up to `timeout` (negative: no limit) and fills `ready`. The
  // timeout is as fine as a timer's deadline: a loop whose next timer is
  // 200 us away does not sleep a whole millisecond.
  virtual void poll(std::chrono::microseconds timeout, Ready* ready) = 0;
  // Registers the channel, changes its interest, or removes it. After
  // remove() no event of this registration reaches the channel, and the
  // kernel holds no reference to its descriptor: the owner may close it.
  virtual void update(Channel* channel) = 0;
  virtual void remove(Channel* channel) = 0;
  // A registered channel's receives() changed. A backend that reads for
  // its channels switches between reading and reporting readiness; one
  // that only reports readiness (epoll) has nothing to change, and makes no
  // system call for it.
  virtual void receives_changed(Channel* /*channel*/) {}
  size_t channel_count() const { return count_; }
  // A kData event's bytes (event::detail(mask) names the buffer), valid
  // until release(); each kData event's buffer is released once, after its
  // channel was told, or instead of telling it. Only backends that receive.
  virtual std::string_view received(unsigned /*buffer*/) const { return {}; }
  virtual void release(unsigned /*buffer*/) {}
  // Takes all `len` bytes of a registered channel's output, to be sent
  // with the next wait (copied: `data` may go at once), or none: returns
  // `len` or 0. None where it cannot: epoll, no free buffer, more than
  // event::kSendMax for a new send or than the room left in the channel's
  // buffer, an earlier send of the channel's still on its way. Taken bytes
  // are reported as kSent events as they leave, or as one kFailed with the
  // send's errno. What a channel removed has handed over is still sent, as
  // a send() before close() would have; what the socket does not take at
  // once then is dropped.
  virtual size_t send(Channel* /*channel*/, const char* /*data*/, size_t /*len*/) { return 0; }
  // Gives back what the channel handed over and is not on its way yet (its
  // buffer waiting for the next wait), no longer to be sent or reported:
  // the channel sends it itself, ahead of what it writes next. Valid until
  // the next send(); empty where nothing waits.
  virtual std::string_view take_back(Channel* /*channel*/) { return {}; }

 protected:
  // A backend call that cannot fail in a correct program failed: say which,
  // and abort (as Redis's ae panics on a failed epoll_wait).
  [[noreturn]] static void die(const char* what, int err);

  size_t count_ = 0;
};

}  // namespace tcpkit
