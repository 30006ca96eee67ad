/// \file
/// UniqueFd: sole owner of one file descriptor; closes it when destroyed.
/// write_all(): all of a buffer to a descriptor, waiting where it is
/// non-blocking.
///
/// UniqueFd is move-only. It is the only place in tcpkit that calls
/// close(2), so a descriptor is closed exactly once and never leaks on an
/// early return. Not thread-safe: one owner at a time, like any value.
#pragma once

#include <chrono>
#include <string_view>

#include "tcpkit/result.h"

namespace tcpkit {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }

  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  explicit operator bool() const { return valid(); }

  /// Gives up ownership without closing.
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  /// Closes the current descriptor (if any) and takes `fd`.
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

/// Writes all of `bytes` to `fd` (a pipe, a file or a terminal as well as a
/// socket), as a program writes its output: a write that a signal cut short
/// is retried, and where the descriptor is non-blocking (another program
/// may have left a pipe or terminal that it shares so) a full one is waited
/// for until it takes more, instead of failing with EAGAIN. The wait lasts
/// at most `timeout` in all (negative: as long as it takes); running out of
/// it fails with ETIMEDOUT. The error's message names `what`
/// (e.g. "stdout"); its code is the failed write's errno, EPIPE where the
/// reader has gone (with SIGPIPE ignored; otherwise the signal ends the
/// process first).
Result<void> write_all(int fd, std::string_view bytes, std::string_view what,
                       std::chrono::milliseconds timeout = std::chrono::milliseconds(-1));

}  // namespace tcpkit
