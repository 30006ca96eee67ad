// `tcpkit serve`: flags into ServeOptions, then ServeApp on the main loop.
// Errors a beginner meets get a message that explains and helps.
#include <fmt/core.h>

#include <array>
#include <map>

#include "cli_common.h"
#include "commands.h"
#include "serve_app.h"
#include "tcpkit/endpoint.h"
#include "tcpkit/event_loop.h"
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

The default host 127.0.0.1 serves this machine only; use --host 0.0.0.0 (IPv4)
or --host :: (IPv6) to serve every interface.)";

int run_serve(const ServeOptions& options) {
  auto addresses = Endpoint::resolve(options.host, options.port);
  if (!addresses) {
    fmt::print(stderr, "tcpkit serve: bad --host '{}': {}\n", options.host, addresses.error().message());
    return kExitUsage;
  }
  if (auto t = Transcoder::open(options.encoding, "utf-8"); !t) {
    fmt::print(stderr, "tcpkit serve: --encoding: {} (try utf-8, gbk, gb18030, big5; `iconv -l` lists all)\n",
               t.error().message());
    return kExitUsage;
  }
  block_stop_signals();

  EventLoop loop;
  ServeApp app(&loop, options);
  if (auto r = app.listen(*addresses); !r) {
    fmt::print(stderr, "tcpkit serve: cannot listen: {}\n", explain_bind_error(r.error(), options.port));
    return kExitFailure;
  }
  app.start();
  watch_stop_signals([&loop, &app] { loop.run_in_loop([&app] { app.begin_stop(); }); });
  loop.run();
  return kExitOk;
}

}  // namespace

Command add_serve_command(CLI::App& app) {
  auto* sub = app.add_subcommand("serve", "Serve TCP clients: ack (the tutorial's server), echo, discard, chat");
  sub->description(kServeHelp);
  auto opts = std::make_shared<ServeOptions>();
  // Names, not numbers: CLI11's enum transformers would also take "3" for chat.
  static const std::map<std::string, ServeMode> kModes{
      {"ack", ServeMode::ack}, {"echo", ServeMode::echo}, {"discard", ServeMode::discard}, {"chat", ServeMode::chat}};
  static const std::map<std::string, Framing> kFramings{
      {"raw", Framing::raw}, {"line", Framing::line}, {"length", Framing::length}};
  static const std::map<std::string, LogFormat> kLogFormats{{"text", LogFormat::text}, {"json", LogFormat::json}};
  auto names = std::make_shared<std::array<std::string, 3>>(std::array<std::string, 3>{"ack", "raw", "text"});

  sub->add_option("--host", opts->host, "address or name to listen on (0.0.0.0 or :: serve every interface)")
      ->capture_default_str();
  sub->add_option("-p,--port", opts->port, "TCP port (0 picks a free one)")->capture_default_str();
  sub->add_option("-m,--mode", (*names)[0], "ack | echo | discard | chat")
      ->check(CLI::IsMember({"ack", "echo", "discard", "chat"}))
      ->capture_default_str();
  sub->add_option("--reply", opts->reply, "ack mode's reply text")->capture_default_str();
  sub->add_option("--framing", (*names)[1], "raw (each read is a message) | line | length")
      ->check(CLI::IsMember({"raw", "line", "length"}))
      ->capture_default_str();
  sub->add_option("--encoding", opts->encoding, "text encoding on the wire: utf-8, gbk, gb18030, big5, ...")
      ->capture_default_str();
  sub->add_option("--max-message", opts->max_message, "largest line or frame in bytes; larger closes that client")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_option("-t,--threads", opts->threads, "I/O threads (0: everything on one thread)")
      ->check(CLI::Range(0, 256))
      ->capture_default_str();
  sub->add_option("--max-conns", opts->max_conns, "most clients at once (0: no limit); extra ones are closed")
      ->check(CLI::Range(0, 10000000))
      ->capture_default_str();
  sub->add_option("--idle-timeout", opts->idle_timeout_s, "close clients silent this many seconds (0: never)")
      ->check(CLI::Range(0.0, 1e6));
  sub->add_option("--high-water-mark", opts->high_water_mark, "bytes queued for one client before it counts as slow")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_option("--drain-timeout", opts->drain_timeout_s, "seconds to let clients finish on SIGINT/SIGTERM")
      ->check(CLI::Range(0.0, 1e6))
      ->capture_default_str();
  sub->add_flag("--reuse-port", opts->reuse_port, "SO_REUSEPORT: several processes may serve this port");
  sub->add_flag("-q,--quiet", opts->quiet, "no per-connection log lines");
  sub->add_option("--log-format", (*names)[2], "text | json")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  return {sub, [opts, names] {
            opts->mode = kModes.at((*names)[0]);
            opts->framing = kFramings.at((*names)[1]);
            opts->log_format = kLogFormats.at((*names)[2]);
            if (opts->mode == ServeMode::chat) opts->framing = Framing::line;
            return run_serve(*opts);
          }};
}

}  // namespace tcpkit::cli
