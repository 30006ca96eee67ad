// `tcpkit relay --api / --config`: the relay as a chaos server with named
// proxies and toxics (ChaosRegistry) driven over toxiproxy's HTTP API
// (RelayApiServer). relay_cmd.cpp parses the flags and calls this.
#pragma once

#include <string>

#include "relay/relay_options.h"
#include "tcpkit/io_backend.h"

namespace tcpkit::cli {

struct ChaosFlags {
  std::string api;     // HOST:PORT, or "" for no API
  std::string config;  // a toxiproxy -config file, or ""
  std::string listen;  // --listen as typed when --listen/--to make a proxy, else ""
  IoBackend io_backend = IoBackend::kDefault;  // --io-backend: every proxy's loops
};

// `base` holds every flag's value; with `flags.listen` set, its listen and
// upstream addresses make the proxy "relay". Runs until SIGINT/SIGTERM.
int run_chaos_relay(RelayOptions base, const ChaosFlags& flags);

}  // namespace tcpkit::cli
