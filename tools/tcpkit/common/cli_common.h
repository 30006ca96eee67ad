// Helpers shared by the long-running commands (serve, relay): the message a
// user meets when bind() fails, a graceful stop on SIGINT/SIGTERM, and the
// flags they share (--allow/--deny, --tls-cert/--tls-key, --unix-mode), and
// the one spelling of a Unix-domain socket every command takes.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/logger.h"
#include "tcpkit/cidr.h"
#include "tcpkit/endpoint.h"
#include "tcpkit/io_backend.h"
#include "tcpkit/result.h"
#include "tcpkit/signal_set.h"

namespace CLI {
class App;
class Option;
class Validator;
}  // namespace CLI

namespace tcpkit {
class EventLoop;
}  // namespace tcpkit

namespace tcpkit::cli {

// What the user meets when bind() fails, with a way out. `another_port` and
// `example` name the command's own flag: "another --port", "--port 8888".
std::string explain_bind_error(const Error& error, uint16_t port,
                               std::string_view another_port = "another --port",
                               std::string_view example = "--port 8888");

// The same for a Unix socket path: names the live holder's pid and the way
// out, or says why a path that is not a socket is left alone.
std::string explain_unix_bind_error(const Error& error, const Endpoint& address);

// Before listening: replaces a stale socket file (left by a server that died)
// at each Unix address and logs that it did; a live server's path or a file
// that is not a socket is an error for explain_unix_bind_error.
Result<void> replace_stale_sockets(const std::vector<Endpoint>& addresses, Logger& log);

// The one spelling of a Unix-domain socket in an address argument:
// "unix:PATH", or "unix:@NAME" for a Linux abstract socket.
constexpr const char* kUnixAddressHelp = "unix:PATH (or unix:@NAME, abstract)";
// Adds --unix PATH: the Unix socket to use instead of a host and port.
CLI::Option* add_unix_flag(CLI::App& sub, std::string& path, const std::string& what);
// Adds --unix-mode MODE (octal, e.g. 660): the socket file's permissions.
void add_unix_mode_flag(CLI::App& sub, unsigned& mode);
// "unix:" + PATH for --unix PATH, so every command parses one spelling.
std::string unix_address(const std::string& path);

// The name a TLS client checks the server's certificate against, and sends
// as SNI unless it is an address: `flag` (--sni, --to-sni) when given, else
// `host` ("[::1]" without its brackets). A Unix socket's path is no host
// name (SNI carries DNS names only, RFC 6066): "localhost" stands for it.
// One rule for connect, bench and relay.
std::string tls_server_name(std::string_view host, std::string_view flag);

// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread. Call it before any thread
// starts, so that every thread inherits the mask and only the watcher below
// receives the signals.
void block_stop_signals();

// SIGINT, SIGTERM and SIGHUP (the terminal went away; blocked by
// block_stop_signals()) as events of `loop`,
// its owner thread calling: the first runs `on_stop` there. The signals are
// then unblocked in this thread, with a handler that exits (status 128 + the
// signal), so a second one ends the process at once, also while the loop is
// busy or stuck: the user does not want to wait for the drain.
Result<std::unique_ptr<SignalSet>> watch_stop_signals(EventLoop& loop,
                                                      std::function<void()> on_stop);
// The same, telling `on_stop` which signal it was.
Result<std::unique_ptr<SignalSet>> watch_stop_signals(EventLoop& loop,
                                                      std::function<void(int signo)> on_stop);

// Why --unix-mode or --allow/--deny cannot apply where a command listens
// (`where`), or "": --unix-mode needs a socket file (not a TCP port, not
// an abstract name), and rules on IP addresses would refuse every client
// of a Unix socket, unless a PROXY header (`proxy_protocol`) names each
// client's address.
std::string listen_flags_conflict(const Endpoint& where, unsigned unix_mode,
                                  const AccessList& access, bool proxy_protocol = false);

// Checks CIDR text ("10.0.0.0/8", "::1") while parsing, so bad text is a
// usage error (exit 2) that names it.
CLI::Validator cidr_validator();

// For a flag that takes a real number (seconds, a rate): refuses "nan",
// which passes every range check (each comparison with it is false), and
// "inf". Chained after the flag's range check.
CLI::Validator finite_number();

// For a flag in seconds: a finite number from `min` to `max`, and 0 or at
// least a millisecond (what timers count in), so that no value rounds to
// 0 ms or overflows a deadline. Messages are plain ("2e6 is out of range
// (give 0 to 1000000 seconds)").
constexpr double kMaxSeconds = 1e6;  // 11.6 days: the longest wait a flag takes
CLI::Validator seconds(double min, double max = kMaxSeconds);
// For a flag that counts (milliseconds, bytes, a seed): digits only, from
// 0 to `max`, so that "-1", "abc" and a number past `max` are usage errors
// that say which, instead of wrapping around or overflowing a later sum.
CLI::Validator whole_number(uint64_t max);
// For the PORT of a server to connect to (connect, bench): a whole number
// from 1 to 65535; 0, which only a listener may ask for, is refused too
// ("'0' is not a port to connect to: give a whole number from 1 to 65535").
CLI::Validator port_to_connect_to();

// The first character of `text`, taken as UTF-8, that cannot go out as it
// is in the wire `encoding`: a byte that does not start a whole UTF-8
// character (the start of one cut short included), or a character that has
// no form in `encoding` (an emoji in GBK), which the transcoder would send as
// the text of an escape.
struct UnsendableCharacter {
  enum class Kind { not_utf8, no_form };
  Kind kind;
  size_t offset;     // of its first byte in `text`
  size_t length;     // its bytes: 1 for a byte that is not UTF-8
  size_t character;  // which character of `text` it is, from 1
};
// nullopt when every character can go out, and for an encoding iconv does
// not know (nothing can be said of text in it).
std::optional<UnsendableCharacter> find_unsendable(std::string_view text,
                                                   std::string_view encoding);
// Why `text`, given on the command line for `flag` ("--reply", "--send #2"),
// cannot go out as it is in the wire `encoding`, or "": it is not UTF-8 (as
// the command line is taken to be), or one of its characters has no form in
// `encoding` (an emoji in GBK), which the transcoder would send as the text
// of an escape. `what` is what to give instead ("a reply"). An encoding
// iconv does not know gives "": the flag that names it says why.
std::string encoding_error(std::string_view flag, std::string_view text, std::string_view encoding,
                           std::string_view what);
// Adds --allow CIDR and --deny CIDR (repeatable, comma lists) filling
// `access`; `verb` says what the command does for allowed clients ("serve").
void add_access_flags(CLI::App& sub, AccessList& access, const std::string& verb);

// Adds --tls-cert FILE and --tls-key FILE (each needs the other, both must
// exist); `what` says what the certificate does for this command.
void add_tls_server_flags(CLI::App& sub, std::string& cert, std::string& key,
                          const std::string& what);
// Adds --tls-handshake-timeout SECONDS and --idle-timeout SECONDS, the
// connection's own timeouts (ConnectionOptions); `whom` names who is closed.
void add_timeout_flags(CLI::App& sub, double& handshake_timeout_s, double& idle_timeout_s,
                       const std::string& whom);
// Adds --io-backend epoll|uring, for the commands that run event loops
// (serve, relay, bench). Unset, the library's default applies: the
// environment's TCPKIT_IO_BACKEND, else epoll.
void add_io_backend_flag(CLI::App& sub, IoBackend& backend);
// --log-format text|json, spelled the same by every command that logs.
void add_log_format_flag(CLI::App& sub, LogFormat& format);
// The one log line for a loop that runs on epoll though io_uring was asked
// for (kernel too old, seccomp, kernel.io_uring_disabled), on stderr:
// "tcpkit serve: io_uring is unavailable (...): using epoll". Nothing
// otherwise.
void report_io_backend_fallback(std::string_view command, const EventLoop& loop);
// Seconds from a flag as the library's milliseconds.
std::chrono::milliseconds to_millis(double seconds);

}  // namespace tcpkit::cli
