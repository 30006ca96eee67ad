// tcpkit: the program. Picks the subcommand and hands its options to it;
// no networking here. Exit codes: 0 ok, 1 runtime failure, 2 usage error.
#include <CLI/CLI.hpp>

#include <fmt/core.h>

#include <cstdio>
#include <exception>

#include "commands.h"

namespace {

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
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tcpkit: %s\n", e.what());
    return 1;
  }
}
