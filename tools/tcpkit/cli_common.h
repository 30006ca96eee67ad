// Helpers shared by the long-running commands (serve, relay): the message a
// user meets when bind() fails, a graceful stop on SIGINT/SIGTERM, and the
// flags they share (--allow/--deny, --tls-cert/--tls-key).
#pragma once

#include <cstdint>
#include <functional>
#include <chrono>
#include <string>
#include <string_view>

#include "tcpkit/cidr.h"
#include "tcpkit/result.h"

namespace CLI {
class App;
class Validator;
}  // namespace CLI

namespace tcpkit::cli {

// What the user meets when bind() fails, with a way out. `another_port` and
// `example` name the command's own flag: "another --port", "--port 8888".
std::string explain_bind_error(const Error& error, uint16_t port, std::string_view another_port = "another --port",
                               std::string_view example = "--port 8888");

// Blocks SIGINT and SIGTERM in the calling thread. Call it before any thread
// starts, so that every thread inherits the mask and only the watcher below
// receives the signals.
void block_stop_signals();

// Waits for SIGINT/SIGTERM on a thread of its own (the signals are blocked
// everywhere else), so no async-signal-unsafe code runs in a handler. The
// first signal runs `on_stop` (it should forward to a loop); a second one
// exits at once: the user does not want to wait for the drain.
void watch_stop_signals(std::function<void()> on_stop);

// Checks CIDR text ("10.0.0.0/8", "::1") while parsing, so bad text is a
// usage error (exit 2) that names it.
CLI::Validator cidr_validator();
// Adds --allow CIDR and --deny CIDR (repeatable, comma lists) filling
// `access`; `verb` says what the command does for allowed clients ("serve").
void add_access_flags(CLI::App& sub, AccessList& access, const std::string& verb);

// Adds --tls-cert FILE and --tls-key FILE (each needs the other, both must
// exist); `what` says what the certificate does for this command.
void add_tls_server_flags(CLI::App& sub, std::string& cert, std::string& key, const std::string& what);
// Adds --tls-handshake-timeout SECONDS and --idle-timeout SECONDS, the
// connection's own timeouts (ConnectionOptions); `whom` names who is closed.
void add_timeout_flags(CLI::App& sub, double& handshake_timeout_s, double& idle_timeout_s, const std::string& whom);
// Seconds from a flag as the library's milliseconds.
std::chrono::milliseconds to_millis(double seconds);

}  // namespace tcpkit::cli
