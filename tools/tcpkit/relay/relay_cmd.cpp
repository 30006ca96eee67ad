// `tcpkit relay`: flags into RelayOptions, then RelayApp on the main loop.
// A TCP port forwarder that can also misbehave on purpose (delay, jitter,
// rate limits, tiny writes, resets, early closes), for testing how clients
// and servers cope with a real network.
#include <fmt/core.h>

#include <map>
#include <optional>

#include "commands.h"
#include "common/cli_common.h"
#include "relay/relay_app.h"
#include "relay/relay_chaos.h"
#include "relay/toxic.h"
#include "tcpkit/endpoint.h"
#include "tcpkit/event_loop.h"
#include "tcpkit/tls_context.h"

namespace tcpkit::cli {
namespace {

constexpr const char* kRelayHelp = R"(Forward TCP connections, and inject faults on the way.

Every client accepted on --listen gets its own connection to --to; bytes flow
both ways unchanged, and a FIN from one side is passed on to the other after
its data (half-close works). When one side reads slowly, the relay stops
reading the other side instead of buffering without bound.

Without fault options it is a plain port forwarder. With them:
  --delay/--jitter  every read waits MS (+ 0..JITTER ms) before it is sent; order is kept
  --rate            at most BYTES_PER_SEC per direction
  --chunk           writes of at most BYTES, each its own send() (spaced by --delay)
  --reset-after     after BYTES through the pair (both directions), RST both sides
  --close-after     after BYTES through the pair, close both sides cleanly (FIN)

TLS on either side: --tls-cert/--tls-key make clients speak TLS to the relay
(a TLS terminator in front of a plain server); --to-tls makes the relay speak
TLS to --to, verifying its certificate against --to-ca (or the system's CAs)
and the name in --to (or --to-sni). Faults apply to the plaintext.

Either side may be a Unix-domain socket, written unix:PATH (unix:@NAME for a
Linux abstract socket): --listen unix:/tmp/a.sock --to 127.0.0.1:9000 puts a
TCP server behind a socket file, and --listen 127.0.0.1:9000 --to
unix:/run/app.sock reaches a Unix-only server over TCP. --unix-mode 660 sets
the listening socket file's permissions.

Chaos server: --api HOST:PORT serves toxiproxy's HTTP API (its default port
is 8474), so toxiproxy's client libraries create proxies and add or remove
toxics (latency, bandwidth, slow_close, timeout, reset_peer, slicer,
limit_data, and tcpkit's frame and unplug) on live connections. --config FILE
starts with the proxies of a toxiproxy -config file; --listen/--to, if given
too, become the proxy named "relay". --seed N replays every random choice.
See docs/chaos.md.)";

// The largest fault the flags take: the API's toxics' bound in ms (about 35
// years) and 2^62 bytes, so that no deadline or byte sum overflows.
constexpr uint64_t kMaxFaultMs = kMaxToxicCount;
constexpr uint64_t kMaxFaultBytes = uint64_t{1} << 62;

struct RelayFlags {
  std::string listen;
  std::string to;
  // Signed, as whole_number() keeps them under 2^62: no wrapping around.
  int64_t delay_ms = 0;
  int64_t jitter_ms = 0;
  int64_t rate = 0;
  int64_t chunk = 0;
  int64_t reset_after = 0;
  int64_t close_after = 0;
  int64_t max_conns = 0;
  AccessList access;
  int threads = 0;
  IoBackend io_backend = IoBackend::kDefault;
  bool quiet = false;
  LogFormat log_format = LogFormat::text;
  std::string tls_cert;
  std::string tls_key;
  bool to_tls = false;
  std::string to_ca;
  bool to_insecure = false;
  std::string to_sni;
  double tls_handshake_timeout_s = 10;
  double idle_timeout_s = 0;
  unsigned unix_mode = 0;
  std::string api;
  std::string config;
  uint64_t seed = 0;
  CLI::Option* seed_opt = nullptr;
  CLI::Option* reset_after_opt = nullptr;
  CLI::Option* close_after_opt = nullptr;
};

// "127.0.0.1:8080", "localhost:8080" or "unix:/tmp/a.sock" into addresses,
// or a message that says what to type instead; `flag` names the option in it.
std::optional<std::vector<Endpoint>> resolve_flag(const std::string& text, const char* flag,
                                                  bool allow_port_zero, std::string* why) {
  if (Endpoint::names_unix_socket(text)) {
    auto unix_socket = Endpoint::resolve(text);
    if (unix_socket) return std::move(*unix_socket);
    *why = fmt::format("{}: {}", flag, unix_socket.error().message());
    return std::nullopt;
  }
  auto split = Endpoint::split_host_port(text);
  if (!split) {
    *why =
        fmt::format("{} '{}': {} (give HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080, or unix:PATH)",
                    flag, text, split.error().message());
    return std::nullopt;
  }
  if (split->second == 0 && !allow_port_zero) {
    *why = fmt::format("{} '{}': port 0 cannot be connected to; give a port from 1 to 65535", flag,
                       text);
    return std::nullopt;
  }
  auto addresses = Endpoint::resolve(split->first, split->second);
  if (!addresses) {
    *why = fmt::format("{} '{}': {}", flag, text, addresses.error().message());
    return std::nullopt;
  }
  return std::move(*addresses);
}

int run_relay(const RelayFlags& f) {
  RelayOptions o;
  std::string why;
  const bool chaos = !f.api.empty() || !f.config.empty();
  if (!chaos && (f.listen.empty() || f.to.empty())) {
    fmt::print(stderr, "tcpkit relay: give --listen and --to, or --api / --config\n");
    return kExitUsage;
  }
  // The chaos server may start with no proxy: then --listen/--to are absent.
  const bool flags_proxy = !f.listen.empty() || !f.to.empty();
  if (flags_proxy && (f.listen.empty() || f.to.empty())) {
    fmt::print(stderr, "tcpkit relay: give both --listen and --to (or neither, with --api)\n");
    return kExitUsage;
  }
  auto listen = !flags_proxy
                    ? std::optional<std::vector<Endpoint>>(std::vector<Endpoint>{Endpoint()})
                    : resolve_flag(f.listen, "--listen", true, &why);
  auto upstream = !flags_proxy ? listen
                  : listen     ? resolve_flag(f.to, "--to", false, &why)
                               : std::nullopt;
  if (!listen || !upstream) {
    fmt::print(stderr, "tcpkit relay: {}\n", why);
    return kExitUsage;
  }
  if (flags_proxy) {
    if (auto why = listen_flags_conflict(listen->front(), f.unix_mode, f.access); !why.empty()) {
      fmt::print(stderr, "tcpkit relay: {}\n", why);
      return kExitUsage;
    }
  }
  const uint16_t listen_port = listen->front().port();
  o.listen = std::move(*listen);
  o.upstream = std::move(*upstream);
  o.upstream_text = f.to;
  o.faults.delay = std::chrono::milliseconds(f.delay_ms);
  o.faults.jitter = std::chrono::milliseconds(f.jitter_ms);
  o.faults.rate = static_cast<uint64_t>(f.rate);
  o.faults.chunk = static_cast<size_t>(f.chunk);
  o.faults.reset_after_set = f.reset_after_opt->count() > 0;
  o.faults.reset_after = static_cast<uint64_t>(f.reset_after);
  o.faults.close_after_set = f.close_after_opt->count() > 0;
  o.faults.close_after = static_cast<uint64_t>(f.close_after);
  o.max_conns = static_cast<size_t>(f.max_conns);
  o.access = f.access;
  o.threads = f.threads;
  o.quiet = f.quiet;
  o.log_format = f.log_format;
  o.handshake_timeout = to_millis(f.tls_handshake_timeout_s);
  o.idle_timeout = to_millis(f.idle_timeout_s);
  o.unix_mode = f.unix_mode;
  if (f.seed_opt->count() > 0) o.seed = f.seed;
  // Certificates and CAs are read now, so a wrong file is the one clear
  // error and no client meets a relay that cannot finish a handshake.
  if (!f.tls_cert.empty()) {
    auto context = TlsContext::server(f.tls_cert, f.tls_key);
    if (!context) {
      fmt::print(stderr, "tcpkit relay: {}\n", context.error().message());
      return kExitFailure;
    }
    o.client_tls = std::make_shared<const TlsContext>(std::move(*context));
  }
  if (f.to_tls) {
    const std::string host =
        Endpoint::names_unix_socket(f.to) ? f.to : Endpoint::split_host_port(f.to)->first;
    o.upstream_name = tls_server_name(host, f.to_sni);
    auto context = TlsContext::client({f.to_ca, !f.to_insecure, o.upstream_name});
    if (!context) {
      fmt::print(stderr, "tcpkit relay: --to-ca: {}\n", context.error().message());
      return kExitFailure;
    }
    o.upstream_tls = std::make_shared<const TlsContext>(std::move(*context));
  }

  if (chaos) {
    return run_chaos_relay(std::move(o),
                           {f.api, f.config, flags_proxy ? f.listen : "", f.io_backend});
  }

  block_stop_signals();
  auto main_loop = EventLoop::create(f.io_backend);
  if (!main_loop) {
    fmt::print(stderr, "tcpkit relay: cannot start: {}\n", main_loop.error().message());
    return kExitFailure;
  }
  report_io_backend_fallback("relay", **main_loop);
  EventLoop& loop = **main_loop;
  Logger log(o.log_format);
  auto listening = replace_stale_sockets(o.listen, log);
  const Endpoint first = o.listen.front();
  RelayApp app(&loop, std::move(o));
  auto stop_signals = watch_stop_signals(loop, [&app] { app.begin_stop(); });
  if (!stop_signals) {
    fmt::print(stderr, "tcpkit relay: cannot start: {}\n", stop_signals.error().message());
    return kExitFailure;
  }
  if (listening) listening = app.listen();
  if (!listening) {
    fmt::print(stderr, "tcpkit relay: cannot listen: {}\n",
               first.is_unix()
                   ? explain_unix_bind_error(listening.error(), first)
                   : explain_bind_error(listening.error(), listen_port, "another port for --listen",
                                        "--listen 127.0.0.1:8888"));
    return kExitFailure;
  }
  if (auto r = app.start(); !r) {
    fmt::print(stderr, "tcpkit relay: cannot start: {}\n", r.error().message());
    return kExitFailure;
  }
  loop.run();
  return kExitOk;
}

}  // namespace

Command add_relay_command(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "relay", "Forward TCP connections, optionally injecting delay, rate limits and faults");
  sub->description(kRelayHelp);
  auto f = std::make_shared<RelayFlags>();
  sub->add_option("--listen", f->listen,
                  "HOST:PORT to accept clients on (port 0 picks a free one), or unix:PATH");
  sub->add_option("--to", f->to, "HOST:PORT (or unix:PATH) to forward every connection to");
  add_unix_mode_flag(*sub, f->unix_mode);
  sub->add_option("--api", f->api,
                  "serve toxiproxy's HTTP API on HOST:PORT (toxiproxy's is 127.0.0.1:8474)");
  sub->add_option("--config", f->config, "start with the proxies in this toxiproxy JSON file")
      ->check(CLI::ExistingFile);
  f->seed_opt =
      sub->add_option("--seed", f->seed, "seed every random fault choice, to replay a run")
          ->check(whole_number(UINT64_MAX));
  sub->add_option("--delay", f->delay_ms, "delay every chunk by MS milliseconds")
      ->check(whole_number(kMaxFaultMs));
  sub->add_option("--jitter", f->jitter_ms, "add a uniform random 0..MS milliseconds to each delay")
      ->check(whole_number(kMaxFaultMs));
  sub->add_option("--rate", f->rate, "at most BYTES_PER_SEC per direction (0: unlimited)")
      ->check(whole_number(kMaxFaultBytes));
  sub->add_option("--chunk", f->chunk, "split data into writes of at most BYTES (0: as read)")
      ->check(whole_number(kMaxFaultBytes));
  f->reset_after_opt = sub->add_option("--reset-after", f->reset_after,
                                       "reset (RST) both sides after BYTES through the pair")
                           ->check(whole_number(kMaxFaultBytes));
  f->close_after_opt = sub->add_option("--close-after", f->close_after,
                                       "close (FIN) both sides after BYTES through the pair")
                           ->check(whole_number(kMaxFaultBytes));
  sub->add_option("--max-conns", f->max_conns,
                  "most pairs at once (0: no limit); extra clients are closed")
      ->check(whole_number(10000000))
      ->capture_default_str();
  add_access_flags(*sub, f->access, "relay");
  sub->add_option("--threads", f->threads, "I/O threads (0: everything on one thread)")
      ->check(CLI::Range(0, 256))
      ->capture_default_str();
  add_tls_server_flags(
      *sub, f->tls_cert, f->tls_key,
      "clients speak TLS to the relay, which presents this PEM certificate (chain)");
  auto* to_tls =
      sub->add_flag("--to-tls", f->to_tls, "speak TLS to --to, verifying its certificate");
  auto* to_ca =
      sub->add_option("--to-ca", f->to_ca,
                      "with --to-tls: trust the CA certificates in this PEM file (default: the "
                      "system's)")
          ->check(CLI::ExistingFile)
          ->needs(to_tls);
  sub->add_flag(
         "--to-insecure", f->to_insecure,
         "with --to-tls: accept any certificate for any name (encrypted, but not authenticated)")
      ->needs(to_tls)
      ->excludes(to_ca);
  sub->add_option("--to-sni", f->to_sni,
                  "with --to-tls: the server name to send and verify (default: the host in --to)")
      ->needs(to_tls);
  add_timeout_flags(*sub, f->tls_handshake_timeout_s, f->idle_timeout_s, "each side of a pair");
  add_io_backend_flag(*sub, f->io_backend);
  sub->add_flag("-q,--quiet", f->quiet, "no per-connection log lines");
  add_log_format_flag(*sub, f->log_format);
  return {sub, [f] { return run_relay(*f); }};
}

}  // namespace tcpkit::cli
