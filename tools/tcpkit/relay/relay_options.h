// RelayOptions: what `tcpkit relay` was asked to do, as plain values
// (relay_cmd.cpp fills them from the flags; RelayApp and RelayPair read them).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/logger.h"
#include "tcpkit/cidr.h"
#include "tcpkit/endpoint.h"
#include "tcpkit/tls_context.h"

namespace tcpkit::cli {

// The faults the flags set (--delay, --jitter, --rate, --chunk,
// --reset-after, --close-after): with --api they belong to the proxy the
// flags make, not to those the API creates.
struct RelayFaults {
  std::chrono::milliseconds delay{0};
  std::chrono::milliseconds jitter{0};
  uint64_t rate = 0;  // bytes per second per direction; 0: unlimited
  size_t chunk = 0;   // largest write; 0: forward each read whole
  bool reset_after_set = false;
  uint64_t reset_after = 0;
  bool close_after_set = false;
  uint64_t close_after = 0;
};

struct RelayOptions {
  std::vector<Endpoint> listen;    // every address --listen named
  std::vector<Endpoint> upstream;  // every address --to named, tried in order
  std::string upstream_text;       // --to as typed, for the log
  RelayFaults faults;
  size_t max_conns = 0;  // 0: unlimited
  AccessList access;  // --allow / --deny; refused clients are closed before anything is forwarded
  int threads = 0;
  bool quiet = false;
  LogFormat log_format = LogFormat::text;
  unsigned unix_mode =
      0;  // --unix-mode: a Unix --listen socket file's permissions (0: the umask's)
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds drain_timeout{2000};
  // --idle-timeout: a side silent this long ends its pair (0: never).
  std::chrono::milliseconds idle_timeout{0};
  // --tls-handshake-timeout: a TLS side must finish its handshake in this.
  std::chrono::milliseconds handshake_timeout{10000};
  // --tls-cert/--tls-key: clients speak TLS to the relay (null: plain TCP).
  std::shared_ptr<const TlsContext> client_tls;
  // --to-tls: the relay speaks TLS to the upstream, verifying upstream_name.
  std::shared_ptr<const TlsContext> upstream_tls;
  std::string upstream_name;
  // --seed: every random choice of the faults (jitter, toxicity, slices)
  // replays from it; unset, each run differs.
  std::optional<uint64_t> seed;
};

}  // namespace tcpkit::cli
