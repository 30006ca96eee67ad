// `tcpkit connect` without --send: an interactive session like nc. One
// wait (TcpStream::wait) watches stdin and the socket. What stdin gives is queued and sent
// without blocking, and stdin is read again only when the queue is empty, so
// a peer that stops reading slows the input down instead of deadlocking a
// session that must also keep printing what the peer sends. With --tls the
// stream encrypts; its ciphertext not yet sent counts as queued output.
// The peer's FIN ends only its direction: like nc -N, the session goes on
// sending stdin until it ends, then sends its own FIN and exits.
#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <utility>

#include "commands.h"
#include "connect/session.h"

namespace tcpkit::cli {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kReadSize = size_t{64} * 1024;

class InteractiveSession {
 public:
  InteractiveSession(TcpStream& stream, SessionContext& context)
      : stream_(stream), context_(context), buffer_(kReadSize) {}

  int run();

 private:
  std::chrono::milliseconds poll_timeout() const;
  bool output_queued() const { return !output_.empty() || stream_.has_pending_output(); }
  std::optional<int> on_socket_readable();
  std::optional<int> on_peer_finished();
  int connection_lost(std::error_code error) const;
  std::optional<int> on_stdin_readable();
  // Queues `text` for sending; with --line, whole lines only. An exit code
  // when a line is over --max-line.
  std::optional<int> queue_input(std::string_view text);
  int line_too_long() const;
  // Appends `text`, converted from UTF-8 to the session's encoding, to output_.
  void encode(std::string_view text);
  void queue_end_of_input();
  std::optional<int> flush_output();
  std::optional<int> finish_input();

  TcpStream& stream_;
  SessionContext& context_;
  std::vector<char> buffer_;
  // Encoded bytes the stream has not taken yet.
  std::string output_;
  // --line: stdin text after its last newline, sent once the line is whole.
  std::string partial_line_;
  bool stdin_open_ = true;
  bool input_finished_ = false;
  // The peer has sent its FIN: nothing more to read, stdin still to send.
  bool peer_finished_ = false;
  // The last wait found stdin readable too, not read yet.
  bool stdin_ready_ = false;
  // Set once stdin has ended and --wait is counting.
  std::optional<Clock::time_point> deadline_;
};

int InteractiveSession::run() {
  for (;;) {
    if (deadline_ && Clock::now() >= *deadline_) return kExitOk;
    const bool read_stdin = stdin_open_ && !output_queued();
    auto ready = stream_.wait(poll_timeout(), output_queued(), read_stdin ? STDIN_FILENO : -1);
    if (!ready) {
      report(fmt::format("poll: {}", reason_text(ready.error().code())));
      return kExitFailure;
    }
    // After the peer's FIN the stream is no longer watched for reading:
    // a hangup then is the peer resetting the connection.
    if (ready->hangup) return connection_lost(stream_.pending_error());
    // The socket first: what the peer said is printed before more input goes out.
    stdin_ready_ = ready->other;
    if (ready->readable) {
      if (auto code = on_socket_readable()) return *code;
    }
    if (ready->writable) {
      if (auto code = flush_output()) return *code;
    }
    if (std::exchange(stdin_ready_, false)) {
      if (auto code = on_stdin_readable()) return *code;
    }
  }
}

std::chrono::milliseconds InteractiveSession::poll_timeout() const {
  if (!deadline_) return TcpStream::kNoTimeout;
  auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline_ - Clock::now());
  return std::max(left, std::chrono::milliseconds(0));
}

std::optional<int> InteractiveSession::on_socket_readable() {
  auto n = stream_.recv(buffer_.data(), buffer_.size());
  if (!n && n.error() == std::errc::resource_unavailable_try_again) return std::nullopt;
  if (!n) {
    report(fmt::format("connection to {} lost: {}", stream_.peer_endpoint().to_string(),
                       reason_text(n.error().code())));
    return kExitFailure;
  }
  auto& printer = context_.printer;
  if (*n > 0) {
    if (printer.print({buffer_.data(), *n})) return std::nullopt;
    return stdout_failure(printer.stdout_error());
  }
  return on_peer_finished();
}

// The peer's FIN: it has said all it will say, but it may still be reading
// (a server that answers and then shuts down its side). Dropping the rest
// of piped stdin here would lose data silently, so it is still sent. A
// person at a terminal is talking to the server, not feeding it: the
// session ends there as it always did (a server that closed for good would
// otherwise leave them waiting at a prompt that goes nowhere).
std::optional<int> InteractiveSession::on_peer_finished() {
  auto& printer = context_.printer;
  // On a terminal the notice gets a line of its own; a pipe gets the bytes as sent.
  bool ok = printer.finish() && (!::isatty(STDOUT_FILENO) || printer.end_line());
  if (!ok) return stdout_failure(printer.stdout_error());
  // The same wait found stdin ready: its end may be there already (the
  // FIN and the end of piped input came together), which decides the notice.
  if (std::exchange(stdin_ready_, false)) {
    if (auto code = on_stdin_readable()) return *code;
  }
  if (input_finished_ || ::isatty(STDIN_FILENO)) {
    std::fputs("connection closed by peer\n", stderr);
    return kExitOk;
  }
  std::fputs("connection closed by peer for sending (FIN); still sending stdin until it ends\n",
             stderr);
  peer_finished_ = true;
  return std::nullopt;
}

// A hangup whose error a failed send already took reads as the reset it was.
int InteractiveSession::connection_lost(std::error_code error) const {
  if (!error) error = std::make_error_code(std::errc::connection_reset);
  report(fmt::format("connection to {} lost: {}", stream_.peer_endpoint().to_string(),
                     reason_text(error)));
  return kExitFailure;
}

std::optional<int> InteractiveSession::on_stdin_readable() {
  ssize_t n = ::read(STDIN_FILENO, buffer_.data(), buffer_.size());
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return std::nullopt;
  if (n < 0 && errno != EBADF) {
    report(fmt::format("cannot read stdin: {}",
                       reason_text(std::error_code(errno, std::generic_category()))));
    return kExitFailure;
  }
  // A closed stdin (EBADF, e.g. `<&-`) has nothing to send: the same as EOF.
  if (n <= 0) {
    stdin_open_ = false;
    queue_end_of_input();
  } else if (auto code = queue_input({buffer_.data(), static_cast<size_t>(n)})) {
    return code;
  }
  return flush_output();
}

std::optional<int> InteractiveSession::queue_input(std::string_view text) {
  if (!context_.options.line) {
    encode(text);
    return std::nullopt;
  }
  // Only the new bytes are scanned, so a long line costs linear time; each
  // line is checked against --max-line so the held part stays bounded.
  const size_t max_line = context_.options.max_line;
  size_t line_start = 0;  // in text; the line began in partial_line_
  size_t last_end = std::string_view::npos;
  for (size_t nl = text.find('\n'); nl != std::string_view::npos; nl = text.find('\n', nl + 1)) {
    size_t held = line_start == 0 ? partial_line_.size() : 0;
    if (held + line_length(text.substr(line_start), nl - line_start) > max_line) {
      return line_too_long();
    }
    line_start = nl + 1;
    last_end = nl;
  }
  if (last_end != std::string_view::npos) {
    partial_line_.append(text.substr(0, last_end + 1));
    encode(partial_line_);
    partial_line_.assign(text.substr(last_end + 1));
  } else {
    partial_line_.append(text);
  }
  if (line_length(partial_line_, partial_line_.size()) > max_line) return line_too_long();
  return std::nullopt;
}

// Holding a line of stdin that never ends would need unbounded memory.
int InteractiveSession::line_too_long() const {
  report(fmt::format("a line of stdin is over {} bytes (--max-line); it was not sent",
                     context_.options.max_line));
  return kExitFailure;
}

void InteractiveSession::encode(std::string_view text) {
  if (context_.encoder) {
    context_.encoder->feed(text, &output_);
    return;
  }
  output_.append(text);
}

void InteractiveSession::queue_end_of_input() {
  // The last line may lack its newline; --line promises every line ends with one.
  if (!partial_line_.empty()) {
    partial_line_ += '\n';
    encode(partial_line_);
    partial_line_.clear();
  }
  if (context_.encoder) context_.encoder->finish(&output_);
}

std::optional<int> InteractiveSession::flush_output() {
  auto failed = [this](const Error& error) {
    report(fmt::format("cannot send to {}: {}", stream_.peer_endpoint().to_string(),
                       reason_text(error.code())));
    return kExitFailure;
  };
  if (auto flushed = stream_.flush_pending(); !flushed) return failed(flushed.error());
  while (!output_.empty()) {
    auto n = stream_.send_some(output_);
    if (!n) return failed(n.error());
    if (*n == 0) return std::nullopt;  // the kernel is full: wait for POLLOUT
    output_.erase(0, *n);
  }
  if (stream_.has_pending_output()) return std::nullopt;
  if (!stdin_open_ && !input_finished_) return finish_input();
  return std::nullopt;
}

// Stdin has ended and every byte of it is with the kernel: send FIN (the
// half-close of nc -N; with TLS, close_notify first), then wait for the
// peer's last words.
std::optional<int> InteractiveSession::finish_input() {
  input_finished_ = true;
  if (context_.options.shutdown_after_eof) {
    if (auto shut = stream_.shutdown_write(); !shut) {
      report(fmt::format("cannot half-close the connection to {}: {}",
                         stream_.peer_endpoint().to_string(), reason_text(shut.error().code())));
      return kExitFailure;
    }
  }
  // The peer has finished too: nothing is left to wait for.
  if (peer_finished_) return kExitOk;
  if (!context_.wait) return std::nullopt;
  if (context_.wait->count() == 0) return kExitOk;
  deadline_ = Clock::now() + *context_.wait;
  return std::nullopt;
}

}  // namespace

int run_interactive_session(TcpStream& stream, SessionContext& context) {
  return InteractiveSession(stream, context).run();
}

}  // namespace tcpkit::cli
