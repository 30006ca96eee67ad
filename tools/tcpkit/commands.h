// The subcommands. Each command file registers its flags into a plain option
// struct and, when selected, runs with it. Exit codes: 0 ok, 1 runtime
// failure, 2 usage error.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <vector>

namespace tcpkit::cli {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

// A command registers itself with its subcommand and the function that runs it.
struct Command {
  CLI::App* app;
  std::function<int()> run;
};

void register_commands(CLI::App& app);
int run_selected(CLI::App& app);

// One per subcommand file.
Command add_port_command(CLI::App& app);
Command add_serve_command(CLI::App& app);
Command add_bench_command(CLI::App& app);
Command add_connect_command(CLI::App& app);
Command add_relay_command(CLI::App& app);

}  // namespace tcpkit::cli
