#include "relay/relay_chaos.h"

#include <fmt/core.h>

#include <fstream>
#include <sstream>

#include "commands.h"
#include "common/cli_common.h"
#include "relay/chaos_registry.h"
#include "relay/relay_api.h"
#include "tcpkit/endpoint.h"
#include "tcpkit/event_loop.h"

namespace tcpkit::cli {
namespace {

constexpr size_t kMaxConfigBytes = size_t{1024} * 1024;

// The proxies of a toxiproxy -config file (a JSON list), or why not.
Result<nlohmann::json> read_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return Error(std::make_error_code(std::errc::no_such_file_or_directory), "--config " + path);
  std::string text(kMaxConfigBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > kMaxConfigBytes)
    return Error(std::make_error_code(std::errc::file_too_large),
                 "--config " + path + ": over 1 MiB");
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_array())
    return Error(
        std::make_error_code(std::errc::invalid_argument),
        "--config " + path +
            ": not a JSON list of proxies ([{\"name\": ..., \"listen\": ..., \"upstream\": ...}])");
  return j;
}

}  // namespace

int run_chaos_relay(RelayOptions base, const ChaosFlags& flags) {
  block_stop_signals();
  auto main_loop = EventLoop::create(flags.io_backend);
  if (!main_loop) {
    fmt::print(stderr, "tcpkit relay: cannot start: {}\n", main_loop.error().message());
    return kExitFailure;
  }
  report_io_backend_fallback("relay", **main_loop);
  EventLoop& loop = **main_loop;
  // What the API's proxies share: not the flags' addresses, nor their
  // faults, which are the flags proxy's own (docs/chaos.md).
  RelayOptions shared = base;
  shared.listen.clear();
  shared.upstream.clear();
  shared.faults = {};
  ChaosRegistry registry(&loop, shared);
  if (!flags.listen.empty()) {
    if (auto r = registry.add_flags_proxy("relay", std::move(base), flags.listen); !r) {
      fmt::print(stderr, "tcpkit relay: cannot listen: {}\n", r.error().context());
      return kExitFailure;
    }
  }
  if (!flags.config.empty()) {
    auto config = read_config(flags.config);
    auto loaded = config ? registry.populate(*config) : Result<nlohmann::json>(config.error());
    if (!loaded) {
      const Error& e = loaded.error();
      fmt::print(stderr, "tcpkit relay: {}\n", e.context().empty() ? e.message() : e.context());
      return kExitFailure;
    }
  }
  RelayApiServer api(&loop, registry);
  if (!flags.api.empty()) {
    auto split = Endpoint::split_host_port(flags.api);
    auto address = split ? Endpoint::resolve(split->first, split->second)
                         : Result<std::vector<Endpoint>>(split.error());
    if (!address) {
      fmt::print(stderr, "tcpkit relay: --api '{}': {} (give HOST:PORT, e.g. 127.0.0.1:8474)\n",
                 flags.api, address.error().message());
      return kExitUsage;
    }
    if (auto r = api.listen(address->front()); !r) {
      fmt::print(stderr, "tcpkit relay: --api: {}\n",
                 explain_bind_error(r.error(), split->second, "another port for --api",
                                    "--api 127.0.0.1:8475"));
      return kExitFailure;
    }
    if (auto r = api.start(); !r) {
      fmt::print(stderr, "tcpkit relay: cannot start the API: {}\n", r.error().message());
      return kExitFailure;
    }
    fmt::print("chaos API on http://{}\n", api.listen_endpoints().front().to_string());
    std::fflush(stdout);
  }
  bool stopping = false;
  watch_stop_signals([&] {
    loop.run_in_loop([&] {
      if (stopping) return;
      stopping = true;
      api.stop([] {});
      registry.stop_all([&loop] { loop.quit(); });
    });
  });
  loop.run();
  return kExitOk;
}

}  // namespace tcpkit::cli
