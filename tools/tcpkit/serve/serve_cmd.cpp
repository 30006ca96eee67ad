// `tcpkit serve`: flags into ServeOptions, then ServeApp on the main loop.
// Errors a beginner meets get a message that explains and helps.
#include <fmt/core.h>

#include <array>
#include <map>
#include <optional>
#include <string_view>

#include "commands.h"
#include "common/cli_common.h"
#include "serve/chat_cluster.h"
#include "serve/serve_app.h"
#include "tcpkit/cidr.h"
#include "tcpkit/endpoint.h"
#include "tcpkit/event_loop.h"
#include "tcpkit/tls_context.h"
#include "tcpkit/transcoder.h"

namespace tcpkit::cli {
namespace {

constexpr const char* kServeHelp = R"(Serve TCP clients: the tutorial's server, grown up.

Modes:
  ack      log every message (time, peer, text) and reply --reply, the tutorial's server
  echo     return every byte unchanged (RFC 862)
  discard  drop every byte (RFC 863)
  chat     line-based chat room: every line goes to every other client (/nick NAME to rename)

Framing: TCP is a byte stream, not a message stream. One send() may arrive
in two recv()s and two sends in one. `raw` treats each read as a message,
exactly as the tutorial does, which is fine for typing by hand but wrong for
real protocols; `line` (one message per "\n") and `length` (a 4-byte
big-endian length, then the payload) keep message boundaries intact.

Chat flood control: each member's lines enter the room at --chat-rate lines
a second (default 20) after a burst of as many. A member that sends faster
is read more slowly: its lines wait, in order, and TCP slows it down; none
is dropped, and nobody else is dropped as a slow reader because of it.
Join and leave notices share one such budget for the room; past it they
are counted, and the counts go with the next notice.

The default host 127.0.0.1 serves this machine only; use --host 0.0.0.0 (IPv4)
or --host :: (IPv6) to serve every interface.

Unix-domain sockets: --unix PATH (or --host unix:PATH; unix:@NAME for a Linux
abstract socket) serves a socket file instead of a port, in every mode. A
stale file left by a server that died is replaced (and logged); a path a live
server holds, or one that is not a socket, is refused. --unix-mode 660 sets
the file's permissions; the file is removed when the server stops. Clients
are logged with their credentials, e.g. connect unix:/tmp/a.sock (pid 1234,
uid 0).)";

// --unix PATH, or --host unix:PATH; otherwise --host and --port.
Result<std::vector<Endpoint>> serve_addresses(const ServeOptions& options,
                                              const std::string& unix_path) {
  if (!unix_path.empty()) return Endpoint::resolve(unix_address(unix_path));
  if (Endpoint::names_unix_socket(options.host)) return Endpoint::resolve(options.host);
  return Endpoint::resolve(options.host, options.port);
}

// Why ack mode's --reply cannot go out as it is in --encoding, or "" (see
// encoding_error()).
std::string reply_encoding_error(const ServeOptions& options) {
  if (options.mode != ServeMode::ack) return "";
  return encoding_error("--reply", options.reply, options.encoding, "a reply");
}

int run_serve(const ServeOptions& options, const std::string& unix_path) {
  auto addresses = serve_addresses(options, unix_path);
  if (!addresses) {
    fmt::print(stderr, "tcpkit serve: bad {} '{}': {}\n", unix_path.empty() ? "--host" : "--unix",
               unix_path.empty() ? options.host : unix_path, addresses.error().message());
    return kExitUsage;
  }
  const Endpoint& where = addresses->front();
  if (auto why =
          listen_flags_conflict(where, options.unix_mode, options.access, options.proxy_protocol);
      !why.empty()) {
    fmt::print(stderr, "tcpkit serve: {}\n", why);
    return kExitUsage;
  }
  if (auto t = Transcoder::open(options.encoding, "utf-8"); !t) {
    fmt::print(
        stderr,
        "tcpkit serve: --encoding: {} (try utf-8, gbk, gb18030, big5; `iconv -l` lists all)\n",
        t.error().message());
    return kExitUsage;
  }
  // Lines are cut at 0x0A bytes before they are decoded; in UTF-16 that
  // byte is half of other characters, and its newline is two bytes.
  const bool reads_text = options.mode == ServeMode::ack || options.mode == ServeMode::chat;
  if (reads_text && options.framing == Framing::line &&
      !Transcoder::ascii_compatible(options.encoding)) {
    fmt::print(stderr,
               "tcpkit serve: --encoding {} does not write a newline as the one byte 0x0A, so its "
               "text cannot be cut into lines; {}\n",
               options.encoding,
               options.mode == ServeMode::chat
                   ? "chat needs an encoding that keeps ASCII as it is (utf-8, gbk, gb18030, big5)"
                   : "use --framing length or raw, or an encoding that keeps ASCII as it is");
    return kExitUsage;
  }
  // A member's line reaches members who never saw the lines before it, and
  // its escape bytes would be escaped as control characters: each line
  // would need to start and end in the initial state, which nothing enforces.
  if (options.mode == ServeMode::chat && Transcoder::has_shift_states(options.encoding)) {
    fmt::print(stderr,
               "tcpkit serve: --encoding {} switches character sets with escape or shift "
               "sequences, which chat cannot pass from one member to others; chat needs an "
               "encoding that keeps ASCII as it is (utf-8, gbk, gb18030, big5)\n",
               options.encoding);
    return kExitUsage;
  }
  if (auto why = reply_encoding_error(options); !why.empty()) {
    fmt::print(stderr, "tcpkit serve: {}\n", why);
    return kExitUsage;
  }
  std::vector<Endpoint> metrics_addresses;
  if (!options.metrics.empty()) {
    auto resolved = Endpoint::resolve(options.metrics);
    if (!resolved) {
      fmt::print(stderr,
                 "tcpkit serve: bad --metrics '{}': {} (expected HOST:PORT, e.g. 127.0.0.1:9100)\n",
                 options.metrics, resolved.error().message());
      return kExitUsage;
    }
    metrics_addresses = std::move(*resolved);
  }
  std::vector<Endpoint> redis;
  std::string redis_label;
  RedisAuth redis_auth_value;
  if (!options.cluster.empty()) {
    if (options.mode != ServeMode::chat) {
      fmt::print(
          stderr,
          "tcpkit serve: --cluster relays chat lines between instances; it needs --mode chat\n");
      return kExitUsage;
    }
    auto url = parse_redis_url(options.cluster);
    if (!url) {
      fmt::print(stderr, "tcpkit serve: bad {}\n", url.error().message());
      return kExitUsage;
    }
    auto resolved = Endpoint::resolve(url->first, url->second);
    if (!resolved) {
      fmt::print(stderr, "tcpkit serve: --cluster: cannot resolve '{}': {}\n", url->first,
                 resolved.error().message());
      return kExitUsage;
    }
    auto auth = redis_auth(options.cluster, options.cluster_auth_file);
    if (!auth) {
      fmt::print(stderr, "tcpkit serve: {}\n", auth.error().message());
      return kExitUsage;
    }
    redis_auth_value = std::move(*auth);
    redis = std::move(*resolved);
    const bool v6 = url->first.find(':') != std::string::npos;
    redis_label = v6 ? fmt::format("[{}]:{}", url->first, url->second)
                     : fmt::format("{}:{}", url->first, url->second);
  }
  // A PROXY header accepted from anyone lets any client claim any address,
  // so the two flags only make sense together. On a Unix socket file the
  // proxies are whoever its permissions (--unix-mode) let connect; an
  // abstract socket has no permissions, so anyone on the host could.
  if (options.proxy_protocol && where.is_unix()) {
    if (where.is_abstract()) {
      fmt::print(stderr,
                 "tcpkit serve: --proxy-protocol on {}: an abstract socket has no permissions, so "
                 "anyone on this host could claim any client address; serve a socket file "
                 "(--unix PATH) and let only the proxy in with --unix-mode\n",
                 where.to_string());
      return kExitUsage;
    }
    if (!options.trusted_proxies.empty()) {
      fmt::print(stderr,
                 "tcpkit serve: --trusted-proxy names IP networks; on the Unix socket {} the "
                 "trusted proxies are whoever the file's permissions let connect (--unix-mode)\n",
                 where.to_string());
      return kExitUsage;
    }
  } else if (options.proxy_protocol && options.trusted_proxies.empty()) {
    fmt::print(stderr,
               "tcpkit serve: --proxy-protocol needs --trusted-proxy CIDR (the load balancer's "
               "address, e.g. "
               "--trusted-proxy 127.0.0.1/32); a header from anyone else would let clients fake "
               "their address\n");
    return kExitUsage;
  }
  if (!options.proxy_protocol && !options.trusted_proxies.empty()) {
    fmt::print(stderr, "tcpkit serve: --trusted-proxy only applies with --proxy-protocol\n");
    return kExitUsage;
  }
  // Read before listening, so a wrong file is the one clear error and no
  // client ever meets a server that cannot finish a handshake.
  std::optional<TlsContext> tls;
  if (!options.tls_cert.empty()) {
    auto context = TlsContext::server(options.tls_cert, options.tls_key);
    if (!context) {
      fmt::print(stderr, "tcpkit serve: {}\n", context.error().message());
      return kExitFailure;
    }
    tls.emplace(std::move(*context));
  }
  block_stop_signals();

  auto main_loop = EventLoop::create(options.io_backend);
  if (!main_loop) {
    fmt::print(stderr, "tcpkit serve: cannot start: {}\n", main_loop.error().message());
    return kExitFailure;
  }
  report_io_backend_fallback("serve", **main_loop);
  EventLoop& loop = **main_loop;
  ServeApp app(&loop, options, std::move(tls));
  auto stop_signals = watch_stop_signals(loop, [&app] { app.begin_stop(); });
  if (!stop_signals) {
    fmt::print(stderr, "tcpkit serve: cannot start: {}\n", stop_signals.error().message());
    return kExitFailure;
  }
  Logger log(options.log_format);
  auto listening = replace_stale_sockets(*addresses, log);
  if (listening) listening = app.listen(*addresses);
  if (!listening) {
    const Endpoint& first = addresses->front();
    fmt::print(stderr, "tcpkit serve: cannot listen: {}\n",
               first.is_unix() ? explain_unix_bind_error(listening.error(), first)
                               : explain_bind_error(listening.error(), options.port));
    return kExitFailure;
  }
  if (auto r = app.listen_metrics(metrics_addresses); !r) {
    const uint16_t metrics_port = metrics_addresses.front().port();
    // This server holds that port itself: the other would blame its own pid.
    const bool ours = !where.is_unix() && metrics_port != 0 && where.port() == metrics_port;
    fmt::print(stderr, "tcpkit serve: cannot serve --metrics: {}\n",
               ours ? fmt::format("port {} is the one this server listens on for clients; give "
                                  "--metrics another port (e.g. --metrics 127.0.0.1:9100)",
                                  metrics_port)
                    : explain_bind_error(r.error(), metrics_port, "another --metrics port",
                                         "--metrics 127.0.0.1:9100"));
    return kExitFailure;
  }
  if (!redis.empty())
    app.join_cluster(std::move(redis_label), std::move(redis), std::move(redis_auth_value));
  if (auto r = app.start(); !r) {
    fmt::print(stderr, "tcpkit serve: cannot start: {}\n", r.error().message());
    return kExitFailure;
  }
  loop.run();
  return kExitOk;
}

}  // namespace

Command add_serve_command(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "serve", "Serve TCP clients: ack (the tutorial's server), echo, discard, chat");
  sub->description(kServeHelp);
  auto opts = std::make_shared<ServeOptions>();
  auto unix_path = std::make_shared<std::string>();
  // Names, not numbers: CLI11's enum transformers would also take "3" for chat.
  static const std::map<std::string, ServeMode> kModes{{"ack", ServeMode::ack},
                                                       {"echo", ServeMode::echo},
                                                       {"discard", ServeMode::discard},
                                                       {"chat", ServeMode::chat}};
  static const std::map<std::string, Framing> kFramings{
      {"raw", Framing::raw}, {"line", Framing::line}, {"length", Framing::length}};
  auto names =
      std::make_shared<std::array<std::string, 2>>(std::array<std::string, 2>{"ack", "raw"});

  auto* host =
      sub->add_option("--host", opts->host,
                      "address or name to listen on (0.0.0.0 or :: serve every interface), or "
                      "unix:PATH")
          ->capture_default_str();
  // Digits only: an empty --port (an unset $PORT) must not pick a free port.
  auto* port = sub->add_option("-p,--port", opts->port, "TCP port (0 picks a free one)")
                   ->check(whole_number(65535))
                   ->capture_default_str();
  add_unix_flag(*sub, *unix_path, "serve this Unix-domain socket instead of a TCP port")
      ->excludes(port)
      ->excludes(host);
  add_unix_mode_flag(*sub, opts->unix_mode);
  sub->add_option("-m,--mode", (*names)[0], "ack | echo | discard | chat")
      ->check(CLI::IsMember({"ack", "echo", "discard", "chat"}))
      ->capture_default_str();
  sub->add_option("--reply", opts->reply, "ack mode's reply text")->capture_default_str();
  auto* framing =
      sub->add_option("--framing", (*names)[1], "raw (each read is a message) | line | length")
          ->check(CLI::IsMember({"raw", "line", "length"}))
          ->capture_default_str();
  sub->add_option("--encoding", opts->encoding,
                  "text encoding on the wire: utf-8, gbk, gb18030, big5, ...")
      ->capture_default_str();
  sub->add_option("--max-message", opts->max_message,
                  "largest line or frame in bytes; larger closes that client")
      ->check(CLI::Range(size_t{1}, size_t{UINT32_MAX}).description("1 to 4294967295"))
      ->capture_default_str();
  auto* chat_rate =
      sub->add_option("--chat-rate", opts->chat_rate,
                      "chat mode's flood control: lines a second each member may send to the "
                      "room after a burst of as many (a line over 1 KiB counts one per started "
                      "KiB); later lines wait, and TCP slows the sender down. 0: no limit")
          ->check(whole_number(1000000))
          ->capture_default_str();
  sub->add_option("-t,--threads", opts->threads, "I/O threads (0: everything on one thread)")
      ->check(CLI::Range(0, 256))
      ->capture_default_str();
  sub->add_option("--max-conns", opts->max_conns,
                  "most clients at once (0: no limit); extra ones are closed")
      ->check(CLI::Range(0, 10000000))
      ->capture_default_str();
  sub->add_option("--high-water-mark", opts->high_water_mark,
                  "bytes queued for one client before it counts as slow")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_option("--drain-timeout", opts->drain_timeout_s,
                  "seconds to let clients finish on SIGINT/SIGTERM")
      ->check(seconds(0))
      ->capture_default_str();
  add_access_flags(*sub, opts->access, "serve");
  const CLI::Validator cidr_text = cidr_validator();
  sub->add_flag(
      "--proxy-protocol", opts->proxy_protocol,
      "every connection starts with a PROXY v1/v2 header (HAProxy send-proxy, AWS NLB); its client "
      "address is used in the log, --allow/--deny and chat names. On a Unix socket file, whoever "
      "its permissions let connect is trusted to send it");
  sub->add_option_function<std::vector<std::string>>(
         "--trusted-proxy",
         [opts](const std::vector<std::string>& nets) {
           for (const auto& text : nets) opts->trusted_proxies.push_back(*Cidr::parse(text));
         },
         "with --proxy-protocol on TCP: a network the load balancer connects from; repeatable; "
         "others "
         "are closed")
      ->check(cidr_text)
      ->delimiter(',');
  sub->add_option("--proxy-timeout", opts->proxy_timeout_s,
                  "seconds a trusted proxy has to send the whole PROXY header (the spec asks for "
                  "at least 3)")
      ->check(seconds(0.1, 3600))
      ->capture_default_str();
  add_tls_server_flags(
      *sub, opts->tls_cert, opts->tls_key,
      "serve TLS with this PEM certificate (chain). Message text is then never logged, only "
      "its size");
  add_timeout_flags(*sub, opts->tls_handshake_timeout_s, opts->idle_timeout_s, "a client");
  sub->add_option("--metrics", opts->metrics,
                  "HOST:PORT for HTTP: Prometheus metrics at /metrics, a live client list at /");
  sub->add_option(
      "--cluster", opts->cluster,
      "redis://[[USER]:PASSWORD@]HOST:PORT: chat mode relays lines through Redis pub/sub to other "
      "instances");
  sub->add_option(
         "--cluster-auth-file", opts->cluster_auth_file,
         "file whose first line is the Redis password (AUTH; or set TCPKIT_REDIS_PASSWORD): kept "
         "out of the command line, which ps shows to everyone")
      ->check(CLI::ExistingFile);
  add_io_backend_flag(*sub, opts->io_backend);
  sub->add_option("--busy-poll", opts->busy_poll_us,
                  "microseconds each I/O loop looks for events without sleeping before it sleeps: "
                  "clients that send at once are served without a wake-up, but the loop keeps its "
                  "core busy meanwhile; 0: sleep at once")
      ->check(CLI::Range(0, 1000000))
      ->capture_default_str();
  auto* splice = sub->add_option_function<std::string>(
                        "--splice",
                        [opts](const std::string& name) {
                          opts->splice = name == "always"  ? EchoSplice::always
                                         : name == "never" ? EchoSplice::never
                                                           : EchoSplice::remote;
                        },
                        "auto | always | never: whether echo mode moves a bulk client's bytes "
                        "through a pipe inside the kernel (splice) instead of copying them; auto: "
                        "for a client on another host, not for one on this host, whose own pages "
                        "the pipe would hand back to it (its sends then cost it more than the "
                        "echo saves)")
                     ->type_name("WHEN")
                     ->check(CLI::IsMember({"auto", "always", "never"}))
                     ->default_str("auto");
  sub->add_flag("--reuse-port", opts->reuse_port,
                "SO_REUSEPORT: several processes may serve this port");
  sub->add_flag("-q,--quiet", opts->quiet, "no per-connection log lines");
  add_log_format_flag(*sub, opts->log_format);
  return {sub, [opts, names, unix_path, port, framing, chat_rate, splice] {
            if (port->count() > 0 && Endpoint::names_unix_socket(opts->host)) {
              fmt::print(stderr, "tcpkit serve: --port does not apply to --host {}\n", opts->host);
              return kExitUsage;
            }
            opts->mode = kModes.at((*names)[0]);
            opts->framing = kFramings.at((*names)[1]);
            // Chat is made of lines; another framing asked for would be ignored.
            if (opts->mode == ServeMode::chat && framing->count() > 0 &&
                opts->framing != Framing::line) {
              fmt::print(stderr,
                         "tcpkit serve: --mode chat is line-based: --framing {} does not apply "
                         "(leave --framing out, or give --framing line)\n",
                         (*names)[1]);
              return kExitUsage;
            }
            if (opts->mode != ServeMode::chat && chat_rate->count() > 0) {
              fmt::print(stderr,
                         "tcpkit serve: --chat-rate paces the lines of chat members; it needs "
                         "--mode chat\n");
              return kExitUsage;
            }
            if (opts->mode != ServeMode::echo && splice->count() > 0) {
              fmt::print(stderr, "tcpkit serve: --splice is about echoing; it needs --mode echo\n");
              return kExitUsage;
            }
            if (opts->mode == ServeMode::chat) opts->framing = Framing::line;
            return run_serve(*opts, *unix_path);
          }};
}

}  // namespace tcpkit::cli
