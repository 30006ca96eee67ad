#include "tcpkit/unique_fd.h"

#include <sys/syscall.h>
#include <unistd.h>

namespace tcpkit {

void UniqueFd::reset(int fd) {
  // close() is not retried on EINTR: on Linux the descriptor is released
  // even when close reports EINTR, and retrying could close a reused number.
  // Through syscall(), not libc's close(): that one is a thread-cancellation
  // point, which costs every connection's close a cancellation check (see
  // sys.cpp), and tcpkit cancels no threads.
  if (fd_ >= 0) ::syscall(SYS_close, fd_);
  fd_ = fd;
}

}  // namespace tcpkit
