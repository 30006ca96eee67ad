#include "fatal.h"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>

namespace tcpkit::detail {

void fatal(const char* format, ...) {
  char text[512];
  std::va_list args;
  va_start(args, format);
  std::vsnprintf(text, sizeof text, format, args);
  va_end(args);
  // stderr is unbuffered: one fprintf is one write.
  std::fprintf(stderr, "tcpkit: %s\n", text);
  std::abort();
}

}  // namespace tcpkit::detail
