#include "commands.h"

namespace tcpkit::cli {
namespace {
std::vector<Command>& registry() {
  static std::vector<Command> commands;
  return commands;
}
}  // namespace

void register_commands(CLI::App& app) {
  registry().push_back(add_serve_command(app));
  registry().push_back(add_connect_command(app));
  registry().push_back(add_bench_command(app));
  registry().push_back(add_relay_command(app));
  registry().push_back(add_port_command(app));
}

int run_selected(CLI::App& app) {
  (void)app;
  for (auto& c : registry()) {
    if (c.app->parsed()) return c.run();
  }
  return kExitUsage;
}

}  // namespace tcpkit::cli
