// `tcpkit connect HOST PORT` (or `connect unix:PATH`): the tutorial's client.
// With --send it connects, sends each text and prints each reply, then
// closes; without it, it is an interactive session like nc, with text decoded
// from --encoding and a clear one-line reason when the connection cannot be
// made. --tls speaks TLS on the connection, verifying the server's
// certificate unless told not to.
#include <fmt/core.h>
#include <openssl/x509_vfy.h>

#include <charconv>
#include <chrono>
#include <csignal>
#include <memory>

#include "commands.h"
#include "common/cli_common.h"
#include "connect/session.h"
#include "tcpkit/endpoint.h"
#include "tcpkit/tls_context.h"
#include "tcpkit/tls_error.h"

namespace tcpkit::cli {
namespace {

constexpr const char* kWaitHelp =
    "seconds to wait for the peer. Interactive: after stdin ends, exit at the latest this long "
    "later (an error if the peer has not taken all of stdin by then); 0 exits as soon as stdin's "
    "data is sent; default: until the peer closes. With --send: the longest wait for each reply; "
    "0 sends without waiting; default: until the reply arrives or the peer closes";

constexpr const char* kIdleHelp =
    "end the session with an error (exit 1) once nothing has been sent or received for this "
    "many seconds: a peer that neither talks nor reads what is sent (ncat -i). With --send it "
    "bounds each send and each wait for a reply; 0 (the default): no limit, as serve's";

constexpr const char* kSendHelp =
    "send TEXT, print the reply, and after the last one close (repeatable, sent in order). "
    "A reply is what arrives until the peer is quiet for 0.3 s (with --line: one whole line); "
    "each reply printed is ended with a newline";

// "" and "@" name no socket: without this they reached the resolver as a
// host and failed at run time ("not an IPv4 or IPv6 address", exit 1).
bool missing_unix_path(std::string_view path) {
  return path.empty() || path == "@";
}

std::string validate_host(std::string& text) {
  if (text.empty()) {
    return "the host is empty: give a name (localhost), an IPv4 address or an IPv6 address";
  }
  if (Endpoint::names_unix_socket(text) &&
      missing_unix_path(std::string_view(text).substr(Endpoint::kUnixPrefix.size()))) {
    return fmt::format(
        "the socket path is missing in '{}': give unix:PATH (unix:@NAME for an abstract socket)",
        text);
  }
  return "";
}

std::string validate_unix_path(std::string& text) {
  if (!missing_unix_path(text)) return "";
  return "the socket path is missing: give --unix PATH (@NAME for an abstract socket)";
}

// --max-line: a whole number of bytes, 1 or more. CLI::PositiveNumber
// refused 0 with a range whose upper end was a 309-digit number.
std::string validate_max_line(std::string& text) {
  size_t value = 0;
  const char* end = text.data() + text.size();
  auto [stop, error] = std::from_chars(text.data(), end, value);
  if (text.empty() || stop != end ||
      (error != std::errc() && error != std::errc::result_out_of_range)) {
    return fmt::format("'{}' is not a whole number of bytes (give 1 or more)", text);
  }
  if (error == std::errc::result_out_of_range) return fmt::format("{} is too large", text);
  if (value == 0) return "must be at least 1";
  return "";
}

std::string validate_encoding(std::string& name) {
  // Both directions are used: replies are decoded, what is sent is encoded.
  auto decoder = Transcoder::open(name, "UTF-8");
  auto encoder = Transcoder::open("UTF-8", name);
  if (decoder && encoder) return "";
  return fmt::format(
      "unknown encoding '{}': give a name iconv knows, e.g. utf-8, gbk, big5 "
      "(list them with: iconv -l)",
      name);
}

bool is_utf8(const std::string& name) {
  return Transcoder::canonical_name(name) == "UTF-8";
}

// Why a --send text cannot go out as it is in --encoding, or "" (see
// encoding_error()); with more than one --send, "--send #2" says which.
// Checked before connecting, so that nothing is sent when any text is bad:
// a character the encoding lacks used to go out, silently, as the text of
// its escape ("\xF0\x9F...").
std::string send_encoding_error(const ConnectOptions& o) {
  for (size_t i = 0; i < o.sends.size(); ++i) {
    const std::string flag = o.sends.size() == 1 ? "--send" : fmt::format("--send #{}", i + 1);
    if (auto why = encoding_error(flag, o.sends[i], o.encoding, "a text"); !why.empty()) return why;
  }
  return "";
}

// What the user asked for: HOST, or unix:PATH for --unix PATH.
std::string target_text(const ConnectOptions& o) {
  return o.unix_path.empty() ? o.host : unix_address(o.unix_path);
}

std::string connect_reason(const Error& error, const ConnectOptions& o, uint16_t port) {
  const std::string port_arg = o.port_text.empty() ? target_text(o) : std::to_string(port);
  if (error == std::errc::connection_refused) {
    return fmt::format("connection refused — is a server running? (try: tcpkit port {})", port_arg);
  }
  if (error == std::errc::no_such_file_or_directory) {
    return fmt::format("no such socket file — is a server running? (try: tcpkit port {})",
                       port_arg);
  }
  if (error == std::errc::connection_reset) {
    // The handshake was done (a refusal is ECONNREFUSED), then the reset
    // came before the first byte: a server that turns clients away with
    // SO_LINGER 0, or a listener closed with this connection still queued.
    return "connection reset by peer — the server took the connection and reset it before a "
           "byte was exchanged (it may turn this client away, or have stopped listening)";
  }
  if (error == std::errc::timed_out) {
    return fmt::format(
        "timed out after {:g} s (no answer: the host may be down, or a firewall "
        "drops the packets)",
        o.timeout_s);
  }
  return reason_text(error.code());
}

// An earlier address's failure, without the hint that the last one gets.
std::string short_reason(const Error& error, const ConnectOptions& o) {
  if (error == std::errc::timed_out) return fmt::format("timed out after {:g} s", o.timeout_s);
  return reason_text(error.code());
}

// One address tried and why it failed.
struct Attempt {
  Endpoint address;
  Error error;
};

// "127.0.0.1:8888: connection refused — ..." for a literal (or unix:PATH);
// for a name, every address tried with its own failure, the last one's
// with its hint: "localhost:8888: [::1]:8888 connection refused; 127.0.0.1:8888
// connection refused — ...".
std::string failure_text(const ConnectOptions& o, uint16_t port,
                         const std::vector<Attempt>& attempts) {
  const Attempt& only = attempts.front();
  if (attempts.size() == 1 && (only.address.is_unix() || Endpoint::parse(o.host, port))) {
    return fmt::format("{}: {}", only.address.to_string(), connect_reason(only.error, o, port));
  }
  std::string host =
      o.host.find(':') != std::string::npos && o.host.front() != '[' ? "[" + o.host + "]" : o.host;
  std::string text = fmt::format("{}:{}: ", host, port);
  for (size_t i = 0; i < attempts.size(); ++i) {
    const bool last = i + 1 == attempts.size();
    text += fmt::format(
        "{}{} {}", i == 0 ? "" : "; ", attempts[i].address.to_string(),
        last ? connect_reason(attempts[i].error, o, port) : short_reason(attempts[i].error, o));
  }
  return text;
}

// Tries each address in the resolver's order, each with the whole
// --timeout, as nc -w does: a first address that drops the packets (a
// blackholed IPv6 route, say) must not use up the time of the next one,
// which may answer at once.
std::optional<TcpStream> connect_to(const ConnectOptions& o, uint16_t port) {
  auto addresses =
      o.port_text.empty() ? Endpoint::resolve(target_text(o)) : Endpoint::resolve(o.host, port);
  if (!addresses) {
    const auto& code = addresses.error().code();
    std::string why = code == Errc::name_not_found
                          ? "no such host (check the spelling, or give an IP address)"
                          : reason_text(code);
    report(fmt::format("cannot resolve '{}': {}", target_text(o), why));
    return std::nullopt;
  }
  std::vector<Attempt> attempts;
  for (const auto& address : *addresses) {
    auto stream = TcpStream::connect(address, to_millis(o.timeout_s));
    if (stream) return std::move(*stream);
    attempts.push_back({address, stream.error()});
  }
  report(fmt::format("cannot connect to {}", failure_text(o, port, attempts)));
  return std::nullopt;
}

// The name the certificate must carry: --sni, else HOST, "localhost" for a
// Unix socket (an address is checked against the certificate's IP entries
// and not sent as SNI).
std::string expected_name(const ConnectOptions& o) {
  return tls_server_name(o.host, o.sni);
}

// What to do about a failed handshake, after the reason.
std::string handshake_hint(const Error& error, const ConnectOptions& o) {
  constexpr const char* kNotTls = " — is the server speaking TLS on this port?";
  if (error.code().category() == tls_category())
    return is_plaintext_peer(error.code()) ? kNotTls : "";
  if (error.code().category() != tls_verify_category()) {
    if (error.code() == Errc::peer_closed || error.code() == std::errc::timed_out) return kNotTls;
    return "";
  }
  const int verdict = error.code().value();
  if (verdict == X509_V_ERR_HOSTNAME_MISMATCH || verdict == X509_V_ERR_IP_ADDRESS_MISMATCH) {
    return fmt::format(
        " — the certificate is not for '{}'; pass --sni NAME for the name it "
        "carries, or --insecure",
        expected_name(o));
  }
  if (verdict == X509_V_ERR_CERT_HAS_EXPIRED || verdict == X509_V_ERR_CERT_NOT_YET_VALID) {
    return " — check the certificate's dates and this machine's clock (--insecure skips the "
           "check)";
  }
  if (!o.tls_ca.empty()) {
    // Or the chain is cut: a server that leaves out its intermediate
    // certificates reads the same ("unable to get local issuer certificate").
    return fmt::format(
        " — no CA in {} signed it, or the server did not send its intermediate certificates; "
        "give the CA that did, or --insecure",
        o.tls_ca);
  }
  return " — pass --tls-ca FILE to trust it, or --insecure";
}

// Reads --tls-ca before any connection is made, so a wrong file is
// reported at once.
std::optional<TlsContext> make_tls_context(const ConnectOptions& o) {
  auto context = TlsContext::client({o.tls_ca, !o.insecure, expected_name(o)});
  if (context) return std::move(*context);
  report(fmt::format("{}: {}", context.error().context(), reason_text(context.error().code())));
  return std::nullopt;
}

// Runs the TLS handshake on the connected stream; reports and returns
// false when that fails.
bool start_tls(TcpStream& stream, const TlsContext& context, const ConnectOptions& o) {
  auto done = stream.start_tls(context, {}, to_millis(o.timeout_s));
  if (done) return true;
  const Error& error = done.error();
  report(fmt::format("TLS handshake with {} failed: {}{}", stream.peer_endpoint().to_string(),
                     reason_text(error.code()), handshake_hint(error, o)));
  return false;
}

int run_connect(const ConnectOptions& o) {
  // The program's own choice (DESIGN.md, decision 6): writing to a closed
  // stdout must be an EPIPE error to handle, not a signal that kills us.
  // Sockets never raise SIGPIPE anyway (MSG_NOSIGNAL).
  std::signal(SIGPIPE, SIG_IGN);

  // One target: HOST PORT, HOST = unix:PATH, or --unix PATH.
  const bool unix_target = !o.unix_path.empty() || Endpoint::names_unix_socket(o.host);
  if (!o.unix_path.empty() && !o.host.empty()) {
    fmt::print(stderr, "tcpkit connect: give HOST PORT or --unix PATH, not both\n");
    return kExitUsage;
  }
  if (unix_target != o.port_text.empty() || (o.host.empty() && o.unix_path.empty())) {
    fmt::print(stderr, "tcpkit connect: {}\n",
               unix_target
                   ? "a Unix socket has no PORT: give unix:PATH alone"
                   : "HOST and PORT are required (or a Unix socket: unix:PATH, --unix PATH)");
    return kExitUsage;
  }
  if (auto why = send_encoding_error(o); !why.empty()) {
    fmt::print(stderr, "tcpkit connect: {}\n", why);
    return kExitUsage;
  }
  // The validators have accepted the port and the encoding already.
  const uint16_t port = unix_target ? 0 : *Endpoint::parse_port(o.port_text);
  std::optional<Transcoder> decoder, encoder;
  if (!is_utf8(o.encoding)) {
    decoder.emplace(std::move(*Transcoder::open(o.encoding, "UTF-8")));
    encoder.emplace(std::move(*Transcoder::open("UTF-8", o.encoding)));
  }

  std::optional<TlsContext> tls_context;
  if (o.tls) {
    tls_context = make_tls_context(o);
    if (!tls_context) return kExitFailure;
  }
  auto stream = connect_to(o, port);
  if (!stream) return kExitFailure;
  if (tls_context && !start_tls(*stream, *tls_context, o)) return kExitFailure;

  ReplyPrinter printer(std::move(decoder), o.hex);
  SessionContext context{o, printer, std::move(encoder), std::nullopt, std::nullopt};
  if (o.wait_s >= 0) context.wait = to_millis(o.wait_s);
  if (o.idle_timeout_s > 0) context.idle = to_millis(o.idle_timeout_s);
  int code = o.sends.empty() ? run_interactive_session(*stream, context)
                             : run_send_session(*stream, context);
  // What we sent may still be in the kernel (--wait 0 ends at once), and a
  // close() with unread bytes from the peer is a reset that drops it: half-
  // close, and read on until the peer has acknowledged it all.
  if (code == kExitOk) {
    if (auto finished = stream->finish_sending(to_millis(o.timeout_s)); !finished) {
      const auto& error = finished.error().code();
      report(fmt::format(
          "{} did not take all that was sent: {}", stream->peer_endpoint().to_string(),
          error == std::errc::timed_out
              ? fmt::format("still unacknowledged after {:g} s (--timeout)", o.timeout_s)
              : reason_text(error)));
      code = kExitFailure;
    }
  }
  stream->close();
  return code;
}

}  // namespace

Command add_connect_command(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "connect", "Connect to a TCP server: send texts and print replies, or talk like nc");
  auto o = std::make_shared<ConnectOptions>();
  sub->add_option(
         "HOST", o->host,
         "host name, IPv4 or IPv6 address (brackets optional), or a Unix socket: unix:PATH "
         "(unix:@NAME for an abstract one), then no PORT")
      ->check(CLI::Validator(validate_host, "HOST", "host"));
  sub->add_option("PORT", o->port_text, "port number, 1 to 65535")->check(port_to_connect_to());
  add_unix_flag(*sub, o->unix_path, "connect to this Unix-domain socket instead of HOST PORT")
      ->check(CLI::Validator(validate_unix_path, "PATH", "unix path"));
  sub->add_option("--send", o->sends, kSendHelp)
      ->type_name("TEXT")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  sub->add_option("--encoding", o->encoding,
                  "text encoding on the wire (any iconv name: utf-8, gbk, big5, ...): replies "
                  "are shown as UTF-8 and what is sent is converted from UTF-8")
      ->type_name("NAME")
      ->capture_default_str()
      ->check(CLI::Validator(validate_encoding, "NAME", "encoding"));
  sub->add_option("--timeout", o->timeout_s,
                  "seconds to wait for the connection to be made, for each address a name has "
                  "(tried in turn, as nc -w does), and for the TLS handshake")
      ->type_name("SECS")
      ->capture_default_str()
      ->check(seconds(0.001));
  sub->add_option("--wait", o->wait_s, kWaitHelp)->type_name("SECS")->check(seconds(0));
  sub->add_option("-i,--idle-timeout", o->idle_timeout_s, kIdleHelp)
      ->type_name("SECS")
      ->check(seconds(0));
  sub->add_flag("--line", o->line,
                "line mode: append a newline to each --send text and wait for a whole line as "
                "its reply; interactively, send stdin a whole line at a time");
  sub->add_option("--max-line", o->max_line,
                  "with --line: the longest line in bytes, from the peer or from stdin; a longer "
                  "one ends the session with an error (memory stays bounded)")
      ->type_name("BYTES")
      ->capture_default_str()
      ->check(CLI::Validator(validate_max_line, "BYTES", "max line"));
  sub->add_flag("--hex", o->hex,
                "print what is received as a hex dump like hexdump -C (offset, bytes, ASCII), "
                "undecoded; each read starts a new row, so the rows show how the data arrived");
  auto* no_shutdown = sub->add_flag_callback(
      "--no-shutdown", [o] { o->shutdown_after_eof = false; },
      "interactive: keep our sending side open after stdin ends (no FIN); exit when the peer "
      "closes or --wait passes");
  sub->add_flag("-N", o->nc_shutdown,
                "interactive: send FIN (shutdown(SHUT_WR)) after stdin ends, as nc -N does; "
                "this is already the default, accepted for nc compatibility")
      ->excludes(no_shutdown);
  auto* tls = sub->add_flag(
      "--tls", o->tls,
      "speak TLS (1.2 or newer) on the connection; the server's certificate "
      "must be valid for HOST (or --sni) and signed by a trusted CA. A server's FIN without "
      "TLS close_notify is an error (exit 1): the stream may be cut short");
  auto* tls_ca = sub->add_option("--tls-ca", o->tls_ca,
                                 "with --tls: trust the CA certificates in this PEM file (e.g. a "
                                 "self-signed server's own certificate) instead of the system's")
                     ->type_name("FILE")
                     ->needs(tls);
  sub->add_flag("--insecure", o->insecure,
                "with --tls: accept any certificate for any name. Still encrypted, but anyone in "
                "the middle can read along: for testing only")
      ->needs(tls)
      ->excludes(tls_ca);
  sub->add_option("--sni", o->sni,
                  "with --tls: the server name to send (SNI) and to verify the certificate "
                  "against; default: HOST")
      ->type_name("NAME")
      ->needs(tls);
  return {sub, [o] { return run_connect(*o); }};
}

}  // namespace tcpkit::cli
