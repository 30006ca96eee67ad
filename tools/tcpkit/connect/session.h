// The two ways `tcpkit connect` talks over a connected stream: the
// tutorial's client (--send: send each text, print each reply, close) and an
// interactive session like nc (stdin to the peer, the peer to stdout).
// Both run on the calling thread with blocking calls and waits; the command
// file connects (and runs the TLS handshake) first and hands over the stream.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "connect/reply_printer.h"
#include "tcpkit/tcp_stream.h"
#include "tcpkit/transcoder.h"

namespace tcpkit::cli {

struct ConnectOptions {
  std::string host;
  std::string port_text;  // empty for a Unix socket
  std::string unix_path;  // --unix PATH (HOST may also be unix:PATH)
  std::vector<std::string> sends;
  std::string encoding = "utf-8";
  double timeout_s = 10;
  // Negative: --wait was not given (wait until the peer closes / replies).
  double wait_s = -1;
  // 0: no --idle-timeout (a connection may be idle for ever).
  double idle_timeout_s = 0;
  bool line = false;
  // --line: the longest line (bytes before its newline) held while waiting
  // for the newline, from the peer and from stdin; a longer one ends the
  // session (DESIGN.md, decision 10: bounded memory). serve's --max-message default.
  size_t max_line = size_t{1024} * 1024;
  bool hex = false;
  bool shutdown_after_eof = true;  // --no-shutdown clears it
  bool nc_shutdown = false;        // -N: asks for the default, for nc users
  bool tls = false;
  std::string tls_ca;  // empty: the system's CAs
  bool insecure = false;
  std::string sni;  // empty: HOST
};

// What a session needs besides the stream: the printer for received bytes,
// an encoder for what is sent (none for UTF-8), and how long to wait.
struct SessionContext {
  const ConnectOptions& options;
  ReplyPrinter& printer;
  std::optional<Transcoder> encoder;
  // --wait as a duration; none when not given.
  std::optional<std::chrono::milliseconds> wait;
  // --idle-timeout as a duration; none when not given.
  std::optional<std::chrono::milliseconds> idle;
};

// The session ends with an error once nothing has been sent or received for
// --idle-timeout: the peer neither talks nor takes what we send.
int idle_timed_out(const TcpStream& stream, std::chrono::milliseconds idle);

// Sends each --send text in order and prints each reply; returns an exit code.
int run_send_session(TcpStream& stream, SessionContext& context);
// Copies stdin to the peer and the peer to stdout until both directions have
// ended (stdin's end, then our FIN; the peer's FIN, in either order) or --wait
// passes after stdin's end (an error while stdin is not all sent); returns an
// exit code.
int run_interactive_session(TcpStream& stream, SessionContext& context);

// "tcpkit connect: " + message + newline, on stderr.
void report(std::string_view message);
// An error code's text as it reads inside a sentence: "connection refused".
std::string reason_text(const std::error_code& code);
// The length of a line that ends (or, unfinished, stops) at `end` in `text`:
// the bytes before `end`, less a '\r' of a "\r\n" just before it.
size_t line_length(std::string_view text, size_t end);

// The exit code for a failed stdout: quiet success when the reader went
// away (EPIPE: `| head -1` took what it wanted), a message otherwise.
int stdout_failure(int error);

}  // namespace tcpkit::cli
