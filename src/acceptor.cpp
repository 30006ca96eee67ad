#include "acceptor.h"

#include <fcntl.h>

#include <cerrno>

#include "sys.h"
#include "tcpkit/detail/channel.h"
#include "tcpkit/event_loop.h"

namespace tcpkit {
namespace {
UniqueFd open_spare() {
  return UniqueFd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
}
// At most this many accepts per wake-up, so a connection storm cannot
// starve the connections already served by the same loop.
constexpr int kMaxAcceptsPerWakeup = 64;
}  // namespace

Acceptor::Acceptor(EventLoop* loop, TcpListener listener)
    : loop_(loop),
      listener_(std::move(listener)),
      listening_on_(listener_.local_endpoint()),
      channel_(std::make_unique<Channel>(loop, listener_.fd())),
      spare_fd_(open_spare()),
      wildcard_(listening_on_.is_unspecified()) {
  channel_->set_handler<&Acceptor::handle_read>(this);
}

Acceptor::~Acceptor() {
  if (destroyed_ != nullptr) *destroyed_ = true;  // from inside handle_read()
  stop();
}

void Acceptor::listen() {
  loop_->assert_in_loop_thread();
  stopped_ = false;
  channel_->enable_reading();
}

void Acceptor::stop() {
  loop_->assert_in_loop_thread();
  stopped_ = true;
  if (backoff_timer_ != 0) loop_->cancel(backoff_timer_);
  backoff_timer_ = 0;
  channel_->remove();
}

// A callback may stop or destroy this acceptor: on_connection runs inside
// it when the server has no I/O threads (or one listener per loop), and a
// server may be stopped or destroyed from there. The flag on the stack tells
// the loop below, which then returns without touching a member.
void Acceptor::handle_read() {
  bool destroyed = false;
  destroyed_ = &destroyed;
  accept_batch(destroyed);
  if (!destroyed) destroyed_ = nullptr;
}

void Acceptor::accept_batch(const bool& destroyed) {
  for (int i = 0; i < kMaxAcceptsPerWakeup; ++i) {
    Endpoint peer;
    int fd = sys::accept(listener_.fd(), &peer, /*nonblocking=*/true, listening_on_);
    if (fd >= 0) {
      if (!on_new_connection_) {
        UniqueFd discard(fd);
        continue;
      }
      on_new_connection_(UniqueFd(fd), peer, wildcard_ ? sys::local_endpoint(fd) : listening_on_);
      if (destroyed || stopped_) return;
      continue;
    }
    if (fd == -EMFILE || fd == -ENFILE) {
      recover_from_exhaustion();
      return;
    }
    // EAGAIN: the queue is empty. ECONNABORTED and friends: that client gave
    // up before we accepted it; the next one may be fine.
    if (fd == -EAGAIN || fd == -EINTR) return;
  }
}

void Acceptor::recover_from_exhaustion() {
  if (on_exhausted_) on_exhausted_();
  if (spare_fd_) {
    spare_fd_.reset();
    int fd = sys::accept(listener_.fd(), nullptr, /*nonblocking=*/true, listening_on_);
    UniqueFd refused(fd);  // closed at once: the client sees EOF, not a hang
    spare_fd_ = open_spare();
  }
  // Back off: stop watching the listener for a moment instead of spinning on
  // an accept queue we cannot empty.
  channel_->disable_reading();
  backoff_timer_ = loop_->run_after(kExhaustedBackoff, [this] {
    backoff_timer_ = 0;
    if (!stopped_) channel_->enable_reading();
  });
}

}  // namespace tcpkit
