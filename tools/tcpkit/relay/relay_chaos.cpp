#include "relay/relay_chaos.h"

#include <fmt/core.h>

#include <cerrno>
#include <cstring>
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
// The proxy that --listen/--to make.
constexpr const char* kFlagsProxy = "relay";

// The proxies of a toxiproxy -config file (a JSON list), or why not; the
// caller names the file before the message.
Result<nlohmann::json> read_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno != 0 ? errno : ENOENT;
    return Error(std::error_code(err, std::generic_category()),
                 fmt::format("cannot read it ({})", std::strerror(err)));
  }
  std::string text(kMaxConfigBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > kMaxConfigBytes)
    return Error(std::make_error_code(std::errc::file_too_large), "over 1 MiB");
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_array())
    return Error(std::make_error_code(std::errc::invalid_argument),
                 "not a JSON list of proxies ([{\"name\": ..., \"listen\": ..., \"upstream\": "
                 "...}])");
  return j;
}

// --listen/--to make the proxy `name`: a config entry of that name would
// replace it without a word.
Result<void> check_no_clash(const nlohmann::json& config, const std::string& name) {
  for (size_t i = 0; i < config.size(); ++i) {
    const auto& entry = config[i];
    auto it = entry.is_object() ? entry.find("name") : entry.end();
    if (it == entry.end() || *it != name) continue;
    return Error(std::make_error_code(std::errc::invalid_argument),
                 fmt::format("proxy {} is named \"{}\", the name of the --listen/--to proxy: "
                             "rename it, or leave out --listen/--to",
                             i + 1, name));
  }
  return {};
}

// The config's proxies, checked and started; a message naming the file and
// the exit status when they cannot be.
int load_config(ChaosRegistry& registry, const nlohmann::json& config, const std::string& path) {
  auto loaded = registry.populate(config);
  if (loaded) return kExitOk;
  const Error& e = loaded.error();
  fmt::print(stderr, "tcpkit relay: --config {}: {}\n", path,
             e.context().empty() ? e.message() : e.context());
  // The file's own faults (a missing field, a name twice, an address that
  // does not resolve) are the user's input; a listen that fails is not.
  return e.code() == std::errc::invalid_argument ? kExitUsage : kExitFailure;
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
  nlohmann::json config = nlohmann::json::array();
  if (!flags.config.empty()) {
    auto read = read_config(flags.config);
    Result<void> usable = read ? Result<void>() : Result<void>(read.error());
    if (read && !flags.listen.empty()) usable = check_no_clash(*read, kFlagsProxy);
    if (!usable) {
      fmt::print(stderr, "tcpkit relay: --config {}: {}\n", flags.config, usable.error().context());
      return kExitUsage;
    }
    config = std::move(*read);
  }
  if (!flags.listen.empty()) {
    if (auto r = registry.add_flags_proxy(kFlagsProxy, std::move(base), flags.listen); !r) {
      fmt::print(stderr, "tcpkit relay: cannot listen: {}\n", r.error().context());
      return kExitFailure;
    }
  }
  if (!flags.config.empty()) {
    if (int status = load_config(registry, config, flags.config); status != kExitOk) return status;
  }
  RelayApiServer api(&loop, registry);
  auto stop_signals = watch_stop_signals(loop, [&] {
    api.stop([] {});
    registry.stop_all([&loop] { loop.quit(); });
  });
  if (!stop_signals) {
    fmt::print(stderr, "tcpkit relay: cannot start: {}\n", stop_signals.error().message());
    return kExitFailure;
  }
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
  loop.run();
  return kExitOk;
}

}  // namespace tcpkit::cli
