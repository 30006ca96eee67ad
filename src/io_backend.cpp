#include "tcpkit/io_backend.h"

#include <cstdlib>

namespace tcpkit {

const char* to_string(IoBackend backend) {
  switch (backend) {
    case IoBackend::kEpoll:
      return "epoll";
    case IoBackend::kUring:
      return "uring";
    case IoBackend::kDefault:
      break;
  }
  return "default";
}

std::optional<IoBackend> parse_io_backend(std::string_view name) {
  if (name == "epoll") return IoBackend::kEpoll;
  if (name == "uring" || name == "io_uring") return IoBackend::kUring;
  return std::nullopt;
}

IoBackend resolve_io_backend(IoBackend backend) {
  if (backend != IoBackend::kDefault) return backend;
  // getenv() is read on each loop's creation, not cached: a test may set the
  // variable for one loop. Loops are created rarely.
  const char* name = std::getenv("TCPKIT_IO_BACKEND");
  if (name == nullptr) return IoBackend::kEpoll;
  return parse_io_backend(name).value_or(IoBackend::kEpoll);
}

}  // namespace tcpkit
