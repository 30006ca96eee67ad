#include "tcpkit/unique_fd.h"

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

}  // namespace tcpkit
