// `tcpkit port PORT`: placeholder registration; the explanation arrives with issue 4.
#include <fmt/core.h>

#include "commands.h"

namespace tcpkit::cli {

Command add_port_command(CLI::App& app) {
  auto* sub = app.add_subcommand("port", "Explain a TCP port: who listens, connection states, service name");
  static int port = 0;
  sub->add_option("PORT", port, "port number")->required()->check(CLI::Range(0, 65535));
  return {sub, [] {
            fmt::print("port {}\n", port);
            return kExitOk;
          }};
}

}  // namespace tcpkit::cli
