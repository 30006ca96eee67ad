/// \file
/// IoBackend: which kernel interface an EventLoop waits on for readiness.
///
/// A plain value; any thread. The backend is chosen when a loop is created
/// (EventLoop::create(IoBackend)) and never changes; everything above the
/// loop (channels, connections, servers) works the same on both. io_uring may
/// be unavailable (a kernel before 5.11, a seccomp filter, the sysctl
/// kernel.io_uring_disabled): a loop asked for it then runs on epoll, and
/// says so through EventLoop::backend() and EventLoop::backend_fallback().
#pragma once

#include <optional>
#include <string_view>

namespace tcpkit {

enum class IoBackend : unsigned char {
  /// The environment's choice: TCPKIT_IO_BACKEND=uring or =epoll, else epoll.
  /// Lets a whole program, or a whole test suite, switch without new flags.
  kDefault,
  kEpoll,
  kUring,
};

/// "epoll", "uring", or "default".
const char* to_string(IoBackend backend);
/// "epoll" and "uring" ("io_uring" too); nullopt for anything else.
std::optional<IoBackend> parse_io_backend(std::string_view name);
/// kDefault made concrete: reads TCPKIT_IO_BACKEND (an unknown value means
/// epoll). Other values are returned unchanged.
IoBackend resolve_io_backend(IoBackend backend);

}  // namespace tcpkit
