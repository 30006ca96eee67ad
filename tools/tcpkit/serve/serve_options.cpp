#include "serve/serve_options.h"

namespace tcpkit::cli {

const char* to_string(ServeMode mode) {
  switch (mode) {
    case ServeMode::ack:
      return "ack";
    case ServeMode::echo:
      return "echo";
    case ServeMode::discard:
      return "discard";
    case ServeMode::chat:
      return "chat";
  }
  return "?";
}

const char* to_string(Framing framing) {
  switch (framing) {
    case Framing::raw:
      return "raw";
    case Framing::line:
      return "line";
    case Framing::length:
      return "length";
  }
  return "?";
}

}  // namespace tcpkit::cli
