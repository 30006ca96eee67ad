#include "poller.h"

#include <cerrno>
#include <cstring>

#include "fatal.h"
#include "poller_epoll.h"
#include "poller_uring.h"

namespace tcpkit {
namespace {

// The ways a kernel says "no io_uring here", as opposed to "no resources
// right now": ENOSYS before 5.1 or under a seccomp filter that hides it
// (Docker's default profile), EPERM from kernel.io_uring_disabled or a
// filter, ENOMEM from RLIMIT_MEMLOCK on kernels before 5.12, which charge
// the rings to locked memory. UringPoller also reports ENOSYS for a kernel
// that has io_uring but lacks a feature it needs.
bool io_uring_unavailable(const Error& error) {
  const std::error_code& code = error.code();
  return code == std::errc::function_not_supported || code == std::errc::operation_not_permitted ||
         code == std::errc::not_enough_memory;
}

}  // namespace

Result<CreatedPoller> Poller::create(IoBackend backend) {
  Error fallback;
  if (backend == IoBackend::kUring) {
    auto uring = UringPoller::create();
    if (uring) return CreatedPoller{std::move(*uring), {}};
    if (!io_uring_unavailable(uring.error())) return uring.error();
    fallback = uring.error();
  }
  auto epoll = EpollPoller::create();
  if (!epoll) return epoll.error();
  return CreatedPoller{std::move(*epoll), std::move(fallback)};
}

void Poller::die(const char* what, int err) {
  detail::fatal("%s: %s", what, std::strerror(err));
}

}  // namespace tcpkit
