// tcpkit: the program. Picks the subcommand and hands its options to it;
// no networking here. Exit codes: 0 ok, 1 runtime failure, 2 usage error.
#include <CLI/CLI.hpp>

#include <fmt/core.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <exception>

#include "commands.h"

namespace {

// A standard descriptor closed at start (`<&-`, `>&-`, `2>&-`) is the
// lowest free number, so the first socket would take it: connect then read
// its own "stdin" from the peer, or wrote its output or its diagnostics to
// it. As daemons and socat do, each closed one is opened on /dev/null
// first: a closed stdin reads as empty, closed output goes nowhere. False
// when /dev/null cannot be opened (the descriptor stays closed).
bool open_closed_standard_fds() {
  for (int fd = STDIN_FILENO; fd <= STDERR_FILENO; ++fd) {
    if (::fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
    // The lower ones are open by now, so open() returns `fd` itself.
    const int opened = ::open("/dev/null", fd == STDIN_FILENO ? O_RDONLY : O_WRONLY);
    if (opened < 0) return false;
    if (opened != fd) {
      ::dup2(opened, fd);
      ::close(opened);
    }
  }
  return true;
}

int run(int argc, char** argv) {
  CLI::App app{"tcpkit: a TCP toolkit — serve, connect, bench, relay and explain ports"};
  app.set_version_flag("-V,--version", std::string("tcpkit ") + TCPKIT_VERSION);
  app.require_subcommand(1);
  tcpkit::cli::register_commands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11 prints help/version with exit code 0 and usage errors with a
    // non-zero one; usage errors are always 2 here.
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  return tcpkit::cli::run_selected(app);
}

}  // namespace

int main(int argc, char** argv) {
  // An exception that reaches here (std::bad_alloc, say) is a runtime
  // failure with a message, not an abort.
  if (!open_closed_standard_fds()) {
    std::perror("tcpkit: cannot open /dev/null for a closed standard descriptor");
    return 1;
  }
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tcpkit: %s\n", e.what());
    return 1;
  }
}
