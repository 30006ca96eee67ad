#include "common/cli_common.h"

#include <signal.h>

#include <fmt/core.h>
#include <CLI/CLI.hpp>

#include <charconv>
#include <cmath>
#include <cstdlib>

#include "common/proc_net.h"
#include "common/text_escape.h"
#include "tcpkit/event_loop.h"
#include "tcpkit/tcp_listener.h"
#include "tcpkit/transcoder.h"

namespace tcpkit::cli {

std::string explain_bind_error(const Error& error, uint16_t port, std::string_view another_port,
                               std::string_view example) {
  std::string msg = error.message();
  if (error.code() == std::errc::address_in_use) {
    std::string holder = describe_port_holder(port);
    if (!holder.empty()) msg += fmt::format(" — {}", holder);
    msg += fmt::format(". Stop that server or pick {}; `tcpkit port {}` shows who uses it.",
                       another_port, port);
  } else if (error.code() == std::errc::permission_denied && port < 1024) {
    msg += fmt::format(
        ". Ports below 1024 are well-known ports (80 http, 22 ssh...) and need root or "
        "CAP_NET_BIND_SERVICE; use a port of 1024 or above, e.g. {}.",
        example);
  } else if (error.code() == std::errc::address_not_available) {
    msg += ". That address is not on this machine; use 127.0.0.1, 0.0.0.0 or ::.";
  }
  return msg;
}

std::string explain_unix_bind_error(const Error& error, const Endpoint& address) {
  std::string msg = error.message();
  if (error.code() == std::errc::address_in_use) {
    msg +=
        fmt::format(". Stop that server or pick another path; `tcpkit port {}` shows who uses it.",
                    address.to_string());
  } else if (error.code() == std::errc::permission_denied) {
    msg += ". The directory is not writable for you; pick a path in one that is, e.g. /tmp.";
  }
  return msg;
}

Result<void> replace_stale_sockets(const std::vector<Endpoint>& addresses, Logger& log) {
  for (const auto& address : addresses) {
    auto replaced = TcpListener::remove_stale_socket(address);
    if (!replaced) return replaced.error();
    if (!*replaced) continue;
    log.log(
        "stale-socket",
        fmt::format("replacing stale socket file {} (no server answers there; its server has gone)",
                    address.unix_path()),
        {Logger::str("address", address.to_string())});
  }
  return {};
}

CLI::Option* add_unix_flag(CLI::App& sub, std::string& path, const std::string& what) {
  // An empty path is refused here: left empty, --unix reads as not given,
  // and `serve --unix ''` served TCP on the default port instead.
  const auto validate = [](std::string& text) -> std::string {
    if (!text.empty() && text != "@") return "";
    return "the socket path is missing: give --unix PATH (@NAME for an abstract socket)";
  };
  return sub
      .add_option("--unix", path, what + " (the same as the address unix:PATH; @NAME: abstract)")
      ->type_name("PATH")
      ->check(CLI::Validator(validate, "PATH", "unix path"));
}

void add_io_backend_flag(CLI::App& sub, IoBackend& backend) {
  sub.add_option_function<std::string>(
         "--io-backend", [&backend](const std::string& name) { backend = *parse_io_backend(name); },
         "epoll | uring: how event loops wait for I/O (default: $TCPKIT_IO_BACKEND, else epoll; "
         "uring falls back to epoll where the kernel forbids it)")
      ->type_name("NAME")
      ->check(CLI::IsMember({"epoll", "uring"}));
}

void add_log_format_flag(CLI::App& sub, LogFormat& format) {
  sub.add_option_function<std::string>(
         "--log-format",
         [&format](const std::string& name) {
           format = name == "json" ? LogFormat::json : LogFormat::text;
         },
         "text | json")
      ->type_name("TEXT")
      ->check(CLI::IsMember({"text", "json"}))
      ->default_str("text");
}

void report_io_backend_fallback(std::string_view command, const EventLoop& loop) {
  const Error& why = loop.backend_fallback();
  if (!why.code()) return;
  fmt::print(stderr, "tcpkit {}: io_uring is unavailable ({}): using epoll\n", command,
             why.message());
}

void add_unix_mode_flag(CLI::App& sub, unsigned& mode) {
  sub.add_option_function<std::string>(
         "--unix-mode",
         [&mode](const std::string& text) {
           mode = static_cast<unsigned>(std::stoul(text, nullptr, 8));
         },
         "permissions of a Unix socket's file, octal (660: owner and group may connect)")
      ->type_name("MODE")
      ->check(CLI::Validator(
          [](std::string& text) {
            const bool octal = !text.empty() && text.size() <= 4 &&
                               text.find_first_not_of("01234567") == std::string::npos;
            return octal ? std::string() : "'" + text + "' is not an octal mode like 660 or 0600";
          },
          "MODE"));
}

std::string unix_address(const std::string& path) {
  return std::string(Endpoint::kUnixPrefix) + path;
}

std::string tls_server_name(std::string_view host, std::string_view flag) {
  if (!flag.empty()) return std::string(flag);
  if (Endpoint::names_unix_socket(host)) return "localhost";
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    return std::string(host.substr(1, host.size() - 2));
  }
  return std::string(host);
}

void block_stop_signals() {
  SignalSet::block({SIGINT, SIGTERM, SIGHUP});
}

namespace {
// Async-signal-safe: it only ends the process.
void exit_at_once(int signo) {
  std::_Exit(128 + signo);
}
}  // namespace

Result<std::unique_ptr<SignalSet>> watch_stop_signals(EventLoop& loop,
                                                      std::function<void()> on_stop) {
  return watch_stop_signals(loop, [on_stop = std::move(on_stop)](int) { on_stop(); });
}

Result<std::unique_ptr<SignalSet>> watch_stop_signals(EventLoop& loop,
                                                      std::function<void(int signo)> on_stop) {
  return SignalSet::create(&loop, {SIGINT, SIGTERM, SIGHUP},
                           [on_stop = std::move(on_stop), stopping = false](int signo) mutable {
                             // Both came before the loop read either.
                             if (stopping) exit_at_once(signo);
                             stopping = true;
                             // A handler, not the default action: as PID 1
                             // (a container's), a signal without a handler
                             // is ignored. Unblocked in this thread, a
                             // second signal runs it there, also while the
                             // loop is stuck; one already pending does now.
                             struct sigaction action {};
                             action.sa_handler = exit_at_once;
                             for (int stop : {SIGINT, SIGTERM, SIGHUP})
                               sigaction(stop, &action, nullptr);
                             SignalSet::unblock({SIGINT, SIGTERM, SIGHUP});
                             on_stop(signo);
                           });
}

CLI::Validator cidr_validator() {
  return CLI::Validator(
      [](std::string& text) {
        auto rule = Cidr::parse(text);
        return rule ? std::string() : rule.error().message();
      },
      "CIDR");
}

std::string listen_flags_conflict(const Endpoint& where, unsigned unix_mode,
                                  const AccessList& access, bool proxy_protocol) {
  if (unix_mode != 0 && (!where.is_unix() || where.is_abstract())) {
    return fmt::format("--unix-mode sets a Unix socket file's permissions; {} has no file",
                       where.to_string());
  }
  if (where.is_unix() && !access.empty() && !proxy_protocol) {
    return fmt::format(
        "--allow/--deny judge IP addresses; the clients of {} have none (use --unix-mode to say "
        "who may connect)",
        where.to_string());
  }
  return "";
}

CLI::Validator finite_number() {
  return CLI::Validator(
      [](std::string& text) {
        char* end = nullptr;
        const double value = std::strtod(text.c_str(), &end);
        if (end == text.c_str() || *end != '\0' || !std::isfinite(value))
          return fmt::format("'{}' is not a finite number", text);
        return std::string();
      },
      "");
}

CLI::Validator seconds(double min, double max) {
  return CLI::Validator(
      [min, max](std::string& text) {
        char* end = nullptr;
        const double value = std::strtod(text.c_str(), &end);
        if (end == text.c_str() || *end != '\0' || !std::isfinite(value))
          return fmt::format("'{}' is not a finite number of seconds", text);
        if (value < min || value > max)
          return fmt::format("{} is out of range (give {} to {} seconds)", text, min, max);
        // Timers count whole milliseconds: less than half of one would be
        // 0, which means "no time at all" or "no limit".
        if (value != 0 && value < 0.0005)
          return fmt::format(
              "{} is less than a millisecond, the timers' unit (give 0 or at "
              "least 0.001)",
              text);
        return std::string();
      },
      "");
}

CLI::Validator whole_number(uint64_t max) {
  return CLI::Validator(
      [max](std::string& text) {
        uint64_t value = 0;
        const char* end = text.data() + text.size();
        auto [stop, error] = std::from_chars(text.data(), end, value);
        if (text.empty() || stop != end ||
            (error != std::errc() && error != std::errc::result_out_of_range))
          return fmt::format("'{}' is not a whole number (give 0 to {})", text, max);
        if (error == std::errc::result_out_of_range || value > max)
          return fmt::format("{} is too large (give 0 to {})", text, max);
        return std::string();
      },
      "");
}

CLI::Validator port_to_connect_to() {
  return CLI::Validator(
      [](std::string& text) {
        auto port = Endpoint::parse_port(text);
        if (port && *port != 0) return std::string();
        return fmt::format("'{}' is not a port to connect to: give a whole number from 1 to 65535",
                           text);
      },
      "PORT", "port");
}

std::optional<UnsendableCharacter> find_unsendable(std::string_view text,
                                                   std::string_view encoding) {
  auto encoder = Transcoder::open("UTF-8", encoding);
  if (!encoder) return std::nullopt;
  size_t character = 1;
  for (size_t at = 0; at < text.size(); ++character) {
    const size_t length = utf8_character_length(text.substr(at));
    if (length == 0)
      return UnsendableCharacter{UnsendableCharacter::Kind::not_utf8, at, 1, character};
    encoder->feed(text.substr(at, length));
    encoder->finish();
    if (encoder->invalid_bytes() > 0)
      return UnsendableCharacter{UnsendableCharacter::Kind::no_form, at, length, character};
    at += length;
  }
  return std::nullopt;
}

std::string encoding_error(std::string_view flag, std::string_view text, std::string_view encoding,
                           std::string_view what) {
  const auto bad = find_unsendable(text, encoding);
  if (!bad) return "";
  if (bad->kind == UnsendableCharacter::Kind::not_utf8) {
    return fmt::format("{} is not UTF-8: byte {} is 0x{:02X}", flag, bad->offset + 1,
                       static_cast<unsigned char>(text[bad->offset]));
  }
  const std::string to = Transcoder::canonical_name(encoding);
  return fmt::format("{}: '{}' (character {}) has no form in {}; give {} {} can write", flag,
                     printable(text.substr(bad->offset, bad->length)), bad->character, to, what,
                     to);
}

void add_access_flags(CLI::App& sub, AccessList& access, const std::string& verb) {
  const CLI::Validator cidr_text = cidr_validator();
  sub.add_option_function<std::vector<std::string>>(
         "--allow",
         [&access](const std::vector<std::string>& rules) {
           for (const auto& text : rules) access.allow(*Cidr::parse(text));
         },
         verb +
             " only clients in this network (10.0.0.0/8, ::1, ...); repeatable; others are closed "
             "at once")
      ->check(cidr_text)
      ->delimiter(',');
  sub.add_option_function<std::vector<std::string>>(
         "--deny",
         [&access](const std::vector<std::string>& rules) {
           for (const auto& text : rules) access.deny(*Cidr::parse(text));
         },
         "refuse clients in this network; repeatable; wins over --allow")
      ->check(cidr_text)
      ->delimiter(',');
}

void add_tls_server_flags(CLI::App& sub, std::string& cert, std::string& key,
                          const std::string& what) {
  auto* cert_opt =
      sub.add_option("--tls-cert", cert, what + "; needs --tls-key")->check(CLI::ExistingFile);
  auto* key_opt = sub.add_option("--tls-key", key, "the PEM private key of --tls-cert")
                      ->check(CLI::ExistingFile);
  cert_opt->needs(key_opt);
  key_opt->needs(cert_opt);
}

void add_timeout_flags(CLI::App& sub, double& handshake_timeout_s, double& idle_timeout_s,
                       const std::string& whom) {
  sub.add_option("--tls-handshake-timeout", handshake_timeout_s,
                 "with TLS: seconds " + whom + " has to complete its TLS handshake")
      ->check(seconds(0.1, 3600))
      ->capture_default_str();
  sub.add_option(
         "--idle-timeout", idle_timeout_s,
         "close " + whom + " once no bytes moved either way for this many seconds (0: never)")
      ->check(seconds(0, kMaxSeconds));
}

std::chrono::milliseconds to_millis(double seconds) {
  return std::chrono::milliseconds(std::llround(seconds * 1000.0));
}

}  // namespace tcpkit::cli
