#include "tcpkit/unique_fd.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>

#include "sys.h"

namespace tcpkit {

void UniqueFd::reset(int fd) {
  // close() is not retried on EINTR: on Linux the descriptor is released
  // even when close reports EINTR, and retrying could close a reused number.
  // sys::close(): not libc's close(), a thread-cancellation point, which
  // costs every connection's close a cancellation check (see sys.cpp).
  if (fd_ >= 0) sys::close(fd_);
  fd_ = fd;
}

Result<void> write_all(int fd, std::string_view bytes, std::string_view what,
                       std::chrono::milliseconds timeout) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + timeout;
  while (!bytes.empty()) {
    ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n >= 0) {
      bytes.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      return Error::from_errno(errno, "write to " + std::string(what));
    // Full, not failed: wait until it takes more (within what is left of the
    // timeout), then write again.
    auto left = std::chrono::milliseconds(-1);
    if (timeout.count() >= 0) {
      left =
          std::max(std::chrono::milliseconds(0),
                   std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
    }
    int ready = sys::poll_one(fd, POLLOUT, left);
    if (ready == 0) return Error::from_errno(ETIMEDOUT, "write to " + std::string(what));
    if (ready < 0) return Error::from_errno(-ready, "write to " + std::string(what));
  }
  return {};
}

}  // namespace tcpkit
